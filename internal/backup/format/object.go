package format

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"lifeline/internal/change"
)

// Fixed sizes of the framing (docs/backup-format.md has the byte layouts).
const (
	footerSize = 48
	// header framing: magic(5) version(2) body length(4) ... CRC(4)
	headerFixed = 5 + 2 + 4 + 4
	// encryption schemes recorded in the header
	encNone      = 0
	encAES256GCM = 1
	// gcmNonceIndex is the nonce sequence number of the index; blocks use
	// their ordinal, which never reaches it.
	gcmNonceIndex = math.MaxUint64
	gcmTag        = 16
	// minRecord is the smallest encoded record: table, op, pos, tx, flags,
	// seconds, nanoseconds and one value kind, one byte each.
	minRecord = 8
	// minBlockEntry is the smallest encoded index entry of a block.
	minBlockEntry = 1 + 1 + 1 + 4 + 4 + 1 + 1 + 1 + 2 + 2
)

// sealing is what the header records about encryption, besides the key id.
type sealing struct {
	salt  [saltLen]byte     // makes the per-object block key unique
	check [keyCheckLen]byte // tells a wrong key from a corrupt block
}

// sealer seals and opens blocks with the per-object key.
type sealer struct{ aead cipher.AEAD }

// newSealer derives the object's AES-256-GCM key and its key check from
// the caller's key and the object's random salt, with HKDF-SHA256. A key
// per object means block nonces can simply count from zero.
func newSealer(key []byte, s *sealing) (*sealer, [keyCheckLen]byte, error) {
	var check [keyCheckLen]byte
	if len(key) != keyLen {
		return nil, check, fmt.Errorf("key is %d bytes, want %d", len(key), keyLen)
	}
	ok, err := hkdf.Key(sha256.New, key, s.salt[:], "lifeline backup format v1: object key", keyLen)
	if err != nil {
		return nil, check, err
	}
	ck, err := hkdf.Key(sha256.New, key, s.salt[:], "lifeline backup format v1: key check", keyCheckLen)
	if err != nil {
		return nil, check, err
	}
	copy(check[:], ck)
	block, err := aes.NewCipher(ok)
	if err != nil {
		return nil, check, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, check, err
	}
	return &sealer{aead: aead}, check, nil
}

func nonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

func (s *sealer) seal(dst, plain []byte, seq uint64, aad []byte) []byte {
	return s.aead.Seal(dst, nonce(seq), plain, aad)
}

func (s *sealer) open(sealed []byte, seq uint64, aad []byte) ([]byte, error) {
	return s.aead.Open(nil, nonce(seq), sealed, aad)
}

// openSealer checks the caller's key against the header and returns the
// sealer, or an ErrKey error.
func openSealer(h *Header, s *sealing, key []byte) (*sealer, error) {
	if len(key) == 0 {
		return nil, keyf("%s is encrypted with key id %q and no key was given", h.Kind, h.KeyID)
	}
	sl, check, err := newSealer(key, s)
	if err != nil {
		return nil, keyf("%s is encrypted with key id %q: %v", h.Kind, h.KeyID, err)
	}
	if subtle.ConstantTimeCompare(check[:], s.check[:]) != 1 {
		return nil, keyf("%s is encrypted with key id %q and the given key is not that key", h.Kind, h.KeyID)
	}
	return sl, nil
}

// validateTables checks shapes for both the writer and the header decoder.
func validateTables(tables []change.Table) error {
	seen := make(map[string]bool, len(tables))
	for i, t := range tables {
		if t.Name == "" || len(t.Name) > maxString {
			return fmt.Errorf("table %d: name is empty or too long", i)
		}
		if seen[t.Name] {
			return fmt.Errorf("table %q listed twice", t.Name)
		}
		seen[t.Name] = true
		if len(t.Columns) == 0 || len(t.Columns) > maxColumns {
			return fmt.Errorf("table %q: %d columns", t.Name, len(t.Columns))
		}
		for _, c := range t.Columns {
			if len(c.Name) > maxString || len(c.Type) > maxString {
				return fmt.Errorf("table %q: column name or type too long", t.Name)
			}
		}
		if t.Tenant < 0 || t.Tenant >= len(t.Columns) {
			return fmt.Errorf("table %q: tenant column %d out of range", t.Name, t.Tenant)
		}
		pk := make(map[int]bool, len(t.PrimaryKey))
		for _, k := range t.PrimaryKey {
			if k < 0 || k >= len(t.Columns) || pk[k] {
				return fmt.Errorf("table %q: primary key column %d out of range or repeated", t.Name, k)
			}
			pk[k] = true
		}
	}
	return nil
}

