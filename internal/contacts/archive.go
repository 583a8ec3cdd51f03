package contacts

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/klauspost/compress/zstd"

	"lifeline/internal/fault"
)

// An export object holds the whole vault at one revision. Its bytes
// (docs/contacts.md, "Export format") are:
//
//	header  32 bytes: "LLCV", version 1, flags (bit 0: encrypted), 2 zero
//	        bytes, key id (8 bytes, zero when plain), body length (uint64
//	        big-endian), plain length (uint64 big-endian)
//	body    zstd frame of the JSON document; when encrypted, a 12-byte nonce
//	        followed by AES-256-GCM of that frame with the header as
//	        additional data
//	trailer SHA-256 of header and body (32 bytes)
//
// The trailer lets anyone check an object without the key; GCM proves the
// content to whoever holds it.

// ArchiveVersion is the export format version this package writes and reads.
const ArchiveVersion = 1

const (
	archiveMagic  = "LLCV"
	headerLen     = 32
	trailerLen    = 32
	flagEncrypted = 1
	// MaxArchivePlain caps the decompressed size of an export (the JSON
	// document) a reader accepts: far above any real vault, far below what
	// would exhaust memory.
	MaxArchivePlain = 1 << 30
)

// The archive sentinel errors; test with errors.Is. Each is a fault.Invalid
// error: a damaged or unreadable export is bad input that changes nothing.
var (
	ErrCorrupt = &fault.Error{Code: fault.Invalid, Msg: "contacts export is corrupt",
		Hint: "restore from an older export: `lifeline contacts restore --list`, then --from KEY"}
	ErrVersion = &fault.Error{Code: fault.Invalid, Msg: "contacts export has a format version this Lifeline cannot read",
		Hint: "restore with the Lifeline version that wrote it, or a newer one"}
	ErrKey = &fault.Error{Code: fault.Invalid, Msg: "contacts export is encrypted with another key, or no key is configured",
		Hint: "configure the repository key it was written with (encryption: in lifeline.yaml)"}
)

// dump is the export document: every table of the vault, row for row.
type dump struct {
	Format     string       `json:"format"` // "lifeline-contacts-vault"
	Version    int          `json:"version"`
	VaultID    string       `json:"vault_id"`
	Revision   int64        `json:"revision"`
	ExportedAt time.Time    `json:"exported_at"`
	Accounts   []accountRow `json:"accounts"`
	Tenants    []tenantRow  `json:"tenants"`
	Contacts   []contactRow `json:"contacts"`
	Aliases    []aliasRow   `json:"aliases"`
	Links      []linkRow    `json:"links"`
	History    []historyRow `json:"history"`
	Erased     []erasedRow  `json:"erased"`
}

const dumpFormat = "lifeline-contacts-vault"

// keyID names a key without revealing it, so a reader can tell "wrong key"
// from "corrupt".
func keyID(key []byte) [8]byte {
	var id [8]byte
	if key == nil {
		return id
	}
	h := sha256.Sum256(append([]byte("lifeline contacts key id\x00"), key...))
	copy(id[:], h[:8])
	return id
}

// encodeArchive writes d as an export object, encrypted when key is set.
func encodeArchive(d *dump, key []byte) ([]byte, error) {
	plain, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	body := enc.EncodeAll(plain, nil)
	_ = enc.Close()

	header := make([]byte, headerLen)
	copy(header, archiveMagic)
	header[4] = ArchiveVersion
	id := keyID(key)
	copy(header[8:16], id[:])
	binary.BigEndian.PutUint64(header[24:32], uint64(len(plain)))
	if key != nil {
		header[5] = flagEncrypted
		gcm, err := newGCM(key)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, gcm.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		sealedLen := len(nonce) + len(body) + gcm.Overhead()
		binary.BigEndian.PutUint64(header[16:24], uint64(sealedLen))
		body = gcm.Seal(nonce, nonce, body, header)
	} else {
		binary.BigEndian.PutUint64(header[16:24], uint64(len(body)))
	}
	out := make([]byte, 0, headerLen+len(body)+trailerLen)
	out = append(append(out, header...), body...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("contacts: export key: %w", err)
	}
	return cipher.NewGCM(block)
}

