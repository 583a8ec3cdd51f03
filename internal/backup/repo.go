// Package backup keeps the backup repository: it ships each product's
// captured changes into immutable, tenant-indexed objects in a blob store,
// takes the snapshots they start from, and reports and verifies what the
// repository holds. The object format is in backup/format; restore reads it.
package backup

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/fault"
	"lifeline/internal/state"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Repo is the backup repository: objects in a blob store, and a catalog of
// them in the state store. The objects are the truth; the catalog is a cache
// that Rescan rebuilds.
type Repo struct {
	Blobs blob.Store
	State *state.Store
	// Key seals objects with AES-256-GCM when set (32 bytes); KeyID names it.
	Key   []byte
	KeyID string
	// RetainFor is written on every object as its retention date (S3 Object
	// Lock), so nothing inside the window can be deleted. 0: none.
	RetainFor time.Duration
	Now       func() time.Time

	mu    sync.Mutex
	swept map[string]time.Time // when Maintain last swept each product (sweepDue)
}

// OpenRepo prepares the catalog tables and returns the repository.
func OpenRepo(ctx context.Context, r *Repo) (*Repo, error) {
	if r.Now == nil {
		r.Now = time.Now
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := r.State.Migrate(ctx, "backup", sub); err != nil {
		return nil, err
	}
	return r, nil
}

// Object is one object of the repository, as the catalog knows it.
type Object struct {
	Key        string      `json:"key"`
	Product    string      `json:"product"`
	Kind       format.Kind `json:"-"`
	KindName   string      `json:"kind"`
	First      uint64      `json:"first"`
	Last       uint64      `json:"last"`
	Source     uint64      `json:"source"` // the source's position of Last (SQLite seq, PostgreSQL LSN)
	FirstTime  time.Time   `json:"first_time"`
	LastTime   time.Time   `json:"last_time"`
	Size       int64       `json:"size"`
	PlainBytes int64       `json:"plain_bytes"`
	Records    uint64      `json:"records"`
	Tenants    int         `json:"tenants"`
	Created    time.Time   `json:"created"`
}

// Object keys: <product>/snapshots/<pos>.snap and
// <product>/segments/<first>-<last>.seg, zero-padded so they list in order.
func snapshotKey(product string, pos uint64) string {
	return fmt.Sprintf("%s/snapshots/%020d.snap", product, pos)
}

func segmentKey(product string, first, last uint64) string {
	return fmt.Sprintf("%s/segments/%020d-%020d.seg", product, first, last)
}

// parseKey recognises an object key of product, or reports ok=false for
// anything else found under its prefix.
func parseKey(product, key string) (kind format.Kind, first, last uint64, ok bool) {
	rest, found := strings.CutPrefix(key, product+"/")
	if !found {
		return 0, 0, 0, false
	}
	if name, ok := strings.CutPrefix(rest, "snapshots/"); ok {
		p, err := strconv.ParseUint(strings.TrimSuffix(name, ".snap"), 10, 64)
		return format.Snapshot, p, p, err == nil && strings.HasSuffix(name, ".snap")
	}
	if name, ok := strings.CutPrefix(rest, "segments/"); ok && strings.HasSuffix(name, ".seg") {
		a, b, found := strings.Cut(strings.TrimSuffix(name, ".seg"), "-")
		f, err1 := strconv.ParseUint(a, 10, 64)
		l, err2 := strconv.ParseUint(b, 10, 64)
		return format.Segment, f, l, found && err1 == nil && err2 == nil && f <= l
	}
	return 0, 0, 0, false
}

// put stores one finished object and records it in the catalog, if f is
// not nil only while f's lease is held. An object that already exists under
// the key (a shipper that crashed after the upload and before the catalog)
// is adopted if it is the same range. body yields the object's sum.Size
// bytes, as its writer counted them.
func (r *Repo) put(ctx context.Context, key string, body io.Reader, sum format.Summary, f *fence) error {
	var retain time.Time
	if r.RetainFor > 0 {
		retain = r.Now().Add(r.RetainFor)
	}
	err := r.Blobs.Put(ctx, key, body, sum.Size, retain)
	if errors.Is(err, blob.ErrExists) {
		_, err = r.adopt(ctx, sum.Header.Product, key, f)
		return err
	}
	if err != nil {
		return err
	}
	return r.record(ctx, objectOf(key, sum.Header, sum.Size, sum.PlainBytes, sum.Records, len(sum.Tenants)), f)
}

func objectOf(key string, h format.Header, size, plain int64, records uint64, tenants int) Object {
	return Object{Key: key, Product: h.Product, Kind: h.Kind, KindName: h.Kind.String(), First: h.First, Last: h.Last,
		Source: h.Source, FirstTime: h.FirstTime, LastTime: h.LastTime, Size: size, PlainBytes: plain,
		Records: records, Tenants: tenants, Created: h.Created}
}

// adopt reads an object's header and index from the blob store and records
// it in the catalog (fenced by f, if not nil).
func (r *Repo) adopt(ctx context.Context, product, key string, f *fence) (Object, error) {
	info, err := r.Blobs.Stat(ctx, key)
	if err != nil {
		return Object{}, err
	}
	rd, err := r.open(ctx, key, info.Size)
	if err != nil {
		return Object{}, err
	}
	h := rd.Header()
	if h.Product != product {
		return Object{}, fault.New(fault.Refused, "the repository folder mixes products; check `backups:` in lifeline.yaml",
			"object %s belongs to product %q, not %q", key, h.Product, product)
	}
	var plain int64
	var records uint64
	for _, t := range rd.Tenants() {
		records += t.Records()
		for _, b := range t.Blocks {
			plain += b.PlainLength
		}
	}
	o := objectOf(key, h, info.Size, plain, records, len(rd.Tenants()))
	return o, r.record(ctx, o, f)
}

// open reads an object's footer, header and index.
func (r *Repo) open(ctx context.Context, key string, size int64) (*format.Reader, error) {
	rd, err := format.Open(ctx, blobRange{r.Blobs, key}, size, r.Key)
	if err != nil {
		return nil, fault.Wrap(err, fault.CodeOf(err), fault.HintOf(err), "backup object %s", key)
	}
	return rd, nil
}

// blobRange reads byte ranges of one object: the seam between the format's
// reader and the blob store.
type blobRange struct {
	store blob.Store
	key   string
}

func (b blobRange) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	rc, err := b.store.Get(ctx, b.key, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, n))
}

