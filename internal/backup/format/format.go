// Package format encodes and decodes the two immutable object kinds of the
// backup repository: segments (one product's changes for a contiguous
// position range) and snapshots (every protected row of one product at one
// position). docs/backup-format.md describes the bytes.
//
// Inside an object, records are sorted by (tenant, table, primary key,
// position) and grouped into per-tenant blocks, each compressed with zstd and
// optionally sealed with AES-256-GCM. An index at the end, located by a
// fixed-size footer, lets a reader fetch only the blocks of the tenants it
// needs: that is what makes restore cost follow what is restored.
//
// Every decoder here treats its input as hostile: lengths are checked against
// what is left of the input and against fixed caps before anything is
// allocated, and every failure is an error wrapping ErrCorrupt, ErrVersion or
// ErrKey, never a panic.
package format

import (
	"errors"
	"fmt"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// Version is the format version this package writes. It reads every version
// listed in docs/backup-format.md: 1, and 2, which adds the Absent value
// kind to snapshots (a column added after the row was captured).
const Version = 2

// readable reports whether this build reads format version v.
func readable(v uint16) bool { return v >= 1 && v <= Version }

// Kind says which object kind a header describes.
type Kind byte

const (
	// Segment holds the changes of one product for positions First..Last.
	Segment Kind = 1
	// Snapshot holds the image of every protected row at position First (== Last).
	Snapshot Kind = 2
)

func (k Kind) String() string {
	switch k {
	case Segment:
		return "segment"
	case Snapshot:
		return "snapshot"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// magic returns the 5 bytes that open the header and close the footer.
func (k Kind) magic() string {
	if k == Snapshot {
		return "LLSNP"
	}
	return "LLSEG"
}

// Compression names the block compression. Only zstd exists in version 1.
type Compression byte

// Zstd is zstd (RFC 8878) frames, one per block and one for the index.
const Zstd Compression = 1

// Header describes an object. It is stored unencrypted at the start of the
// object (the key id must be readable to find the key); when the object is
// encrypted, the index is sealed with the header bytes as additional data, so
// a changed header is detected as well.
type Header struct {
	Kind    Kind
	Version uint16 // format version; set by the writer, reported by the reader
	Product string
	// First and Last bound the positions: a segment holds exactly the changes
	// First..Last; a snapshot is at position P and has First == Last == P.
	First, Last uint64
	// Source is the capture source's own position of Last (SQLite: the
	// change-log sequence; PostgreSQL: the commit LSN), so that a restarted
	// shipper can resume from the repository alone. Opaque to the format.
	Source uint64
	// FirstTime and LastTime are the commit times of positions First and
	// Last. A segment writer fills them in from the changes; a snapshot's
	// caller sets both to the commit time of P.
	FirstTime, LastTime time.Time
	// Tables are the shapes (schema version) the rows were captured under;
	// every record names one of them.
	Tables      []change.Table
	Compression Compression // set by the writer
	Encrypted   bool        // set by the writer from Options.Key
	KeyID       string      // which key sealed the object; never the key itself
	Created     time.Time   // when the object was written; set by the caller
}

// Table returns the shape of the named table.
func (h *Header) Table(name string) (*change.Table, bool) {
	for i := range h.Tables {
		if h.Tables[i].Name == name {
			return &h.Tables[i], true
		}
	}
	return nil, false
}

// Sentinel errors. Every decoding failure wraps exactly one of them, inside a
// *fault.Error that names what and where and says what to do.
var (
	// ErrCorrupt: the bytes are not a valid object (a checksum mismatch, a
	// length out of range, bad sort order, a position gap...). The object was
	// damaged in storage or in transit, or was not written by Lifeline.
	ErrCorrupt = errors.New("backup object is corrupt")
	// ErrVersion: the object declares a format version this build cannot read.
	ErrVersion = errors.New("unknown backup format version")
	// ErrKey: the object is encrypted and no key, or a key other than the one
	// that sealed it, was given.
	ErrKey = errors.New("backup encryption key missing or wrong")
	// ErrInvalid: a writer was given input it refuses to store (a position
	// gap or duplicate, an unknown table, rows out of order, an oversized
	// row). It is a bug in the caller, not a storage problem; nothing valid
	// was written.
	ErrInvalid = errors.New("invalid input for a backup object")
)

const (
	hintCorrupt = "the object is damaged or is not a Lifeline backup object; run `lifeline backup verify` to list every damaged object, and restore from another copy or a neighbouring snapshot"
	hintVersion = "the object was written by a newer Lifeline; upgrade Lifeline to read it"
	hintKey     = "give the 32-byte AES-256 key whose id the object header names"
	hintInvalid = "this is a bug in the caller of the backup writer; report it with the error"
)

func corruptf(format string, args ...any) error {
	return &fault.Error{Code: fault.Refused, Msg: fmt.Sprintf(format, args...), Hint: hintCorrupt, Err: ErrCorrupt}
}

func versionf(format string, args ...any) error {
	return &fault.Error{Code: fault.Refused, Msg: fmt.Sprintf(format, args...), Hint: hintVersion, Err: ErrVersion}
}

func keyf(format string, args ...any) error {
	return &fault.Error{Code: fault.Refused, Msg: fmt.Sprintf(format, args...), Hint: hintKey, Err: ErrKey}
}

func invalidf(format string, args ...any) error {
	return &fault.Error{Code: fault.Internal, Msg: fmt.Sprintf(format, args...), Hint: hintInvalid, Err: ErrInvalid}
}

// Limits. They bound what a hostile object can make a reader allocate, and
// what a writer accepts.
const (
	// MaxBlockPlain caps a block's plaintext, hence one row's encoding: a
	// little under 1 GiB, the largest field PostgreSQL or SQLite store.
	MaxBlockPlain = 1 << 30
	// MaxSegmentChanges caps the changes in one segment, so verifying
	// contiguity needs at most an 8 MiB bitmap. A shipper with a larger
	// backlog writes several segments.
	MaxSegmentChanges = 1 << 26
	// DefaultBlockSize is the target plaintext size of a block: large enough
	// to compress well, small enough that reading one small tenant reads
	// little else.
	DefaultBlockSize = 256 << 10
	minBlockSize     = 512
	maxBlockSize     = 64 << 20
	maxHeader        = 64 << 20  // header bytes (table shapes)
	maxIndexPlain    = 512 << 20 // index plaintext
	maxString        = 1 << 20   // names, types, tenant keys, product, key id
	maxColumns       = 1 << 16   // PostgreSQL allows 1600, SQLite 32767
	// maxRatio bounds zstd's expansion: a block of at most 128 KiB of output
	// costs at least 4 bytes (RFC 8878), so a plaintext length claimed beyond
	// this many times the stored length is a lie, refused before allocating.
	maxRatio    = 1 << 15
	keyLen      = 32
	saltLen     = 32
	keyCheckLen = 16
)

// Block locates one block of a tenant and summarises its records.
type Block struct {
	Seq         uint64 // ordinal of the block in the object (its nonce)
	Offset      int64  // byte offset of the stored block in the object
	Length      int64  // stored (compressed, sealed) length
	PlainLength int64  // plaintext length
	StoredCRC   uint32 // CRC-32C of the stored bytes
	PlainCRC    uint32 // CRC-32C of the plaintext
	Records     uint64
	// MinPos/MaxPos and MinTime/MaxTime bound the records' positions and
	// times (records are in key order, so these are bounds, not ends).
	MinPos, MaxPos   uint64
	MinTime, MaxTime time.Time
}

// TenantIndex is one tenant's entry in an object's index.
type TenantIndex struct {
	Tenant string
	Blocks []Block // in object order, never empty
}

// Records returns the tenant's record count.
func (t TenantIndex) Records() uint64 {
	var n uint64
	for _, b := range t.Blocks {
		n += b.Records
	}
	return n
}

// Bytes returns the stored size of the tenant's blocks: what reading it costs.
func (t TenantIndex) Bytes() int64 {
	var n int64
	for _, b := range t.Blocks {
		n += b.Length
	}
	return n
}

// PosRange returns the smallest and largest position among the tenant's records.
func (t TenantIndex) PosRange() (min, max uint64) {
	for i, b := range t.Blocks {
		if i == 0 || b.MinPos < min {
			min = b.MinPos
		}
		if i == 0 || b.MaxPos > max {
			max = b.MaxPos
		}
	}
	return min, max
}

// TimeRange returns the earliest and latest time among the tenant's records.
func (t TenantIndex) TimeRange() (min, max time.Time) {
	for i, b := range t.Blocks {
		if i == 0 || b.MinTime.Before(min) {
			min = b.MinTime
		}
		if i == 0 || b.MaxTime.After(max) {
			max = b.MaxTime
		}
	}
	return min, max
}

// Summary is what a writer reports about the object it wrote.
type Summary struct {
	Header  Header
	Size    int64 // bytes written: the object's size
	Records uint64
	Blocks  int
	// PlainBytes and StoredBytes are the blocks' total plaintext and stored
	// sizes; their ratio is the compression ratio.
	PlainBytes, StoredBytes int64
	Tenants                 []TenantIndex // sorted by tenant
}
