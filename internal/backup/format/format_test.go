package format

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
)

func TestSegmentRoundTrip(t *testing.T) {
	t.Parallel()
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			t.Parallel()
			var opt Options
			var key []byte
			if enc {
				opt, key = Options{Key: testKey, KeyID: "k1", BlockSize: 4096}, testKey
			}
			in := genChanges(7, 1001, 3000, 40)
			obj, sum := writeSegment(t, in, opt)
			if sum.Records != 3000 || len(sum.Tenants) != 40 {
				t.Fatalf("summary: %d records, %d tenants", sum.Records, len(sum.Tenants))
			}
			h, out := readAll(t, obj, key)
			if h.Kind != Segment || h.Version != Version || h.First != 1001 || h.Last != 4000 || h.Source != 1<<40+4000 || h.Product != "tracker" ||
				h.Encrypted != enc || !h.FirstTime.Equal(in[0].Time) || !h.LastTime.Equal(in[len(in)-1].Time) ||
				!h.Created.Equal(baseTime.Add(time.Hour)) || len(h.Tables) != 3 || h.Compression != Zstd {
				t.Fatalf("header: %+v", h)
			}
			if enc && h.KeyID != "k1" {
				t.Fatalf("key id %q", h.KeyID)
			}
			if len(out) != len(in) {
				t.Fatalf("read %d changes, wrote %d", len(out), len(in))
			}
			byPos := map[uint64]*change.Change{}
			for i := range in {
				byPos[in[i].Pos] = &in[i]
			}
			for i := range out {
				if d := sameChange(byPos[out[i].Pos], &out[i]); d != "" {
					t.Fatalf("position %d: %s", out[i].Pos, d)
				}
				delete(byPos, out[i].Pos)
				if i > 0 && out[i-1].Tenant == out[i].Tenant {
					if c, _ := compareRows(&out[i-1], tableOf(out[i-1].Table), &out[i], tableOf(out[i].Table)); c >= 0 {
						t.Fatalf("record %d out of order", i)
					}
				} else if i > 0 && out[i-1].Tenant >= out[i].Tenant {
					t.Fatalf("tenants out of order at %d", i)
				}
			}
			if err := Verify(context.Background(), memReader(obj), int64(len(obj)), key); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			t.Parallel()
			var opt Options
			var key []byte
			if enc {
				opt, key = Options{Key: testKey, KeyID: "k1"}, testKey
			}
			rows := genSnapshot(3, 5000, 4000, 25)
			obj, sum := writeSnapshot(t, 5000, rows, opt)
			if sum.Records != uint64(len(rows)) {
				t.Fatalf("summary %d records, want %d", sum.Records, len(rows))
			}
			h, out := readAll(t, obj, key)
			if h.Kind != Snapshot || h.First != 5000 || h.Last != 5000 || !h.FirstTime.Equal(baseTime) {
				t.Fatalf("header %+v", h)
			}
			if len(out) != len(rows) {
				t.Fatalf("read %d rows, wrote %d", len(out), len(rows))
			}
			for i := range rows {
				if d := sameChange(&rows[i], &out[i]); d != "" {
					t.Fatalf("row %d: %s", i, d)
				}
			}
			if err := Verify(context.Background(), memReader(obj), int64(len(obj)), key); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestEmptySnapshot(t *testing.T) {
	t.Parallel()
	obj, sum := writeSnapshot(t, 0, nil, Options{})
	if sum.Records != 0 || len(sum.Tenants) != 0 {
		t.Fatalf("summary %+v", sum)
	}
	h, out := readAll(t, obj, nil)
	if len(out) != 0 || h.First != 0 {
		t.Fatalf("got %d rows, header %+v", len(out), h)
	}
	if err := Verify(context.Background(), memReader(obj), int64(len(obj)), nil); err != nil {
		t.Fatal(err)
	}
}

// Every value kind at its edges comes back bit for bit, including a value
// of every kind in the primary key.
func TestValuesLossless(t *testing.T) {
	t.Parallel()
	tbl := change.Table{Name: "zoo", Columns: []change.Column{{Name: "k"}, {Name: "v"}, {Name: "site"}}, PrimaryKey: []int{0}, Tenant: 2}
	zoo := valueZoo()
	var cs []change.Change
	for i, v := range zoo {
		cs = append(cs, change.Change{
			Pos: uint64(i + 1), Tx: uint64(i), TxEnd: true, Time: baseTime, Tenant: "t", Table: "zoo", Op: change.Insert,
			Row: []change.Value{v, v, {Kind: change.Text, Bytes: []byte("t")}},
		})
	}
	// Unusual instants survive too.
	cs[0].Time = time.Time{}
	cs[1].Time = time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC)
	cs[2].Time = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", 3600))
	h := Header{Product: "p", First: 1, Last: uint64(len(zoo)), Tables: []change.Table{tbl}}
	var buf bytes.Buffer
	if _, err := WriteSegment(&buf, h, cs, Options{}); err != nil {
		t.Fatal(err)
	}
	_, out := readAll(t, buf.Bytes(), nil)
	got := map[uint64]change.Change{}
	for _, c := range out {
		got[c.Pos] = c
	}
	for _, c := range cs {
		o := got[c.Pos]
		if d := sameChange(&c, &o); d != "" {
			t.Fatalf("position %d: %s", c.Pos, d)
		}
		for i, v := range c.Row {
			w := o.Row[i]
			if v.Kind == change.Float && math.Float64bits(v.Float) != math.Float64bits(w.Float) {
				t.Fatalf("float bits %x became %x", math.Float64bits(v.Float), math.Float64bits(w.Float))
			}
			if (v.Kind == change.Text || v.Kind == change.Blob || v.Kind == change.PG) && w.Bytes == nil {
				t.Fatalf("empty %v decoded as nil bytes", v.Kind)
			}
		}
	}
	if !got[1].Time.IsZero() || got[1].Time != (time.Time{}) {
		t.Fatalf("zero time became %v", got[1].Time)
	}
}

