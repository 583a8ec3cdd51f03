package format

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"lifeline/internal/change"
)

// One zstd encoder and one decoder serve every writer and reader: their
// EncodeAll and DecodeAll are safe for concurrent use, and building them
// allocates large tables. They hold no state between calls.
var (
	zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil, zstd.WithEncoderCRC(false))
	})
	// The decoder writes no more than the capacity of the buffer it is
	// given, which is the plaintext length the index declares.
	zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(MaxBlockPlain), zstd.WithDecoderMaxWindow(MaxBlockPlain))
	})
)

// CRC-32C (Castagnoli): in the standard library, hardware-accelerated on
// amd64 and arm64, and it detects every error burst up to 32 bits, so every
// single corrupted byte. Tampering is not its job: encrypted objects are
// authenticated by AES-GCM.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Appenders. Integers are unsigned LEB128 varints (encoding/binary's
// Uvarint); signed ones are zig-zag varints (binary.AppendVarint).

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Times are kept between the years 1 and 9999: the zero time.Time is year 1,
// and no commit happens later than 9999.
const (
	minUnix = -62135596800 // 0001-01-01T00:00:00Z
	maxUnix = 253402300799 // 9999-12-31T23:59:59Z
)

func timeOK(t time.Time) bool { return t.Unix() >= minUnix && t.Unix() <= maxUnix }

// appendTime stores an instant as zig-zag Unix seconds and nanoseconds. The
// zone is not kept: times are commit instants, decoded in UTC.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendValue(b []byte, v change.Value) []byte {
	b = append(b, byte(v.Kind))
	switch v.Kind {
	case change.Int:
		b = binary.AppendVarint(b, v.Int)
	case change.Float:
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v.Float))
	case change.Text, change.Blob, change.PG:
		b = appendBytes(b, v.Bytes)
	}
	return b
}

// errShort and errRange are the decoder's two failures; callers wrap them
// with what was being decoded and where.
var (
	errShort = errors.New("truncated")
	errRange = errors.New("value out of range")
)

// decoder reads fields from an untrusted byte slice. Every method checks the
// remaining length first; the first failure sticks in err and later reads
// return zero values, so a parse can check err once at the end of a unit.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if !d.varintOK(n) {
		return 0
	}
	return v
}

// varintOK checks a varint's length as binary.Uvarint/Varint reported it,
// and refuses overlong encodings (a final zero byte) so that every value
// has exactly one encoding.
func (d *decoder) varintOK(n int) bool {
	switch {
	case n == 0:
		d.fail(errShort)
		return false
	case n < 0 || n > 1 && d.b[d.off+n-1] == 0:
		d.fail(errRange)
		return false
	}
	d.off += n
	return true
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if !d.varintOK(n) {
		return 0
	}
	return v
}

// count reads a count of items each taking at least minSize bytes, and
// refuses one that the remaining input cannot hold: this is what keeps a
// hostile count from driving an allocation.
func (d *decoder) count(minSize int, max uint64) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > max || n > uint64(d.left()/minSize) {
		d.fail(errRange)
		return 0
	}
	return int(n)
}

func (d *decoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if d.left() < 1 {
		d.fail(errShort)
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if d.left() < n {
		d.fail(errShort)
		return nil
	}
	s := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return s
}

func (d *decoder) u32() uint32 {
	s := d.fixed(4)
	if s == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(s)
}

// bytes returns a length-prefixed byte string as a sub-slice of the input
// (capacity clipped, so appending to it cannot clobber the input).
func (d *decoder) bytes(max uint64) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > max || n > uint64(d.left()) {
		d.fail(errRange)
		return nil
	}
	return d.fixed(int(n))
}

func (d *decoder) str() string { return string(d.bytes(maxString)) }

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 || sec < minUnix || sec > maxUnix {
		d.fail(errRange)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (d *decoder) value() change.Value {
	k := change.Kind(d.byte1())
	if d.err != nil {
		return change.Value{}
	}
	v := change.Value{Kind: k}
	switch k {
	case change.Null:
	case change.Int:
		v.Int = d.varint()
	case change.Float:
		if s := d.fixed(8); s != nil {
			v.Float = math.Float64frombits(binary.LittleEndian.Uint64(s))
		}
	case change.Text, change.Blob, change.PG:
		v.Bytes = d.bytes(MaxBlockPlain)
	case change.Absent: // where it may appear is checked with the record
	default:
		d.fail(errRange)
	}
	return v
}

// appendTables and decodeTables carry the table shapes in the header.
func appendTables(b []byte, tables []change.Table) []byte {
	b = binary.AppendUvarint(b, uint64(len(tables)))
	for _, t := range tables {
		b = appendString(b, t.Name)
		b = binary.AppendUvarint(b, uint64(len(t.Columns)))
		for _, c := range t.Columns {
			b = appendString(b, c.Name)
			b = appendString(b, c.Type)
		}
		b = binary.AppendUvarint(b, uint64(len(t.PrimaryKey)))
		for _, i := range t.PrimaryKey {
			b = binary.AppendUvarint(b, uint64(i))
		}
		b = binary.AppendUvarint(b, uint64(t.Tenant))
	}
	return b
}

func (d *decoder) tables() []change.Table {
	// A table takes at least 4 bytes: name, column count, key count, tenant.
	n := d.count(4, math.MaxUint32)
	if d.err != nil {
		return nil
	}
	tables := make([]change.Table, 0, n)
	for range n {
		var t change.Table
		t.Name = d.str()
		nc := d.count(2, maxColumns)
		if d.err != nil {
			return nil
		}
		t.Columns = make([]change.Column, nc)
		for j := range t.Columns {
			t.Columns[j].Name = d.str()
			t.Columns[j].Type = d.str()
		}
		nk := d.count(1, maxColumns)
		if d.err != nil {
			return nil
		}
		t.PrimaryKey = make([]int, nk)
		for j := range t.PrimaryKey {
			t.PrimaryKey[j] = int(d.index(nc))
		}
		t.Tenant = int(d.index(nc))
		if d.err != nil {
			return nil
		}
		tables = append(tables, t)
	}
	return tables
}

// index reads an index that must be below n.
func (d *decoder) index(n int) uint64 {
	i := d.uvarint()
	if d.err == nil && i >= uint64(n) {
		d.fail(errRange)
	}
	return i
}