// record adds o to the catalog, fenced by f when it is set: a shipper or
// maintenance pass that lost its lease records nothing, so the catalog
// (and the cursor it gives) never holds two holders' versions of the same
// positions.
func (r *Repo) record(ctx context.Context, o Object, f *fence) error {
	return r.change(ctx, f, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, r.State.Rebind(`INSERT INTO backup_objects
			(key, product, kind, first_pos, last_pos, source_pos, first_time, last_time, size, plain_bytes, records, tenants, created)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (key) DO NOTHING`),
			o.Key, o.Product, o.Kind.String(), int64(o.First), int64(o.Last), int64(o.Source), micros(o.FirstTime), micros(o.LastTime),
			o.Size, o.PlainBytes, int64(o.Records), o.Tenants, micros(o.Created))
		return err
	})
}

// change runs fn (if set) in one state-store transaction that first checks
// and renews f's lease (if f is set): the change commits only while its
// process holds the product's lease. It returns fence.check's fault when
// the lease was lost.
func (r *Repo) change(ctx context.Context, f *fence, fn func(*sql.Tx) error) error {
	tx, err := r.State.DB().BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("backup catalog: %w", err)
	}
	defer tx.Rollback()
	if f != nil {
		if err := f.check(ctx, r, tx); err != nil {
			return err
		}
	}
	if fn != nil {
		err = fn(tx)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("backup catalog: %w", err)
	}
	return nil
}

