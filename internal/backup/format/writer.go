package format

import (
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"

	"lifeline/internal/change"
)

// Options configure a writer. The zero value writes unencrypted objects with
// the default block size.
type Options struct {
	// Key, when set, seals every block and the index with AES-256-GCM. It
	// must be 32 bytes. KeyID names it in the header so a reader knows which
	// key to fetch; it is required with a key and refused without one.
	Key   []byte
	KeyID string
	// BlockSize is the target plaintext size of a block, between 512 bytes and
	// 64 MiB; 0 means DefaultBlockSize. A single larger row gets a block of
	// its own.
	BlockSize int
	// Rand supplies the per-object salt of encrypted objects; nil means
	// crypto/rand. Tests set it to get reproducible bytes.
	Rand io.Reader
}

// objectWriter is the machinery both object kinds share: it takes records in
// object order, packs them into per-tenant blocks, and ends the object with
// the index and the footer.
type objectWriter struct {
	w        io.Writer
	h        Header
	hdr      []byte
	tableIdx map[string]int
	enc      *zstd.Encoder
	seal     *sealer
	target   int
	err      error // sticky: once set, the object is unusable
	closed   bool

	tenants []TenantIndex
	size    int64
	seq     uint64

	// the block being filled
	tenant       string
	blk          Block
	recs         []byte
	rec, plain   []byte // scratch
	comp, stored []byte // scratch

	// the previous record, for the order check; its key values are copied
	// into arena because the caller may reuse its buffers.
	havePrev   bool
	prevTenant string
	prev       change.Change
	prevTable  *change.Table
	arena      []byte

	sum Summary
}

func newObjectWriter(w io.Writer, h Header, opt Options) (*objectWriter, error) {
	h.Version = Version
	h.Compression = Zstd
	h.Encrypted = opt.Key != nil
	h.KeyID = opt.KeyID
	if h.Encrypted != (opt.KeyID != "") {
		return nil, invalidf("%s of %q: a key and a key id go together (key %d bytes, key id %q)", h.Kind, h.Product, len(opt.Key), opt.KeyID)
	}
	if err := validateHeader(&h); err != nil {
		return nil, invalidf("%s of %q: header: %v", h.Kind, h.Product, err)
	}
	target := opt.BlockSize
	if target == 0 {
		target = DefaultBlockSize
	}
	if target < minBlockSize || target > maxBlockSize {
		return nil, invalidf("%s: block size %d outside %d..%d", h.Kind, target, minBlockSize, maxBlockSize)
	}
	ow := &objectWriter{w: w, h: h, target: target, tableIdx: make(map[string]int, len(h.Tables))}
	for i, t := range h.Tables {
		ow.tableIdx[t.Name] = i
	}
	var s *sealing
	if h.Encrypted {
		s = &sealing{}
		r := opt.Rand
		if r == nil {
			r = rand.Reader
		}
		if _, err := io.ReadFull(r, s.salt[:]); err != nil {
			return nil, fmt.Errorf("%s: reading a random salt: %w", h.Kind, err)
		}
		sl, check, err := newSealer(opt.Key, s)
		if err != nil {
			return nil, invalidf("%s: %v", h.Kind, err)
		}
		ow.seal, s.check = sl, check
	}
	enc, err := zstdEncoder()
	if err != nil {
		return nil, err
	}
	ow.enc = enc
	ow.hdr = encodeHeader(&ow.h, s)
	if len(ow.hdr) > maxHeader {
		return nil, invalidf("%s: header of %d bytes exceeds %d (too many table shapes)", h.Kind, len(ow.hdr), maxHeader)
	}
	ow.write(ow.hdr)
	return ow, ow.err
}

func (ow *objectWriter) write(b []byte) {
	if ow.err != nil {
		return
	}
	n, err := ow.w.Write(b)
	ow.size += int64(n)
	if err != nil {
		ow.err = fmt.Errorf("%s: writing: %w", ow.h.Kind, err)
	}
}

func (ow *objectWriter) fail(err error) error {
	if ow.err == nil {
		ow.err = err
	}
	return err
}

