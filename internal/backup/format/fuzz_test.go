package format

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"lifeline/internal/change"
)

// The fuzzers feed hostile bytes to every decoder. A whole object is guarded
// by checksums, which random mutations rarely get past, so each fuzzer also
// hands bytes straight to the decoder behind the checksum: block plaintext,
// header body, index plaintext. The seed corpus is in testdata/fuzz and is
// rebuilt by LIFELINE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus.

// FuzzSegment: a whole object (decoded as whatever it claims to be) and a
// segment block's plaintext.
func FuzzSegment(f *testing.F) {
	for _, s := range segmentSeeds(f) {
		f.Add(s.obj, s.block)
	}
	h := fuzzHeader(Segment)
	f.Fuzz(func(t *testing.T, obj, block []byte) {
		fuzzObject(t, obj)
		fuzzBlock(t, &h, block)
	})
}

// FuzzSnapshot: as FuzzSegment, for snapshots.
func FuzzSnapshot(f *testing.F) {
	for _, s := range snapshotSeeds(f) {
		f.Add(s.obj, s.block)
	}
	h := fuzzHeader(Snapshot)
	f.Fuzz(func(t *testing.T, obj, block []byte) {
		fuzzObject(t, obj)
		fuzzBlock(t, &h, block)
	})
}

// FuzzIndex: a header body (framed with a valid checksum) and an index
// plaintext, decoded against that header if it is valid and against fixed
// segment and snapshot headers otherwise, for blocks spanning [start, end).
func FuzzIndex(f *testing.F) {
	for _, s := range indexSeeds(f) {
		f.Add(s.headerBody, s.index, s.start, s.end)
	}
	seg, snap := fuzzHeader(Segment), fuzzHeader(Snapshot)
	f.Fuzz(func(t *testing.T, body, index []byte, start, end int64) {
		if start < 0 || end < start {
			return // Open never passes these
		}
		headers := []*Header{&seg, &snap}
		for _, k := range []Kind{Segment, Snapshot} {
			h, _, err := decodeHeader(frameHeader(k, body), k)
			checkErr(t, "header", err)
			if err == nil {
				headers = append(headers, &h)
			}
		}
		for _, h := range headers {
			ti, err := decodeIndex(index, h, start, end)
			checkErr(t, "index", err)
			if err == nil {
				// A valid index re-encodes to the same bytes.
				if again := encodeIndex(ti); string(again) != string(index) {
					t.Fatalf("index decoded and re-encoded differs")
				}
			}
		}
	})
}

func checkErr(t *testing.T, what string, err error) {
	if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrKey) {
		t.Fatalf("%s: error wraps no sentinel: %v", what, err)
	}
}

func fuzzObject(t *testing.T, obj []byte) {
	checkObject(t, obj)
	if fixed := repairFraming(obj); fixed != nil {
		checkObject(t, fixed)
	}
}

// repairFraming recomputes the header checksum, the index's checksums and
// plaintext length (if its zstd frame decodes) and the footer checksum of a
// mutated unencrypted object, so that mutations of the header, the footer
// and the compressed index reach the decoders behind those checksums.
func repairFraming(obj []byte) []byte {
	if len(obj) < footerSize+headerFixed {
		return nil
	}
	o := bytes.Clone(obj)
	body := int64(len(o) - footerSize)
	f := o[body:]
	if hl := int64(binary.LittleEndian.Uint32(f[32:36])); hl >= headerFixed && hl <= body {
		binary.LittleEndian.PutUint32(o[hl-4:hl], checksum(o[:hl-4]))
	}
	off, n := binary.LittleEndian.Uint64(f[0:8]), binary.LittleEndian.Uint64(f[8:16])
	if off <= uint64(body) && n == uint64(body)-off {
		stored := o[off:body]
		binary.LittleEndian.PutUint32(f[24:28], checksum(stored))
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true))
		if err == nil {
			if plain, err := dec.DecodeAll(stored, make([]byte, 0, 1<<20)); err == nil {
				binary.LittleEndian.PutUint64(f[16:24], uint64(len(plain)))
				binary.LittleEndian.PutUint32(f[28:32], checksum(plain))
			}
		}
	}
	binary.LittleEndian.PutUint32(f[37:41], checksum(f[:37]))
	return o
}