// validateHeader checks the kind-specific rules on positions and times.
func validateHeader(h *Header) error {
	if h.Product == "" || len(h.Product) > maxString {
		return fmt.Errorf("product name is empty or too long")
	}
	if len(h.KeyID) > maxString {
		return fmt.Errorf("key id too long")
	}
	if !timeOK(h.FirstTime) || !timeOK(h.LastTime) || !timeOK(h.Created) {
		return fmt.Errorf("a header time is outside the years 1..9999")
	}
	switch h.Kind {
	case Segment:
		if h.First == 0 || h.Last < h.First {
			return fmt.Errorf("segment positions %d..%d: want 1 <= First <= Last", h.First, h.Last)
		}
		if h.Last-h.First >= MaxSegmentChanges {
			return fmt.Errorf("segment positions %d..%d: more than %d changes", h.First, h.Last, MaxSegmentChanges)
		}
	case Snapshot:
		if h.First != h.Last {
			return fmt.Errorf("snapshot positions %d..%d: a snapshot is at one position, First == Last", h.First, h.Last)
		}
		if !h.FirstTime.Equal(h.LastTime) {
			return fmt.Errorf("snapshot times %v and %v differ: a snapshot is at one moment", h.FirstTime, h.LastTime)
		}
	default:
		return fmt.Errorf("unknown kind %d", h.Kind)
	}
	return validateTables(h.Tables)
}

// encodeHeader returns the header bytes: magic, version, body length, body,
// CRC-32C of everything before it.
func encodeHeader(h *Header, s *sealing) []byte {
	b := make([]byte, 0, 256)
	b = append(b, h.Kind.magic()...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	b = binary.LittleEndian.AppendUint32(b, 0) // body length, patched below
	b = appendString(b, h.Product)
	b = binary.AppendUvarint(b, h.First)
	b = binary.AppendUvarint(b, h.Last)
	b = binary.AppendUvarint(b, h.Source)
	b = appendTime(b, h.FirstTime)
	b = appendTime(b, h.LastTime)
	b = appendTime(b, h.Created)
	b = append(b, byte(Zstd))
	if s == nil {
		b = append(b, encNone)
	} else {
		b = append(b, encAES256GCM)
		b = appendString(b, h.KeyID)
		b = append(b, s.salt[:]...)
		b = append(b, s.check[:]...)
	}
	b = appendTables(b, h.Tables)
	binary.LittleEndian.PutUint32(b[7:11], uint32(len(b)-11))
	return binary.LittleEndian.AppendUint32(b, checksum(b))
}

// decodeHeader parses the complete header bytes b of an object of kind k.
func decodeHeader(b []byte, k Kind) (Header, *sealing, error) {
	where := k.String() + " header"
	if len(b) < headerFixed {
		return Header{}, nil, corruptf("%s: %d bytes, shorter than the fixed part", where, len(b))
	}
	if string(b[:5]) != k.magic() {
		return Header{}, nil, corruptf("%s: magic %q, want %q", where, b[:5], k.magic())
	}
	v := binary.LittleEndian.Uint16(b[5:7])
	if !readable(v) {
		return Header{}, nil, versionf("%s: format version %d, this build reads versions 1 to %d (or the header is corrupt)", where, v, Version)
	}
	if n := binary.LittleEndian.Uint32(b[7:11]); uint64(n) != uint64(len(b)-headerFixed) {
		return Header{}, nil, corruptf("%s: body length %d does not match the header length %d the footer gives", where, n, len(b))
	}
	body := b[11 : len(b)-4]
	if got, want := checksum(b[:len(b)-4]), binary.LittleEndian.Uint32(b[len(b)-4:]); got != want {
		return Header{}, nil, corruptf("%s: checksum mismatch (stored %08x, computed %08x)", where, want, got)
	}
	h := Header{Kind: k, Version: v}
	d := &decoder{b: body}
	h.Product = d.str()
	h.First = d.uvarint()
	h.Last = d.uvarint()
	h.Source = d.uvarint()
	h.FirstTime = d.time()
	h.LastTime = d.time()
	h.Created = d.time()
	h.Compression = Compression(d.byte1())
	enc := d.byte1()
	var s *sealing
	if d.err == nil && h.Compression != Zstd {
		d.fail(fmt.Errorf("compression %d unknown", h.Compression))
	}
	switch {
	case d.err != nil:
	case enc == encAES256GCM:
		h.Encrypted = true
		s = &sealing{}
		h.KeyID = d.str()
		copy(s.salt[:], d.fixed(saltLen))
		copy(s.check[:], d.fixed(keyCheckLen))
	case enc != encNone:
		d.fail(fmt.Errorf("encryption scheme %d unknown", enc))
	}
	h.Tables = d.tables()
	if d.err == nil && d.left() != 0 {
		d.fail(fmt.Errorf("%d bytes left over", d.left()))
	}
	if d.err != nil {
		return Header{}, nil, corruptf("%s: body byte %d: %v", where, d.off, d.err)
	}
	if err := validateHeader(&h); err != nil {
		return Header{}, nil, corruptf("%s: %v", where, err)
	}
	return h, s, nil
}

// footer locates the header and the index. Its layout is fixed per version;
// the last 7 bytes (version, magic) are fixed for all versions.
type footer struct {
	indexOff, indexLen, indexPlain int64
	indexCRC, indexPlainCRC        uint32
	headerLen                      int64
}

func (f *footer) encode(k Kind) []byte {
	b := make([]byte, 0, footerSize)
	b = binary.LittleEndian.AppendUint64(b, uint64(f.indexOff))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.indexLen))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.indexPlain))
	b = binary.LittleEndian.AppendUint32(b, f.indexCRC)
	b = binary.LittleEndian.AppendUint32(b, f.indexPlainCRC)
	b = binary.LittleEndian.AppendUint32(b, uint32(f.headerLen))
	b = append(b, 0) // reserved
	b = binary.LittleEndian.AppendUint32(b, checksum(b))
	b = binary.LittleEndian.AppendUint16(b, Version)
	return append(b, k.magic()...)
}