// add appends one record; records must come in object order.
func (ow *objectWriter) add(c *change.Change) error {
	if ow.err != nil {
		return ow.err
	}
	if ow.closed {
		return invalidf("%s: add after close", ow.h.Kind)
	}
	ti, ok := ow.tableIdx[c.Table]
	if !ok {
		return ow.fail(invalidf("%s: position %d: table %q is not among the object's table shapes", ow.h.Kind, c.Pos, c.Table))
	}
	t := &ow.h.Tables[ti]
	if err := validateChange(&ow.h, c, t); err != nil {
		return ow.fail(invalidf("%s: %v", ow.h.Kind, err))
	}
	if ow.havePrev {
		switch {
		case c.Tenant < ow.prevTenant:
			return ow.fail(invalidf("%s: tenant %q follows tenant %q: rows must be sorted by tenant", ow.h.Kind, c.Tenant, ow.prevTenant))
		case c.Tenant == ow.prevTenant:
			if err := checkOrder(ow.h.Kind, &ow.prev, ow.prevTable, c, t); err != nil {
				return ow.fail(invalidf("%s: tenant %q: %v", ow.h.Kind, c.Tenant, err))
			}
		}
	}
	ow.rec = appendRecord(ow.rec[:0], c, ti)
	head := len(c.Tenant) + 2*10
	if head+len(ow.rec) > MaxBlockPlain {
		return ow.fail(invalidf("%s: position %d: table %q row encodes to %d bytes, more than the %d a block holds", ow.h.Kind, c.Pos, t.Name, len(ow.rec), MaxBlockPlain))
	}
	if len(ow.recs) > 0 && (c.Tenant != ow.tenant || head+len(ow.recs)+len(ow.rec) > ow.target) {
		ow.flush()
	}
	if len(ow.recs) == 0 {
		ow.tenant = c.Tenant
		ow.blk = Block{MinPos: c.Pos, MaxPos: c.Pos, MinTime: c.Time, MaxTime: c.Time}
	}
	ow.recs = append(ow.recs, ow.rec...)
	b := &ow.blk
	b.Records++
	b.MinPos, b.MaxPos = min(b.MinPos, c.Pos), max(b.MaxPos, c.Pos)
	if c.Time.Before(b.MinTime) {
		b.MinTime = c.Time
	}
	if c.Time.After(b.MaxTime) {
		b.MaxTime = c.Time
	}
	ow.remember(c, t)
	return ow.err
}

func (ow *objectWriter) remember(c *change.Change, t *change.Table) {
	ow.havePrev = true
	if ow.prevTenant != c.Tenant {
		ow.prevTenant = c.Tenant
	}
	ow.prevTable = t
	ow.prev.Pos = c.Pos
	if cap(ow.prev.Row) < len(c.Row) {
		ow.prev.Row = make([]change.Value, len(c.Row))
	}
	ow.prev.Row = ow.prev.Row[:len(c.Row)]
	ow.arena = ow.arena[:0]
	for _, i := range t.PrimaryKey {
		ow.arena = append(ow.arena, c.Row[i].Bytes...)
	}
	at := 0
	for _, i := range t.PrimaryKey {
		v := c.Row[i]
		n := len(v.Bytes)
		v.Bytes = ow.arena[at : at+n : at+n]
		at += n
		ow.prev.Row[i] = v
	}
}

// flush compresses, seals and writes the block being filled.
func (ow *objectWriter) flush() {
	if len(ow.recs) == 0 || ow.err != nil {
		return
	}
	b := ow.blk
	ow.plain = appendBlockHead(ow.plain[:0], ow.tenant, b.Records)
	ow.plain = append(ow.plain, ow.recs...)
	b.PlainLength = int64(len(ow.plain))
	b.PlainCRC = checksum(ow.plain)
	ow.comp = ow.enc.EncodeAll(ow.plain, ow.comp[:0])
	stored := ow.comp
	if ow.seal != nil {
		ow.stored = ow.seal.seal(ow.stored[:0], ow.comp, ow.seq, nil)
		stored = ow.stored
	}
	b.Seq = ow.seq
	ow.seq++
	b.Offset = ow.size
	b.Length = int64(len(stored))
	b.StoredCRC = checksum(stored)
	ow.write(stored)
	if n := len(ow.tenants); n == 0 || ow.tenants[n-1].Tenant != ow.tenant {
		ow.tenants = append(ow.tenants, TenantIndex{Tenant: ow.tenant})
	}
	t := &ow.tenants[len(ow.tenants)-1]
	t.Blocks = append(t.Blocks, b)
	ow.sum.Records += b.Records
	ow.sum.Blocks++
	ow.sum.PlainBytes += b.PlainLength
	ow.sum.StoredBytes += b.Length
	ow.recs = ow.recs[:0]
	if cap(ow.recs) > 4*ow.target {
		ow.recs = nil // do not keep a huge row's buffer for the rest of the object
		ow.plain, ow.comp, ow.stored = nil, nil, nil
	}
}

// close writes the last block, the index and the footer.
func (ow *objectWriter) close() (Summary, error) {
	if ow.closed {
		return Summary{}, invalidf("%s: closed twice", ow.h.Kind)
	}
	ow.flush()
	ow.closed = true
	if ow.err != nil {
		return Summary{}, ow.err
	}
	plain := encodeIndex(ow.tenants)
	if len(plain) > maxIndexPlain {
		return Summary{}, ow.fail(invalidf("%s: index of %d bytes exceeds %d: too many tenants or blocks for one object", ow.h.Kind, len(plain), maxIndexPlain))
	}
	stored := ow.enc.EncodeAll(plain, nil)
	if ow.seal != nil {
		stored = ow.seal.seal(nil, stored, gcmNonceIndex, ow.hdr)
	}
	f := footer{
		indexOff: ow.size, indexLen: int64(len(stored)), indexPlain: int64(len(plain)),
		indexCRC: checksum(stored), indexPlainCRC: checksum(plain), headerLen: int64(len(ow.hdr)),
	}
	ow.write(stored)
	ow.write(f.encode(ow.h.Kind))
	if ow.err != nil {
		return Summary{}, ow.err
	}
	ow.sum.Header = ow.h
	ow.sum.Size = ow.size
	ow.sum.Tenants = ow.tenants
	return ow.sum, nil
}