// Objects lists a product's objects from the catalog, snapshots and
// segments together, by last position.
func (r *Repo) Objects(ctx context.Context, product string) ([]Object, error) {
	rows, err := r.State.DB().QueryContext(ctx, r.State.Rebind(`SELECT key, product, kind, first_pos, last_pos, source_pos,
		first_time, last_time, size, plain_bytes, records, tenants, created
		FROM backup_objects WHERE product = ? ORDER BY last_pos, kind`), product)
	if err != nil {
		return nil, fmt.Errorf("backup catalog: %w", err)
	}
	defer rows.Close()
	var out []Object
	for rows.Next() {
		var o Object
		var first, last, src, ft, lt, records, created int64
		if err := rows.Scan(&o.Key, &o.Product, &o.KindName, &first, &last, &src, &ft, &lt, &o.Size, &o.PlainBytes, &records, &o.Tenants, &created); err != nil {
			return nil, fmt.Errorf("backup catalog: %w", err)
		}
		o.First, o.Last, o.Source, o.Records = uint64(first), uint64(last), uint64(src), uint64(records)
		o.FirstTime, o.LastTime, o.Created = fromMicros(ft), fromMicros(lt), fromMicros(created)
		o.Kind = format.Segment
		if o.KindName == format.Snapshot.String() {
			o.Kind = format.Snapshot
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// rescan brings the catalog up to date with the objects of product in the
// blob store, reading the header and index of each object it did not know
// and may adopt (see adoptable), each recorded under f. It returns the keys
// found under the product's prefix that are not repository objects.
//
// Only the lease holder adopts: an adoption continues the catalog, and one
// made beside the holder's own record of the same positions (its fence
// serialises the two) could leave two objects for them.
func (r *Repo) rescan(ctx context.Context, product string, f *fence) (strays []string, err error) {
	objs, err := r.Objects(ctx, product)
	if err != nil {
		return nil, err
	}
	var unknown []Object
	strays, err = r.uncatalogued(ctx, product, objs, func(o Object, _ blob.Info) { unknown = append(unknown, o) })
	if err != nil {
		return strays, err
	}
	for _, u := range adoptions(objs, unknown) {
		if _, err := r.adopt(ctx, product, u.Key, f); err != nil {
			return strays, err
		}
	}
	return strays, nil
}

// Unrecorded lists, without changing anything, product's objects in the
// blob store that the catalog lacks: those the next rescan (`backup run`)
// records (an upload or merge whose recording a crash cut short), and
// those it never will (superseded: maintenance deletes them, see sweep.go);
// and the keys under the product's prefix that are not repository objects.
func (r *Repo) Unrecorded(ctx context.Context, product string) (adoptable, superseded []Object, strays []string, err error) {
	objs, err := r.Objects(ctx, product)
	if err != nil {
		return nil, nil, nil, err
	}
	var unknown []Object
	strays, err = r.uncatalogued(ctx, product, objs, func(o Object, info blob.Info) {
		o.Size = info.Size
		unknown = append(unknown, o)
	})
	if err != nil {
		return nil, nil, strays, err
	}
	adoptable = adoptions(objs, unknown)
	for _, u := range unknown {
		if !slices.ContainsFunc(adoptable, func(a Object) bool { return a.Key == u.Key }) {
			superseded = append(superseded, u)
		}
	}
	return adoptable, superseded, strays, nil
}

// uncatalogued lists product's objects in the blob store: fn gets each one
// missing from the catalog objs (kind and positions from its name), and the
// keys that are not repository objects are returned.
func (r *Repo) uncatalogued(ctx context.Context, product string, objs []Object, fn func(Object, blob.Info)) (strays []string, err error) {
	known := map[string]bool{}
	for _, o := range objs {
		known[o.Key] = true
	}
	err = r.Blobs.List(ctx, product+"/", func(info blob.Info) error {
		kind, first, last, ok := parseKey(product, info.Key)
		switch {
		case !ok:
			strays = append(strays, info.Key)
		case !known[info.Key]:
			fn(Object{Key: info.Key, Product: product, Kind: kind, KindName: kind.String(), First: first, Last: last}, info)
		}
		return nil
	})
	return strays, err
}

// adoptions returns which of the uncatalogued objects unknown Rescan adopts
// into the catalog objs, in the order it adopts them: in stream order, so
// that an adopted object lets the next continue it. The rest are
// superseded.
func adoptions(objs, unknown []Object) []Object {
	objs = slices.Clone(objs)
	unknown = slices.Clone(unknown)
	slices.SortFunc(unknown, func(a, b Object) int {
		return cmp.Or(cmp.Compare(streamStart(a), streamStart(b)), cmp.Compare(b.Kind, a.Kind), cmp.Compare(b.Last, a.Last))
	})
	var out []Object
	for _, u := range unknown {
		if adoptable(objs, u) {
			out = append(out, u)
			objs = append(objs, u)
		}
	}
	return out
}

// streamStart is the position after which an object's changes begin.
func streamStart(o Object) uint64 {
	if o.Kind == format.Snapshot {
		return o.Last
	}
	return o.First - 1
}

// adoptable says whether an object found in the blob store but missing from
// the catalog objs belongs in it:
//
//   - the first snapshot, when the catalog is empty;
//   - a segment continuing the catalog (first = its last position + 1): the
//     shipper crashed after the upload and before recording it;
//   - an object on the catalog's boundaries (a segment starting where a
//     catalogued object starts or one ends, and ending where one ends; a
//     snapshot where one ends): a merge or compaction whose recording was
//     cut short.
//
// Anything else is superseded: the upload of a shipper that lost its lease
// while uploading (fence.check kept it out of the catalog) and whose
// positions the new holder shipped in objects cut elsewhere. Its changes
// are the same as theirs, but adopting it would overlap them; readers
// (rebuild, verify, maintenance) go by the catalog and ignore it.
func adoptable(objs []Object, u Object) bool {
	if len(objs) == 0 {
		return u.Kind == format.Snapshot
	}
	starts, ends := map[uint64]bool{}, map[uint64]bool{}
	var top uint64
	for _, o := range objs {
		starts[streamStart(o)+1] = true
		ends[o.Last] = true
		top = max(top, o.Last)
	}
	if u.Kind == format.Snapshot {
		return ends[u.Last]
	}
	return u.First == top+1 || starts[u.First] && ends[u.Last]
}

// Cursor returns how far the repository holds product's stream, or ok=false
// when it holds nothing yet (a snapshot must come first).
func (r *Repo) Cursor(ctx context.Context, product string) (cur capture.Cursor, ok bool, err error) {
	var last, src int64
	err = r.State.DB().QueryRowContext(ctx, r.State.Rebind(
		`SELECT last_pos, source_pos FROM backup_objects WHERE product = ? ORDER BY last_pos DESC, kind DESC LIMIT 1`), product).Scan(&last, &src)
	if errors.Is(err, sql.ErrNoRows) {
		return capture.Cursor{}, false, nil
	}
	if err != nil {
		return capture.Cursor{}, false, fmt.Errorf("backup catalog: %w", err)
	}
	return capture.Cursor{Pos: uint64(last), Src: uint64(src)}, true, nil
}

// micros and fromMicros are the state store's time encoding, which this
// package's tables share (state.Micros).
var micros, fromMicros = state.Micros, state.FromMicros

// KeyID names an encryption key without revealing it: the first 8 bytes of
// its SHA-256, in hex.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}