func TestLargeValue(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB value")
	}
	rng := rand.New(rand.NewPCG(1, 1))
	big := make([]byte, 64<<20)
	for i := 0; i < len(big); i += 8 {
		binary.LittleEndian.PutUint64(big[i:], rng.Uint64()&0x0f0f0f0f0f0f0f0f) // compressible, not trivially
	}
	big[0], big[len(big)-1] = 0, 0
	rows := []change.Change{
		{Pos: 1, Tx: 1, Time: baseTime, Tenant: "a", Table: "links", Op: change.Insert,
			Row: []change.Value{{Kind: change.Text, Bytes: []byte("a")}, {Kind: change.Int, Int: 1}, {Kind: change.Blob, Bytes: big}}},
		{Pos: 2, Tx: 1, TxEnd: true, Time: baseTime, Tenant: "a", Table: "links", Op: change.Insert,
			Row: []change.Value{{Kind: change.Text, Bytes: []byte("a")}, {Kind: change.Int, Int: 2}, {Kind: change.Null}}},
		// Zeros compress close to zstd's limit, which the reader's
		// plausibility bound must still admit.
		{Pos: 3, Tx: 2, TxEnd: true, Time: baseTime, Tenant: "b", Table: "links", Op: change.Insert,
			Row: []change.Value{{Kind: change.Text, Bytes: []byte("b")}, {Kind: change.Int, Int: 2}, {Kind: change.Blob, Bytes: make([]byte, 32<<20)}}},
	}
	obj, sum := writeSegment(t, rows, Options{Key: testKey, KeyID: "k"})
	if sum.Blocks != 3 {
		t.Fatalf("a row larger than the block size gets a block of its own: %d blocks", sum.Blocks)
	}
	_, out := readAll(t, obj, testKey)
	if len(out) != 3 || !bytes.Equal(out[0].Row[2].Bytes, big) || len(out[2].Row[2].Bytes) != 32<<20 {
		t.Fatal("64 MiB blob did not round-trip")
	}
}

// Reading 1 of 100 tenants reads a small fraction of the object: the
// footer, the header, the index and that tenant's blocks.
func TestSelectiveRead(t *testing.T) {
	t.Parallel()
	in := genChanges(11, 1, 40000, 100)
	obj, sum := writeSegment(t, in, Options{Key: testKey, KeyID: "k"})
	cr := &countingReader{r: memReader(obj)}
	ctx := context.Background()
	rd, err := Open(ctx, cr, int64(len(obj)), testKey)
	if err != nil {
		t.Fatal(err)
	}
	if cr.calls.Load() != 3 {
		t.Fatalf("Open made %d reads, want 3 (footer, header, index)", cr.calls.Load())
	}
	want := 0
	for _, c := range in {
		if c.Tenant == "site-042" {
			want++
		}
	}
	n := 0
	for c, err := range rd.Tenant(ctx, "site-042") {
		if err != nil {
			t.Fatal(err)
		}
		if c.Tenant != "site-042" {
			t.Fatalf("got tenant %q", c.Tenant)
		}
		n++
	}
	if n != want || want == 0 {
		t.Fatalf("read %d changes of site-042, want %d", n, want)
	}
	share := float64(cr.bytes.Load()) / float64(len(obj))
	t.Logf("object %d bytes (%d blocks, %.1fx compression); reading 1 of 100 tenants read %d bytes in %d requests (%.2f%%)",
		len(obj), sum.Blocks, float64(sum.PlainBytes)/float64(sum.StoredBytes), cr.bytes.Load(), cr.calls.Load(), 100*share)
	if share > 0.03 {
		t.Fatalf("read %.1f%% of the object for 1%% of the tenants", 100*share)
	}
	// An absent tenant costs nothing beyond Open.
	before := cr.bytes.Load()
	for range rd.Tenant(ctx, "nobody") {
		t.Fatal("absent tenant yielded")
	}
	if cr.bytes.Load() != before {
		t.Fatal("absent tenant read bytes")
	}
}