func checkObject(t *testing.T, obj []byte) {
	ctx := context.Background()
	r := memReader(obj)
	rd, err := Open(ctx, r, int64(len(obj)), testKey)
	checkErr(t, "open", err)
	if err == nil {
		for _, err := range rd.All(ctx) {
			checkErr(t, "all", err)
		}
		if len(rd.Tenants()) > 0 {
			for _, err := range rd.Tenant(ctx, rd.Tenants()[0].Tenant) {
				checkErr(t, "tenant", err)
			}
		}
	}
	checkErr(t, "verify", Verify(ctx, r, int64(len(obj)), testKey))
}

// fuzzBlock parses a block plaintext as the reader does, checking order.
func fuzzBlock(t *testing.T, h *Header, plain []byte) {
	p, err := newBlockParser(h, plain)
	if err != nil {
		return
	}
	var prev, c change.Change
	var pt *change.Table
	for {
		tb, err := p.next(&c)
		if err != nil || tb == nil {
			return
		}
		if pt != nil {
			if checkOrder(h.Kind, &prev, pt, &c, tb) != nil {
				return
			}
		}
		if len(c.Row) != len(tb.Columns) || c.Tenant != p.tenant {
			t.Fatalf("decoded a malformed record: %+v", c)
		}
		prev, pt = c, tb
	}
}

func fuzzHeader(k Kind) Header {
	h := segHeader(100, 199)
	h.Kind, h.Version, h.Compression = k, Version, Zstd
	if k == Snapshot {
		h.First = h.Last
	}
	return h
}

// frameHeader wraps a header body in its fixed framing with a valid checksum.
func frameHeader(k Kind, body []byte) []byte {
	b := append([]byte(k.magic()), 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint16(b[5:], Version)
	binary.LittleEndian.PutUint32(b[7:], uint32(len(body)))
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, checksum(b))
}

type objectSeed struct{ obj, block []byte }

type indexSeed struct {
	headerBody, index []byte
	start, end        int64
}