// decodeFooter parses the last footerSize bytes of an object of size bytes.
// It checks that the header and index it locates lie inside the object.
func decodeFooter(b []byte, size int64) (footer, Kind, error) {
	var f footer
	if len(b) != footerSize {
		return f, 0, corruptf("footer: %d bytes, want %d", len(b), footerSize)
	}
	var k Kind
	switch string(b[43:48]) {
	case Segment.magic():
		k = Segment
	case Snapshot.magic():
		k = Snapshot
	default:
		return f, 0, corruptf("footer: magic %q is neither %q nor %q: not a Lifeline backup object", b[43:48], Segment.magic(), Snapshot.magic())
	}
	where := k.String() + " footer"
	if v := binary.LittleEndian.Uint16(b[41:43]); !readable(v) {
		return f, k, versionf("%s: format version %d, this build reads versions 1 to %d (or the footer is corrupt)", where, v, Version)
	}
	if got, want := checksum(b[:37]), binary.LittleEndian.Uint32(b[37:41]); got != want {
		return f, k, corruptf("%s: checksum mismatch (stored %08x, computed %08x)", where, want, got)
	}
	if b[36] != 0 {
		return f, k, corruptf("%s: reserved byte is %d, want 0", where, b[36])
	}
	off := binary.LittleEndian.Uint64(b[0:8])
	n := binary.LittleEndian.Uint64(b[8:16])
	plain := binary.LittleEndian.Uint64(b[16:24])
	hl := uint64(binary.LittleEndian.Uint32(b[32:36]))
	body := uint64(size - footerSize)
	switch {
	case hl < headerFixed || hl > maxHeader || hl > body:
		return f, k, corruptf("%s: header length %d out of range for a %d-byte object", where, hl, size)
	case off < hl || off > body || n != body-off:
		return f, k, corruptf("%s: index at %d+%d does not end where the footer starts (%d)", where, off, n, body)
	case plain > maxIndexPlain:
		return f, k, corruptf("%s: index plaintext length %d exceeds %d", where, plain, maxIndexPlain)
	case n == 0:
		return f, k, corruptf("%s: index is empty", where)
	}
	f = footer{
		indexOff: int64(off), indexLen: int64(n), indexPlain: int64(plain),
		indexCRC: binary.LittleEndian.Uint32(b[24:28]), indexPlainCRC: binary.LittleEndian.Uint32(b[28:32]),
		headerLen: int64(hl),
	}
	return f, k, nil
}

// encodeIndex returns the index plaintext.
func encodeIndex(tenants []TenantIndex) []byte {
	b := binary.AppendUvarint(nil, uint64(len(tenants)))
	for _, t := range tenants {
		b = appendString(b, t.Tenant)
		b = binary.AppendUvarint(b, uint64(len(t.Blocks)))
		for _, bl := range t.Blocks {
			b = binary.AppendUvarint(b, uint64(bl.Offset))
			b = binary.AppendUvarint(b, uint64(bl.Length))
			b = binary.AppendUvarint(b, uint64(bl.PlainLength))
			b = binary.LittleEndian.AppendUint32(b, bl.StoredCRC)
			b = binary.LittleEndian.AppendUint32(b, bl.PlainCRC)
			b = binary.AppendUvarint(b, bl.Records)
			b = binary.AppendUvarint(b, bl.MinPos)
			b = binary.AppendUvarint(b, bl.MaxPos)
			b = appendTime(b, bl.MinTime)
			b = appendTime(b, bl.MaxTime)
		}
	}
	return b
}

