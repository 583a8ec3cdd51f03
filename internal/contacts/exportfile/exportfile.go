// Package exportfile is the container of the contacts vault's export
// objects: a versioned header, a zstd-compressed payload that is sealed with
// AES-256-GCM when a key is configured, and a SHA-256 trailer. It knows
// nothing of what the payload says (package contacts puts a JSON document
// in it); it only guarantees that what comes out is exactly what went in.
// docs/contacts.md ("Export format") describes the bytes.
//
// It is its own package so that its decoder, which reads objects from the
// backup repository and must treat them as hostile, can be fuzzed without
// the database drivers of package contacts in the binary.
package exportfile

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zstd"

	"lifeline/internal/fault"
)

// Version is the container version this package writes and reads.
const Version = 1

// Layout:
//
//	header  32 bytes
//	  0  4  magic "LLCV"
//	  4  1  version (1)
//	  5  1  flags: bit 0 = encrypted; other bits zero
//	  6  2  zero
//	  8  8  key id: first 8 bytes of SHA-256("lifeline contacts key id\0" || key); zero when plain
//	 16  8  body length, uint64 big-endian
//	 24  8  payload length (uncompressed), uint64 big-endian
//	body    plain: one zstd frame of the payload
//	        encrypted: 12-byte nonce || AES-256-GCM(zstd frame), additional data = header
//	trailer 32 bytes: SHA-256 of header || body
const (
	Magic         = "LLCV"
	HeaderLen     = 32
	TrailerLen    = 32
	flagEncrypted = 1
	// MaxPayload caps the payload a reader accepts: far above any real
	// vault, far below what would exhaust memory.
	MaxPayload = 1 << 30
)

// The sentinel errors; test with errors.Is. Each is fault.Invalid: a
// damaged or unreadable export is bad input, and reading it changes nothing.
var (
	ErrCorrupt = &fault.Error{Code: fault.Invalid, Msg: "contacts export is corrupt",
		Hint: "restore from an older export: `lifeline contacts restore --list`, then --from KEY"}
	ErrVersion = &fault.Error{Code: fault.Invalid, Msg: "contacts export has a format version this Lifeline cannot read",
		Hint: "restore with the Lifeline version that wrote it, or a newer one"}
	ErrKey = &fault.Error{Code: fault.Invalid, Msg: "contacts export is encrypted with another key, or no key is configured",
		Hint: "configure the repository key it was written with (encryption: in lifeline.yaml)"}
)

// KeyID names a key without revealing it, so a reader can tell "wrong key"
// from "corrupt". A nil key has the zero id.
func KeyID(key []byte) [8]byte {
	var id [8]byte
	if key == nil {
		return id
	}
	h := sha256.Sum256(append([]byte("lifeline contacts key id\x00"), key...))
	copy(id[:], h[:8])
	return id
}

// Encode wraps payload into an export object, sealed when key (32 bytes)
// is not nil. A key of another length is an error.
func Encode(payload, key []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	body := enc.EncodeAll(payload, nil)
	_ = enc.Close()

	header := make([]byte, HeaderLen)
	copy(header, Magic)
	header[4] = Version
	id := KeyID(key)
	copy(header[8:16], id[:])
	binary.BigEndian.PutUint64(header[24:32], uint64(len(payload)))
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
		binary.BigEndian.PutUint64(header[16:24], uint64(len(nonce)+len(body)+gcm.Overhead()))
		body = gcm.Seal(nonce, nonce, body, header)
	} else {
		binary.BigEndian.PutUint64(header[16:24], uint64(len(body)))
	}
	out := make([]byte, 0, HeaderLen+len(body)+TrailerLen)
	out = append(append(out, header...), body...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("exportfile: key: %w", err)
	}
	return cipher.NewGCM(block)
}

// Decode checks an export object and returns its payload. It treats data as
// hostile: every length is checked before use, the payload may not exceed
// maxPayload, and every failure wraps ErrCorrupt, ErrVersion or ErrKey,
// never a panic. A plain object decodes whether or not a key is given.
func Decode(data, key []byte, maxPayload int) ([]byte, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	if len(data) < HeaderLen+TrailerLen {
		return nil, corrupt("%d bytes is shorter than header and trailer", len(data))
	}
	header := data[:HeaderLen]
	if string(header[:4]) != Magic {
		return nil, corrupt("not a contacts export (bad magic)")
	}
	if header[4] != Version {
		return nil, fmt.Errorf("%w: version %d", ErrVersion, header[4])
	}
	flags := header[5]
	if flags&^flagEncrypted != 0 || header[6] != 0 || header[7] != 0 {
		return nil, corrupt("unknown flags")
	}
	bodyLen := binary.BigEndian.Uint64(header[16:24])
	plainLen := binary.BigEndian.Uint64(header[24:32])
	if bodyLen != uint64(len(data)-HeaderLen-TrailerLen) {
		return nil, corrupt("body length %d does not match the object", bodyLen)
	}
	sum := sha256.Sum256(data[:len(data)-TrailerLen])
	if !bytes.Equal(sum[:], data[len(data)-TrailerLen:]) {
		return nil, corrupt("checksum mismatch")
	}
	if maxPayload < 0 || plainLen > uint64(maxPayload) {
		return nil, corrupt("payload length %d exceeds the limit %d", plainLen, maxPayload)
	}
	body := data[HeaderLen : len(data)-TrailerLen]
	if flags&flagEncrypted != 0 {
		if key == nil {
			return nil, fmt.Errorf("%w: the export is encrypted and no key is configured", ErrKey)
		}
		if id := KeyID(key); !bytes.Equal(id[:], header[8:16]) {
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
	} else if [8]byte(header[8:16]) != [8]byte{} {
		return nil, corrupt("a plain export with a key id")
	}
	// The output is capped at the declared length; the window may exceed
	// it for small payloads, so it gets a modest floor.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(max(plainLen+1, 8<<20)), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	plain, err := dec.DecodeAll(body, make([]byte, 0, plainLen))
	if err != nil {
		return nil, corrupt("zstd: %v", err)
	}
	if uint64(len(plain)) != plainLen {
		return nil, corrupt("payload length %d, header says %d", len(plain), plainLen)
	}
	return plain, nil
}