// parts takes an unencrypted object apart for seeding: its header body, its
// index plaintext and layout, and its first block's plaintext.
func parts(t testing.TB, obj []byte) (headerBody, index, block []byte, start, end int64) {
	ctx := context.Background()
	rd, err := Open(ctx, memReader(obj), int64(len(obj)), nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := decodeFooter(obj[len(obj)-footerSize:], int64(len(obj)))
	if err != nil {
		t.Fatal(err)
	}
	headerBody = obj[11 : f.headerLen-4]
	if index, err = rd.unpack(obj[f.indexOff:f.indexOff+f.indexLen], f.indexCRC, f.indexPlainCRC, f.indexPlain, gcmNonceIndex, nil, "index"); err != nil {
		t.Fatal(err)
	}
	if ts := rd.Tenants(); len(ts) > 0 {
		b := ts[0].Blocks[0]
		if block, err = rd.unpack(obj[b.Offset:b.Offset+b.Length], b.StoredCRC, b.PlainCRC, b.PlainLength, b.Seq, nil, "block"); err != nil {
			t.Fatal(err)
		}
	}
	return headerBody, index, block, f.headerLen, f.indexOff
}

func segmentSeeds(t testing.TB) []objectSeed {
	var seeds []objectSeed
	for i, n := range []int{1, 5, 40} {
		cs := genChanges(uint64(100+i), 100, n, 1+n/10)
		// Block plaintext seeds are parsed against fuzzHeader (positions 100..199).
		obj, _ := writeSegment(t, cs, Options{BlockSize: minBlockSize})
		_, _, block, _, _ := parts(t, obj)
		seeds = append(seeds, objectSeed{obj, block})
		enc, _ := writeSegment(t, cs, Options{BlockSize: minBlockSize, Key: testKey, KeyID: "k"})
		seeds = append(seeds, objectSeed{enc, block})
	}
	return seeds
}

func snapshotSeeds(t testing.TB) []objectSeed {
	var seeds []objectSeed
	for i, n := range []int{0, 3, 40} {
		rows := withAbsent(genSnapshot(uint64(200+i), 199, n, 1+n/10))
		obj, _ := writeSnapshot(t, 199, rows, Options{BlockSize: minBlockSize})
		_, _, block, _, _ := parts(t, obj)
		seeds = append(seeds, objectSeed{obj, block})
		enc, _ := writeSnapshot(t, 199, rows, Options{BlockSize: minBlockSize, Key: testKey, KeyID: "k"})
		seeds = append(seeds, objectSeed{enc, block})
	}
	return seeds
}

func indexSeeds(t testing.TB) []indexSeed {
	var seeds []indexSeed
	for _, s := range append(segmentSeeds(t), snapshotSeeds(t)...) {
		rd, err := Open(context.Background(), memReader(s.obj), int64(len(s.obj)), testKey)
		if err != nil {
			t.Fatal(err)
		}
		if rd.Header().Encrypted {
			continue
		}
		body, index, _, start, end := parts(t, s.obj)
		seeds = append(seeds, indexSeed{body, index, start, end})
	}
	return seeds
}

// TestWriteFuzzCorpus rebuilds the committed seed corpus.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("LIFELINE_FUZZ_CORPUS") == "" {
		t.Skip("set LIFELINE_FUZZ_CORPUS=1 to rewrite testdata/fuzz seeds")
	}
	write := func(fuzzer string, i int, args ...any) {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		s := "go test fuzz v1\n"
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				s += fmt.Sprintf("[]byte(%q)\n", v)
			case int64:
				s += fmt.Sprintf("int64(%d)\n", v)
			}
		}
		// Seeds of older versions stay: they are the old readers' fixtures.
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-v%d-%02d", Version, i)), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range segmentSeeds(t) {
		write("FuzzSegment", i, s.obj, s.block)
	}
	for i, s := range snapshotSeeds(t) {
		write("FuzzSnapshot", i, s.obj, s.block)
	}
	for i, s := range indexSeeds(t) {
		write("FuzzIndex", i, s.headerBody, s.index, s.start, s.end)
	}
}

// The fuzz harness's repair leaves an intact object unchanged, so repaired
// mutants differ from valid objects only where the fuzzer changed them.
func TestRepairFramingIdentity(t *testing.T) {
	t.Parallel()
	for _, s := range append(segmentSeeds(t), snapshotSeeds(t)...) {
		if !bytes.Equal(repairFraming(s.obj), s.obj) {
			t.Fatal("repairFraming changed an intact object")
		}
	}
}

// The committed seed objects are valid objects, of the current format and of
// every older one (the old readers' fixtures), so a format change that
// forgets to rebuild the corpus, or breaks reading older objects, is noticed.
func TestFuzzCorpusCurrent(t *testing.T) {
	t.Parallel()
	for _, fuzzer := range []string{"FuzzSegment", "FuzzSnapshot"} {
		versions := map[uint16]bool{}
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzer, "seed-*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no seed corpus (%v)", fuzzer, err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(data), "\n")
			obj, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := Verify(context.Background(), memReader([]byte(obj)), int64(len(obj)), testKey); err != nil {
				t.Fatalf("%s is not a valid object (rebuild the corpus: LIFELINE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus): %v", f, err)
			}
			versions[binary.LittleEndian.Uint16([]byte(obj)[5:7])] = true
		}
		for v := uint16(1); v <= Version; v++ {
			if !versions[v] {
				t.Errorf("%s: no seed object of format version %d", fuzzer, v)
			}
		}
	}
}