// decodeArchive reads an export object. It treats data as hostile: every
// length is checked before use, the decompressed size is capped by
// maxPlain, and every failure is an error wrapping ErrCorrupt, ErrVersion
// or ErrKey, never a panic.
func decodeArchive(data, key []byte, maxPlain int) (*dump, error) {
	corrupt := func(why string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(why, args...))
	}
	if len(data) < headerLen+trailerLen {
		return nil, corrupt("%d bytes is shorter than header and trailer", len(data))
	}
	header := data[:headerLen]
	if string(header[:4]) != archiveMagic {
		return nil, corrupt("not a contacts export (bad magic)")
	}
	if header[4] != ArchiveVersion {
		return nil, fmt.Errorf("%w: version %d", ErrVersion, header[4])
	}
	flags := header[5]
	if flags&^flagEncrypted != 0 || header[6] != 0 || header[7] != 0 {
		return nil, corrupt("unknown flags")
	}
	bodyLen := binary.BigEndian.Uint64(header[16:24])
	plainLen := binary.BigEndian.Uint64(header[24:32])
	if bodyLen != uint64(len(data)-headerLen-trailerLen) {
		return nil, corrupt("body length %d does not match the object", bodyLen)
	}
	sum := sha256.Sum256(data[:len(data)-trailerLen])
	if !bytes.Equal(sum[:], data[len(data)-trailerLen:]) {
		return nil, corrupt("checksum mismatch")
	}
	if plainLen > uint64(maxPlain) {
		return nil, corrupt("plain length %d exceeds the limit %d", plainLen, maxPlain)
	}
	body := data[headerLen : len(data)-trailerLen]
	if flags&flagEncrypted != 0 {
		if key == nil {
			return nil, fmt.Errorf("%w: the export is encrypted and no key is configured", ErrKey)
		}
		if id := keyID(key); !bytes.Equal(id[:], header[8:16]) {
			return nil, fmt.Errorf("%w: it was written with key %x, this key is %x", ErrKey, header[8:16], id[:])
		}
		gcm, err := newGCM(key)
		if err != nil {
			return nil, err
		}
		if len(body) < gcm.NonceSize()+gcm.Overhead() {
			return nil, corrupt("encrypted body too short")
		}
		nonce, sealed := body[:gcm.NonceSize()], body[gcm.NonceSize():]
		if body, err = gcm.Open(nil, nonce, sealed, header); err != nil {
			return nil, corrupt("authentication failed")
		}
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(plainLen+1), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	plain, err := dec.DecodeAll(body, make([]byte, 0, plainLen))
	if err != nil {
		return nil, corrupt("zstd: %v", err)
	}
	if uint64(len(plain)) != plainLen {
		return nil, corrupt("plain length %d, header says %d", len(plain), plainLen)
	}
	var d dump
	jd := json.NewDecoder(bytes.NewReader(plain))
	jd.DisallowUnknownFields()
	if err := jd.Decode(&d); err != nil {
		return nil, corrupt("document: %v", err)
	}
	if jd.More() {
		return nil, corrupt("trailing data after the document")
	}
	if err := d.check(); err != nil {
		return nil, corrupt("%v", err)
	}
	return &d, nil
}

// check verifies the document's own consistency, so a restore fails with a
// clear message before it writes anything.
func (d *dump) check() error {
	if d.Format != dumpFormat || d.Version != ArchiveVersion {
		return fmt.Errorf("document format %q version %d", d.Format, d.Version)
	}
	ids, keys := map[string]bool{}, map[string]bool{}
	for _, c := range d.Contacts {
		if c.ID == "" || ids[c.ID] || keys[c.EmailKey] {
			return fmt.Errorf("contact %q is empty or repeated", c.ID)
		}
		ids[c.ID], keys[c.EmailKey] = true, true
	}
	for _, l := range d.Links {
		if !ids[l.ContactID] {
			return fmt.Errorf("a link refers to unknown contact %q", l.ContactID)
		}
		if (l.Scope != scopeTenant && l.Scope != scopeAccount) || Role(l.Role).rank() == len(Roles) {
			return fmt.Errorf("a link of contact %q has scope %q and role %q", l.ContactID, l.Scope, l.Role)
		}
	}
	for _, a := range d.Aliases {
		if !ids[a.ContactID] {
			return fmt.Errorf("an alias refers to unknown contact %q", a.ContactID)
		}
	}
	seq := int64(0)
	for _, h := range d.History {
		if h.Seq <= seq {
			return errors.New("history is not in order")
		}
		seq = h.Seq
	}
	return nil
}