// decodeIndex parses index plaintext and checks it against the header and
// the object's layout: tenants strictly ascending, blocks tiling the bytes
// [dataStart, dataEnd) exactly, in order, and every block's summary
// consistent with the header's positions.
func decodeIndex(plain []byte, h *Header, dataStart, dataEnd int64) ([]TenantIndex, error) {
	where := h.Kind.String() + " index"
	d := &decoder{b: plain}
	nt := d.count(2+minBlockEntry, math.MaxUint32)
	if d.err != nil {
		return nil, corruptf("%s: tenant count: %v", where, d.err)
	}
	tenants := make([]TenantIndex, 0, nt)
	next := dataStart
	var seq, total uint64
	minStored := int64(1)
	if h.Encrypted {
		minStored = gcmTag + 1
	}
	for i := range nt {
		t := TenantIndex{Tenant: d.str()}
		nb := d.count(minBlockEntry, math.MaxUint32)
		if d.err != nil {
			return nil, corruptf("%s: tenant %d: byte %d: %v", where, i, d.off, d.err)
		}
		if i > 0 && t.Tenant <= tenants[i-1].Tenant {
			return nil, corruptf("%s: tenant %q follows %q: not in ascending order", where, t.Tenant, tenants[i-1].Tenant)
		}
		if nb == 0 {
			return nil, corruptf("%s: tenant %q has no blocks", where, t.Tenant)
		}
		t.Blocks = make([]Block, nb)
		for j := range t.Blocks {
			bl := &t.Blocks[j]
			bl.Seq = seq
			seq++
			off, n, pl := d.uvarint(), d.uvarint(), d.uvarint()
			bl.StoredCRC, bl.PlainCRC = d.u32(), d.u32()
			bl.Records, bl.MinPos, bl.MaxPos = d.uvarint(), d.uvarint(), d.uvarint()
			bl.MinTime, bl.MaxTime = d.time(), d.time()
			if d.err != nil {
				return nil, corruptf("%s: tenant %q block %d: byte %d: %v", where, t.Tenant, j, d.off, d.err)
			}
			bad := func(format string, args ...any) error {
				return corruptf("%s: tenant %q block %d (at %d): %s", where, t.Tenant, j, off, fmt.Sprintf(format, args...))
			}
			switch {
			case off != uint64(next):
				return nil, bad("starts at %d, want %d (blocks must follow each other)", off, next)
			case n < uint64(minStored) || n > uint64(dataEnd-next):
				return nil, bad("stored length %d out of range", n)
			case pl < 2 || pl > MaxBlockPlain || pl > n*maxRatio:
				return nil, bad("plaintext length %d out of range", pl)
			case bl.Records == 0 || bl.Records > pl/minRecord:
				return nil, bad("record count %d out of range for %d plaintext bytes", bl.Records, pl)
			case bl.MinPos > bl.MaxPos || bl.MinTime.After(bl.MaxTime):
				return nil, bad("position or time bounds inverted")
			case h.Kind == Segment && (bl.MinPos < h.First || bl.MaxPos > h.Last):
				return nil, bad("positions %d..%d outside the segment's %d..%d", bl.MinPos, bl.MaxPos, h.First, h.Last)
			case h.Kind == Snapshot && bl.MaxPos > h.Last:
				return nil, bad("position %d after the snapshot's %d", bl.MaxPos, h.Last)
			}
			bl.Offset, bl.Length, bl.PlainLength = int64(off), int64(n), int64(pl)
			next += int64(n)
			total += bl.Records
		}
		tenants = append(tenants, t)
	}
	if d.left() != 0 {
		return nil, corruptf("%s: %d bytes left over after %d tenants", where, d.left(), nt)
	}
	if next != dataEnd {
		return nil, corruptf("%s: blocks end at %d but the index starts at %d", where, next, dataEnd)
	}
	if h.Kind == Segment && total != h.Last-h.First+1 {
		return nil, corruptf("%s: %d records for positions %d..%d (%d)", where, total, h.First, h.Last, h.Last-h.First+1)
	}
	return slices.Clip(tenants), nil
}