// WriteSegment writes a segment holding exactly the changes at positions
// h.First..h.Last of product h.Product, in any order, and returns its
// summary. h.Tables must list the shape of every table the changes name;
// h.Created is recorded as given. The writer fills in the rest of the
// header (kind, version, times, encryption).
//
// It refuses (ErrInvalid, nothing valid written) an empty segment, a
// position outside h.First..h.Last, a duplicate or missing position, a
// transaction split by another one, an unknown table, a row whose length
// does not match its table, and an operation other than insert, update or
// delete.
func WriteSegment(w io.Writer, h Header, changes []change.Change, opt Options) (Summary, error) {
	h.Kind = Segment
	if len(changes) == 0 {
		return Summary{}, invalidf("segment of %q: no changes", h.Product)
	}
	if err := validateHeader(&h); err != nil {
		return Summary{}, invalidf("segment of %q: header: %v", h.Product, err)
	}
	n := h.Last - h.First + 1
	if uint64(len(changes)) != n {
		return Summary{}, invalidf("segment of %q: %d changes for positions %d..%d (%d): positions must be contiguous, each once", h.Product, len(changes), h.First, h.Last, n)
	}
	tables := make(map[string]int32, len(h.Tables))
	for i, t := range h.Tables {
		tables[t.Name] = int32(i)
	}
	byPos := make([]int32, n)
	for i := range byPos {
		byPos[i] = -1
	}
	tix := make([]int32, len(changes))
	for i := range changes {
		c := &changes[i]
		if c.Pos < h.First || c.Pos > h.Last {
			return Summary{}, invalidf("segment of %q: position %d outside %d..%d", h.Product, c.Pos, h.First, h.Last)
		}
		if j := byPos[c.Pos-h.First]; j >= 0 {
			return Summary{}, invalidf("segment of %q: position %d appears twice", h.Product, c.Pos)
		}
		byPos[c.Pos-h.First] = int32(i)
		ti, ok := tables[c.Table]
		if !ok {
			return Summary{}, invalidf("segment of %q: position %d: table %q is not among the segment's table shapes", h.Product, c.Pos, c.Table)
		}
		if err := validateChange(&h, c, &h.Tables[ti]); err != nil {
			return Summary{}, invalidf("segment of %q: %v", h.Product, err)
		}
		tix[i] = ti
	}
	// Every slot is filled: len(changes) == n and no duplicate. Now check
	// transactions in position order: a change that does not end its
	// transaction is followed by one of the same transaction.
	for p := 1; p < len(byPos); p++ {
		a, b := &changes[byPos[p-1]], &changes[byPos[p]]
		if !a.TxEnd && b.Tx != a.Tx {
			return Summary{}, invalidf("segment of %q: position %d (transaction %d) follows an unfinished transaction %d", h.Product, b.Pos, b.Tx, a.Tx)
		}
	}
	h.FirstTime = changes[byPos[0]].Time
	h.LastTime = changes[byPos[n-1]].Time
	byPos = nil

	perm := make([]int32, len(changes))
	for i := range perm {
		perm[i] = int32(i)
	}
	slices.SortFunc(perm, func(i, j int32) int {
		a, b := &changes[i], &changes[j]
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		c, _ := compareRows(a, &h.Tables[tix[i]], b, &h.Tables[tix[j]])
		return c
	})
	ow, err := newObjectWriter(w, h, opt)
	if err != nil {
		return Summary{}, err
	}
	for _, i := range perm {
		if err := ow.add(&changes[i]); err != nil {
			return Summary{}, err
		}
	}
	return ow.close()
}

// SnapshotWriter streams a snapshot: rows go to the io.Writer block by block,
// so memory stays bounded by the block size and the index, whatever the
// number of rows. A failed Add leaves the output unusable; discard it.
type SnapshotWriter struct{ ow *objectWriter }

// NewSnapshotWriter writes the header of a snapshot of product h.Product at
// position P = h.First = h.Last (taken at time h.FirstTime = h.LastTime) and
// returns the writer for its rows. The writer fills in kind, version and
// encryption.
func NewSnapshotWriter(w io.Writer, h Header, opt Options) (*SnapshotWriter, error) {
	h.Kind = Snapshot
	ow, err := newObjectWriter(w, h, opt)
	if err != nil {
		return nil, err
	}
	return &SnapshotWriter{ow: ow}, nil
}

// Add writes one row image. Rows must come sorted by (tenant, table, primary
// key, position), with Op == change.Snapshot and Pos <= P; a primary key
// appears at most once per table. Add refuses (ErrInvalid) anything else.
// The writer keeps no reference to c.
func (s *SnapshotWriter) Add(c *change.Change) error { return s.ow.add(c) }

// Close writes the last block, the index and the footer, and returns the
// snapshot's summary.
func (s *SnapshotWriter) Close() (Summary, error) { return s.ow.close() }
