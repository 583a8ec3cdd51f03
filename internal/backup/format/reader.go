package format

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"sort"

	"github.com/klauspost/compress/zstd"

	"lifeline/internal/change"
)

// RangeReader reads byte ranges of one object. The blob store satisfies it
// through an adapter; ReaderAt adapts files and byte slices.
type RangeReader interface {
	// ReadRange returns exactly n bytes starting at off, or an error. It may
	// be called from several goroutines at once. A short result is treated
	// as a truncated object (ErrCorrupt).
	ReadRange(ctx context.Context, off, n int64) ([]byte, error)
}

// ReaderAt adapts an io.ReaderAt (an *os.File, a *bytes.Reader) to a
// RangeReader.
func ReaderAt(ra io.ReaderAt) RangeReader { return readerAt{ra} }

type readerAt struct{ ra io.ReaderAt }

func (r readerAt) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	m, err := r.ra.ReadAt(b, off)
	if m == len(b) {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return b[:m], nil
	}
	return nil, err
}

// maxBatch caps one ranged read of consecutive blocks: few round trips for a
// large tenant, bounded memory.
const maxBatch = 4 << 20

// Reader reads one object. Open has read the footer, the header and the
// index; tenant data is read on demand. A Reader is safe for concurrent use.
type Reader struct {
	r       RangeReader
	size    int64
	h       Header
	seal    *sealer
	dec     *zstd.Decoder
	tenants []TenantIndex
}

// Open reads an object's footer, header and index: three ranged reads,
// whatever the object's size. size is the object's size in bytes. key is
// needed for encrypted objects and ignored for others.
//
// Errors wrap ErrCorrupt (the bytes are not a valid object), ErrVersion (a
// format this build does not read) or ErrKey (encrypted, and the key is
// missing or not the one that sealed it), or are the RangeReader's own.
func Open(ctx context.Context, r RangeReader, size int64, key []byte) (*Reader, error) {
	if size < footerSize+headerFixed {
		return nil, corruptf("object of %d bytes is smaller than any backup object", size)
	}
	fb, err := readRange(ctx, r, size-footerSize, footerSize, "footer")
	if err != nil {
		return nil, err
	}
	f, kind, err := decodeFooter(fb, size)
	if err != nil {
		return nil, err
	}
	hb, err := readRange(ctx, r, 0, f.headerLen, kind.String()+" header")
	if err != nil {
		return nil, err
	}
	h, s, err := decodeHeader(hb, kind)
	if err != nil {
		return nil, err
	}
	rd := &Reader{r: r, size: size, h: h}
	if h.Encrypted {
		if rd.seal, err = openSealer(&h, s, key); err != nil {
			return nil, err
		}
	}
	if rd.dec, err = zstdDecoder(); err != nil {
		return nil, err
	}
	where := kind.String() + " index"
	ib, err := readRange(ctx, r, f.indexOff, f.indexLen, where)
	if err != nil {
		return nil, err
	}
	plain, err := rd.unpack(ib, f.indexCRC, f.indexPlainCRC, f.indexPlain, gcmNonceIndex, hb, where)
	if err != nil {
		return nil, err
	}
	if rd.tenants, err = decodeIndex(plain, &h, f.headerLen, f.indexOff); err != nil {
		return nil, err
	}
	return rd, nil
}

func readRange(ctx context.Context, r RangeReader, off, n int64, what string) ([]byte, error) {
	b, err := r.ReadRange(ctx, off, n)
	if err != nil {
		return nil, fmt.Errorf("reading %s (bytes %d..%d): %w", what, off, off+n, err)
	}
	if int64(len(b)) != n {
		return nil, corruptf("%s (bytes %d..%d): read %d bytes: the object is shorter than its size", what, off, off+n, len(b))
	}
	return b, nil
}

// unpack checks, opens and decompresses stored bytes: stored checksum, then
// authentication, then decompression to exactly plainLen bytes, then the
// plaintext checksum. The stored checksum comes first so that random damage
// is reported as such, and a key can be told wrong before any block is read.
func (rd *Reader) unpack(stored []byte, storedCRC, plainCRC uint32, plainLen int64, seq uint64, aad []byte, where string) ([]byte, error) {
	if got := checksum(stored); got != storedCRC {
		return nil, corruptf("%s: stored checksum mismatch (index says %08x, bytes have %08x)", where, storedCRC, got)
	}
	if plainLen > int64(len(stored))*maxRatio {
		return nil, corruptf("%s: plaintext length %d is impossible for %d stored bytes", where, plainLen, len(stored))
	}
	comp := stored
	if rd.seal != nil {
		var err error
		if comp, err = rd.seal.open(stored, seq, aad); err != nil {
			return nil, corruptf("%s: authentication failed: the bytes or the header were altered", where)
		}
	}
	plain, err := rd.dec.DecodeAll(comp, make([]byte, 0, plainLen))
	if err != nil {
		return nil, corruptf("%s: zstd: %v", where, err)
	}
	if int64(len(plain)) != plainLen {
		return nil, corruptf("%s: decompressed to %d bytes, want %d", where, len(plain), plainLen)
	}
	if got := checksum(plain); got != plainCRC {
		return nil, corruptf("%s: plaintext checksum mismatch (index says %08x, plaintext has %08x)", where, plainCRC, got)
	}
	return plain, nil
}

// Header returns the object's header.
func (rd *Reader) Header() Header { return rd.h }

// Size returns the object's size in bytes.
func (rd *Reader) Size() int64 { return rd.size }