func TestConcurrentTenantReads(t *testing.T) {
	t.Parallel()
	in := genChanges(5, 1, 5000, 20)
	obj, _ := writeSegment(t, in, Options{Key: testKey, KeyID: "k", BlockSize: 4096})
	rd, err := Open(context.Background(), memReader(obj), int64(len(obj)), testKey)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var total sync.Map
	for _, ti := range rd.Tenants() {
		wg.Go(func() {
			n := 0
			for _, err := range rd.Tenant(context.Background(), ti.Tenant) {
				if err != nil {
					t.Error(err)
					return
				}
				n++
			}
			if uint64(n) != ti.Records() {
				t.Errorf("tenant %s: %d records, index says %d", ti.Tenant, n, ti.Records())
			}
			total.Store(ti.Tenant, n)
		})
	}
	wg.Wait()
}

func TestEarlyStop(t *testing.T) {
	t.Parallel()
	obj, _ := writeSegment(t, genChanges(2, 1, 2000, 3), Options{BlockSize: 4096})
	rd, err := Open(context.Background(), memReader(obj), int64(len(obj)), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range rd.All(context.Background()) {
		n++
		if n == 10 {
			break
		}
	}
	for range rd.Tenant(context.Background(), rd.Tenants()[1].Tenant) {
		break
	}
	if n != 10 {
		t.Fatal(n)
	}
}

func TestCanceled(t *testing.T) {
	t.Parallel()
	obj, _ := writeSegment(t, genChanges(2, 1, 500, 3), Options{})
	rd, err := Open(context.Background(), memReader(obj), int64(len(obj)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, err := range rd.All(ctx) {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	}
}

func TestDeterministicBytes(t *testing.T) {
	t.Parallel()
	in := genChanges(9, 1, 700, 5)
	opt := func() Options { return Options{Key: testKey, KeyID: "k", Rand: bytes.NewReader(make([]byte, 64))} }
	a, _ := writeSegment(t, in, opt())
	b, _ := writeSegment(t, in, opt())
	if !bytes.Equal(a, b) {
		t.Fatal("same input and salt gave different bytes")
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	obj, _ := writeSegment(t, genChanges(1, 1, 300, 4), Options{Key: testKey, KeyID: "prod-2026"})
	wrong := bytes.Repeat([]byte{7}, 32)
	for name, key := range map[string][]byte{"none": nil, "wrong": wrong, "short": testKey[:16]} {
		_, err := Open(ctx, memReader(obj), int64(len(obj)), key)
		if !errors.Is(err, ErrKey) {
			t.Fatalf("%s key: Open gave %v, want ErrKey", name, err)
		}
		if err := Verify(ctx, memReader(obj), int64(len(obj)), key); !errors.Is(err, ErrKey) {
			t.Fatalf("%s key: Verify gave %v, want ErrKey", name, err)
		}
		if !strings.Contains(err.Error(), "prod-2026") || fault.HintOf(err) == "" || fault.CodeOf(err) != fault.Refused {
			t.Fatalf("error should name the key id and carry a hint: %v", err)
		}
	}
	// The ciphertext holds no plaintext.
	if bytes.Contains(obj, []byte("site-00")) || bytes.Contains(obj, []byte("lorem")) {
		t.Fatal("plaintext visible in an encrypted object")
	}
	// An unencrypted object ignores a key.
	plain, _ := writeSegment(t, genChanges(1, 1, 300, 4), Options{})
	if err := Verify(ctx, memReader(plain), int64(len(plain)), testKey); err != nil {
		t.Fatal(err)
	}
}

func TestWriterOptions(t *testing.T) {
	t.Parallel()
	cs := genChanges(1, 1, 10, 2)
	for name, opt := range map[string]Options{
		"key without id":  {Key: testKey},
		"id without key":  {KeyID: "k"},
		"short key":       {Key: testKey[:10], KeyID: "k"},
		"tiny block":      {BlockSize: 100},
		"huge block size": {BlockSize: 1 << 30},
	} {
		_, err := WriteSegment(&bytes.Buffer{}, segHeader(1, 10), cs, opt)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

func TestVersionErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	obj, _ := writeSegment(t, genChanges(1, 1, 50, 2), Options{})
	// A future footer.
	f := bytes.Clone(obj)
	binary.LittleEndian.PutUint16(f[len(f)-7:], Version+1)
	if _, err := Open(ctx, memReader(f), int64(len(f)), nil); !errors.Is(err, ErrVersion) {
		t.Fatalf("footer version %d: %v", Version+1, err)
	}
	// A future header behind a current footer.
	h := bytes.Clone(obj)
	binary.LittleEndian.PutUint16(h[5:7], 9)
	if _, err := Open(ctx, memReader(h), int64(len(h)), nil); !errors.Is(err, ErrVersion) {
		t.Fatalf("header version 9: %v", err)
	}
}

// The writers refuse what would make an object that cannot be trusted.
func TestSegmentWriterRefuses(t *testing.T) {
	t.Parallel()
	base := func() []change.Change { return genChanges(4, 10, 20, 3) }
	cases := map[string]struct {
		h   Header
		mod func([]change.Change) []change.Change
	}{
		"empty":         {segHeader(10, 29), func(cs []change.Change) []change.Change { return nil }},
		"gap":           {segHeader(10, 29), func(cs []change.Change) []change.Change { return append(cs[:5], cs[6:]...) }},
		"duplicate":     {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[3].Pos = cs[4].Pos; return cs }},
		"gap in header": {segHeader(10, 30), func(cs []change.Change) []change.Change { return cs }},
		"outside range": {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[0].Pos = 9; return cs }},
		"position zero": {segHeader(0, 19), func(cs []change.Change) []change.Change { return cs }},
		"unknown table": {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[2].Table = "nope"; return cs }},
		"short row":     {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[2].Row = cs[2].Row[:1]; return cs }},
		"snapshot op":   {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[2].Op = change.Snapshot; return cs }},
		"bad kind":      {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[2].Row[0].Kind = 9; return cs }},
		"empty tenant":  {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[2].Tenant = ""; return cs }},
		"no product":    {Header{First: 10, Last: 29, Tables: testTables()}, func(cs []change.Change) []change.Change { return cs }},
		"split tx":      {segHeader(10, 29), func(cs []change.Change) []change.Change { cs[5].TxEnd = false; cs[6].Tx = 1; return cs }},
		"duplicate shape": {Header{Product: "p", First: 10, Last: 29, Tables: append(testTables(), testTables()[0])},
			func(cs []change.Change) []change.Change { return cs }},
		"bad tenant column": {Header{Product: "p", First: 10, Last: 29, Tables: []change.Table{{Name: "x", Columns: []change.Column{{Name: "a"}}, Tenant: 3}}},
			func(cs []change.Change) []change.Change { return cs }},
	}
	for name, tc := range cases {
		var buf bytes.Buffer
		_, err := WriteSegment(&buf, tc.h, tc.mod(base()), Options{})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestSnapshotWriterRefuses(t *testing.T) {
	t.Parallel()
	rows := genSnapshot(8, 100, 50, 3)
	cases := map[string]func([]change.Change) []change.Change{
		"out of order":    func(r []change.Change) []change.Change { r[3], r[4] = r[4], r[3]; return r },
		"tenant order":    func(r []change.Change) []change.Change { return append(r[len(r)-1:], r...) },
		"repeated key":    func(r []change.Change) []change.Change { r = append(r[:1], r...); r[1].Pos++; return r },
		"change op":       func(r []change.Change) []change.Change { r[2].Op = change.Update; return r },
		"after position":  func(r []change.Change) []change.Change { r[2].Pos = 101; return r },
		"unknown table":   func(r []change.Change) []change.Change { r[2].Table = "x"; return r },
		"wrong row width": func(r []change.Change) []change.Change { r[2].Row = append(r[2].Row, change.Value{}); return r },
	}
	for name, mod := range cases {
		in := mod(append([]change.Change(nil), rows...))
		var buf bytes.Buffer
		h := Header{Product: "tracker", First: 100, Last: 100, Tables: testTables()}
		w, err := NewSnapshotWriter(&buf, h, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var addErr error
		for i := range in {
			if addErr = w.Add(&in[i]); addErr != nil {
				break
			}
		}
		if !errors.Is(addErr, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, addErr)
			continue
		}
		if _, err := w.Close(); err == nil {
			t.Errorf("%s: Close after a refused row succeeded", name)
		}
	}
	// Snapshot header rules.
	for name, h := range map[string]Header{
		"two positions": {Product: "p", First: 1, Last: 2},
		"two times":     {Product: "p", First: 2, Last: 2, FirstTime: baseTime, LastTime: baseTime.Add(1)},
	} {
		if _, err := NewSnapshotWriter(&bytes.Buffer{}, h, Options{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// A segment with a repeated position and a missing one, forced past the
// writer, is caught by Verify; one with a position missing is caught at Open.
func TestVerifyFindsForcedGaps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	force := func(cs []change.Change, first, last uint64) []byte {
		h := segHeader(first, last)
		h.Kind = Segment
		h.FirstTime, h.LastTime = cs[0].Time, cs[len(cs)-1].Time
		var buf bytes.Buffer
		ow, err := newObjectWriter(&buf, h, Options{})
		if err != nil {
			t.Fatal(err)
		}
		sortObject(Segment, cs)
		for i := range cs {
			if err := ow.add(&cs[i]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ow.close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	// Position 6 twice (in different tenants), 7 missing.
	cs := genChanges(3, 1, 10, 2)
	cs[6].Pos = 6
	cs[6].Tenant, cs[5].Tenant = "site-a", "site-b"
	cs[6].Row[tableOf(cs[6].Table).Tenant].Bytes = []byte("site-a")
	obj := force(cs, 1, 10)
	err := Verify(ctx, memReader(obj), int64(len(obj)), nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "position 6 appears twice") {
		t.Fatalf("duplicate: got %v", err)
	}
	// Position 4 missing: the index total does not cover the range.
	cs = genChanges(3, 1, 10, 2)
	obj = force(append(cs[:3:3], cs[4:]...), 1, 10)
	err = Verify(ctx, memReader(obj), int64(len(obj)), nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "9 records for positions 1..10") {
		t.Fatalf("gap: got %v", err)
	}
}

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, errors.New("disk full")
	}
	w.left -= len(p)
	return len(p), nil
}

// A failing io.Writer fails the object, at whatever byte it fails.
func TestWriteErrors(t *testing.T) {
	t.Parallel()
	cs := genChanges(6, 1, 300, 5)
	obj, _ := writeSegment(t, cs, Options{BlockSize: minBlockSize})
	for _, at := range []int{0, 10, len(obj) / 2, len(obj) - 1} {
		_, err := WriteSegment(&failingWriter{left: at}, segHeader(1, 300), cs, Options{BlockSize: minBlockSize})
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("failing at byte %d: %v", at, err)
		}
	}
}

// The summary's per-tenant figures agree with what a reader finds.
func TestSummaryMatchesIndex(t *testing.T) {
	t.Parallel()
	in := genChanges(12, 1, 2000, 7)
	obj, sum := writeSegment(t, in, Options{BlockSize: 2048})
	rd, err := Open(context.Background(), memReader(obj), int64(len(obj)), nil)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]uint64{}
	for _, c := range in {
		per[c.Tenant]++
	}
	if len(sum.Tenants) != len(per) || len(rd.Tenants()) != len(per) {
		t.Fatalf("%d tenants in summary, %d in index, want %d", len(sum.Tenants), len(rd.Tenants()), len(per))
	}
	var blocks int
	for i, ti := range sum.Tenants {
		if ti.Records() != per[ti.Tenant] || rd.Tenants()[i].Records() != per[ti.Tenant] || ti.Bytes() != rd.Tenants()[i].Bytes() {
			t.Fatalf("tenant %s: summary %d, index %d, want %d", ti.Tenant, ti.Records(), rd.Tenants()[i].Records(), per[ti.Tenant])
		}
		lo, hi := ti.PosRange()
		if lo < 1 || hi > 2000 || lo > hi {
			t.Fatalf("tenant %s: positions %d..%d", ti.Tenant, lo, hi)
		}
		if a, b := ti.TimeRange(); a.After(b) {
			t.Fatalf("tenant %s: times %v..%v", ti.Tenant, a, b)
		}
		blocks += len(ti.Blocks)
	}
	if blocks != sum.Blocks || sum.Records != 2000 || sum.PlainBytes <= sum.StoredBytes {
		t.Fatalf("summary %d blocks (counted %d), %d records, %d plain, %d stored", sum.Blocks, blocks, sum.Records, sum.PlainBytes, sum.StoredBytes)
	}
}