// Tenants returns the index: every tenant in the object, ascending, with its
// blocks. The caller must not modify it.
func (rd *Reader) Tenants() []TenantIndex { return rd.tenants }

// Lookup returns one tenant's index entry, if the tenant is in the object.
func (rd *Reader) Lookup(tenant string) (TenantIndex, bool) {
	i := sort.Search(len(rd.tenants), func(i int) bool { return rd.tenants[i].Tenant >= tenant })
	if i < len(rd.tenants) && rd.tenants[i].Tenant == tenant {
		return rd.tenants[i], true
	}
	return TenantIndex{}, false
}

// Tenant iterates over one tenant's records in (table, primary key,
// position) order, reading only that tenant's blocks. A tenant absent from
// the object yields nothing. On failure it yields one error (wrapping
// ErrCorrupt for bad bytes) and stops; records already yielded came from
// blocks whose checksums matched.
//
// Values' byte slices share memory with the block they came from; they stay
// valid, and the caller may keep them.
func (rd *Reader) Tenant(ctx context.Context, tenant string) iter.Seq2[change.Change, error] {
	return func(yield func(change.Change, error) bool) {
		t, ok := rd.Lookup(tenant)
		if !ok {
			return
		}
		err := rd.scan(ctx, &t, func(c *change.Change) bool { return yield(*c, nil) })
		if err != nil && err != errStop {
			yield(change.Change{}, err)
		}
	}
}

// All iterates over every record of the object, tenant by tenant, in object
// order. Errors are as for Tenant.
func (rd *Reader) All(ctx context.Context) iter.Seq2[change.Change, error] {
	return func(yield func(change.Change, error) bool) {
		for i := range rd.tenants {
			err := rd.scan(ctx, &rd.tenants[i], func(c *change.Change) bool { return yield(*c, nil) })
			if err == errStop {
				return
			}
			if err != nil {
				yield(change.Change{}, err)
				return
			}
		}
	}
}

// errStop ends a scan early at the consumer's request.
var errStop = errors.New("stop")

// scan reads a tenant's blocks, a batch of consecutive blocks per ranged
// read, and calls fn for each record after checking it: the block's
// checksums, its tenant and record count, that its records are in object
// order (also across blocks), and that the index's bounds are exact. It
// returns errStop if fn asked to stop.
func (rd *Reader) scan(ctx context.Context, t *TenantIndex, fn func(*change.Change) bool) error {
	var prev change.Change
	var prevTable *change.Table
	for i := 0; i < len(t.Blocks); {
		j, n := i+1, t.Blocks[i].Length
		for j < len(t.Blocks) && n+t.Blocks[j].Length <= maxBatch {
			n += t.Blocks[j].Length
			j++
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := readRange(ctx, rd.r, t.Blocks[i].Offset, n, fmt.Sprintf("%s tenant %q blocks %d..%d", rd.h.Kind, t.Tenant, i, j-1))
		if err != nil {
			return err
		}
		for ; i < j; i++ {
			b := &t.Blocks[i]
			stored := batch[:b.Length:b.Length]
			batch = batch[b.Length:]
			if err := rd.scanBlock(t.Tenant, i, b, stored, &prev, &prevTable, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func (rd *Reader) scanBlock(tenant string, i int, b *Block, stored []byte, prev *change.Change, prevTable **change.Table, fn func(*change.Change) bool) error {
	where := fmt.Sprintf("%s block %d of tenant %q (bytes %d..%d)", rd.h.Kind, i, tenant, b.Offset, b.Offset+b.Length)
	plain, err := rd.unpack(stored, b.StoredCRC, b.PlainCRC, b.PlainLength, b.Seq, nil, where)
	if err != nil {
		return err
	}
	p, err := newBlockParser(&rd.h, plain)
	if err != nil {
		return corruptf("%s: %v", where, err)
	}
	if p.tenant != tenant || p.records != b.Records {
		return corruptf("%s: block holds %d records of tenant %q, index says %d of %q", where, p.records, p.tenant, b.Records, tenant)
	}
	var c change.Change
	first := true
	var minPos, maxPos uint64
	var minTime, maxTime = b.MinTime, b.MaxTime
	for {
		t, err := p.next(&c)
		if err != nil {
			return corruptf("%s: %v", where, err)
		}
		if t == nil {
			break
		}
		if *prevTable != nil {
			if err := checkOrder(rd.h.Kind, prev, *prevTable, &c, t); err != nil {
				return corruptf("%s: %v", where, err)
			}
		}
		if first {
			minPos, maxPos, minTime, maxTime = c.Pos, c.Pos, c.Time, c.Time
			first = false
		}
		minPos, maxPos = min(minPos, c.Pos), max(maxPos, c.Pos)
		if c.Time.Before(minTime) {
			minTime = c.Time
		}
		if c.Time.After(maxTime) {
			maxTime = c.Time
		}
		if c.Time.Before(b.MinTime) || c.Time.After(b.MaxTime) {
			return corruptf("%s: record at position %d has time %v, outside the index's %v..%v", where, c.Pos, c.Time, b.MinTime, b.MaxTime)
		}
		*prev, *prevTable = c, t
		if !fn(&c) {
			return errStop
		}
	}
	if minPos != b.MinPos || maxPos != b.MaxPos || !minTime.Equal(b.MinTime) || !maxTime.Equal(b.MaxTime) {
		return corruptf("%s: records span positions %d..%d and times %v..%v, index says %d..%d and %v..%v",
			where, minPos, maxPos, minTime, maxTime, b.MinPos, b.MaxPos, b.MinTime, b.MaxTime)
	}
	return nil
}
