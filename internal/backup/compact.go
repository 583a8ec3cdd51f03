package backup

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/change"
)

// Compact merges the newest snapshot of product with the segments after it
// into a new snapshot at the last shipped position, without reading the
// live database. It does nothing (nil, nil) when fewer than minSegments
// segments follow the snapshot — unless a table's shape changed among them:
// a new schema version gets its snapshot at once, so a restore after the
// change never reads the history before it. The new snapshot holds every
// row in the newest shape; a column added after a row was captured is
// Absent in it (format version 2), which a restore leaves to its default
// exactly as when reading the original segment. A change no shape can
// describe both sides of (a column dropped or renamed, a key or tenant
// column changed) stops compaction at the older snapshot, as before.
// The segments stay: they hold the versions the point-in-time window
// needs; Prune removes them once they are older. The snapshot is recorded
// only while the shipper holds the product's lease (fence).
func (s *Shipper) Compact(ctx context.Context, minSegments int) (*Object, error) {
	r, product, f := s.Repo, s.Product, s.fence()
	cur, ok, err := r.Cursor(ctx, product)
	if err != nil || !ok {
		return nil, err
	}
	rd, err := r.OpenAt(ctx, product, Upto{Pos: cur.Pos})
	if err != nil {
		return nil, err
	}
	segs := len(rd.objects) - 1
	target := rd.Tables()
	if segs == 0 || (segs < minSegments && sameShapes(rd.readers[0].Header().Tables, target)) {
		return nil, nil
	}
	last := rd.objects[len(rd.objects)-1]
	h := format.Header{Product: product, First: last.Last, Last: last.Last, Source: last.Source,
		Tables: target, FirstTime: last.LastTime, LastTime: last.LastTime, Created: r.Now()}
	sp, err := newSpool()
	if err != nil {
		return nil, err
	}
	defer sp.close()
	w, err := format.NewSnapshotWriter(sp, h, r.options())
	if err != nil {
		return nil, err
	}
	conv := converter{target: map[string]*change.Table{}, maps: map[*change.Table][]int{}}
	for i := range target {
		conv.target[target[i].Name] = &target[i]
	}
	for _, tenant := range rd.Tenants() {
		err := rd.Tenant(ctx, tenant, func(t *change.Table, c *change.Change) error {
			row, ok := conv.row(t, c.Row)
			if !ok {
				return errNoCommonShape
			}
			c.Row = row
			return w.Add(c)
		})
		if errors.Is(err, errNoCommonShape) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
	sum, err := w.Close()
	if err != nil {
		return nil, err
	}
	key := snapshotKey(product, last.Last)
	body, err := sp.reader()
	if err != nil {
		return nil, err
	}
	if err := r.put(ctx, key, body, sum, f); err != nil {
		return nil, err
	}
	o := objectOf(key, sum.Header, sum.Size, sum.PlainBytes, sum.Records, len(sum.Tenants))
	return &o, nil
}

func sameShapes(a, b []change.Table) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// errNoCommonShape stops a compaction whose rows the newest shapes cannot
// hold.
var errNoCommonShape = errors.New("no common shape")

// converter maps rows of older shapes onto the newest shape of their table,
// by column name.
type converter struct {
	target map[string]*change.Table
	maps   map[*change.Table][]int // per target column: the source column, or -1
}

// row returns the row in its table's newest shape, with Absent for the
// columns its shape lacked; ok is false when a column of the row's shape,
// or its key or tenant column, is not in the newest shape under its name.
func (cv *converter) row(t *change.Table, row []change.Value) (out []change.Value, ok bool) {
	m, ok := cv.maps[t]
	if !ok {
		m = cv.mapping(t)
		cv.maps[t] = m
	}
	if m == nil {
		return nil, false
	}
	out = make([]change.Value, len(m))
	for j, i := range m {
		out[j] = change.Value{Kind: change.Absent}
		if i >= 0 {
			out[j] = row[i]
		}
	}
	return out, true
}

func (cv *converter) mapping(t *change.Table) []int {
	u := cv.target[t.Name]
	if u == nil {
		return nil
	}
	m := make([]int, len(u.Columns))
	found := 0
	for j, col := range u.Columns {
		m[j] = slices.IndexFunc(t.Columns, func(c change.Column) bool { return c.Name == col.Name })
		if m[j] >= 0 {
			found++
		}
	}
	if found != len(t.Columns) || m[u.Tenant] != t.Tenant || len(u.PrimaryKey) != len(t.PrimaryKey) {
		return nil
	}
	for k, j := range u.PrimaryKey {
		if m[j] != t.PrimaryKey[k] {
			return nil
		}
	}
	return m
}

// Pin keeps keys from retention until the holder unpins them or until
// passes, whichever is first (so a crashed restore does not pin forever).
func (r *Repo) Pin(ctx context.Context, holder string, keys []string, until time.Time) error {
	for _, k := range keys {
		_, err := r.State.DB().ExecContext(ctx, r.State.Rebind(`INSERT INTO backup_pins (key, holder, until) VALUES (?, ?, ?)
			ON CONFLICT (key, holder) DO UPDATE SET until = excluded.until`), k, holder, micros(until))
		if err != nil {
			return fmt.Errorf("backup pins: %w", err)
		}
	}
	return nil
}

// Unpin releases everything holder pinned.
func (r *Repo) Unpin(ctx context.Context, holder string) error {
	_, err := r.State.DB().ExecContext(ctx, r.State.Rebind(`DELETE FROM backup_pins WHERE holder = ?`), holder)
	return err
}

// pinned returns the keys pinned now.
func (r *Repo) pinned(ctx context.Context) (map[string]bool, error) {
	rows, err := r.State.DB().QueryContext(ctx, r.State.Rebind(`SELECT key FROM backup_pins WHERE until > ?`), micros(r.Now()))
	if err != nil {
		return nil, fmt.Errorf("backup pins: %w", err)
	}
	defer rows.Close()
	pinned := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("backup pins: %w", err)
		}
		pinned[k] = true
	}
	return pinned, rows.Err()
}

// Prune deletes the objects of the shipper's product that no restorable
// moment inside the window needs: every snapshot older than the newest
// snapshot taken at or before now-window (the base of the oldest
// restorable moment), and the segments that end at or before that base;
// and the segments a merge holds (Merge). Pinned objects, and objects
// whose retention date (Object Lock) has not passed, stay.
//
// Their rows leave the catalog first, in one transaction fenced by the
// shipper's lease, and only then are their blobs deleted: a pass that lost
// the lease deletes nothing, and one cut short in between leaves objects
// the catalog no longer holds (which Sweep deletes, or a rescan adopts and
// a later prune drops again), never a catalogued object that is missing.
func (s *Shipper) Prune(ctx context.Context, window time.Duration) (deleted []string, err error) {
	r, f := s.Repo, s.fence()
	objs, err := r.Objects(ctx, s.Product)
	if err != nil {
		return nil, err
	}
	now := r.Now()
	horizon := now.Add(-window)
	var base *Object
	for i := range objs {
		o := &objs[i]
		if o.Kind == format.Snapshot && !o.LastTime.After(horizon) && (base == nil || o.Last > base.Last) {
			base = o
		}
	}
	redundant := contained(objs)
	if base == nil && len(redundant) == 0 {
		return nil, nil
	}
	pinned, err := r.pinned(ctx)
	if err != nil {
		return nil, err
	}
	var drop []string
	for _, o := range objs {
		old := base != nil && ((o.Kind == format.Snapshot && o.Last < base.Last) || (o.Kind == format.Segment && o.Last <= base.Last))
		if !(old || redundant[o.Key]) || pinned[o.Key] {
			continue
		}
		info, err := r.Blobs.Stat(ctx, o.Key)
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return nil, err
		}
		if info.RetainUntil.After(now) {
			continue // the store would refuse the delete: it stays catalogued
		}
		drop = append(drop, o.Key)
	}
	if len(drop) == 0 {
		return nil, nil
	}
	err = r.change(ctx, f, func(tx *sql.Tx) error {
		for _, key := range drop {
			if _, err := tx.ExecContext(ctx, r.State.Rebind(`DELETE FROM backup_objects WHERE key = ?`), key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, key := range drop {
		// Retained after all (this host's clock ahead of the store's): it
		// stays, out of the catalog, until a sweep may delete it.
		if err := r.Blobs.Delete(ctx, key); err != nil && !errors.Is(err, blob.ErrRetained) {
			return deleted, err
		}
		deleted = append(deleted, key)
	}
	return deleted, nil
}

// CompactAfter is how many segments may follow a snapshot before
// maintenance merges them into a new one, so a restore never has to replay
// more than this many objects on top of its snapshot.
const CompactAfter = 64

// Maintain merges runs of small segments, compacts the shipper's product
// when enough segments have piled up, prunes what the window (s.Window) no
// longer needs (and the segments a merge holds) and sweeps superseded
// uploads (Sweep, at most once every SweepEvery); pruned lists what the
// last two deleted. serve runs it every minute while it holds the lease,
// and `lifeline backup run` after shipping, before it releases the lease.
// Every change it makes to the catalog commits only while this process
// still holds the product's lease: when another process took it over the
// pass stops with the fault.Conflict wrapping ErrLeased an upload gets.
func (s *Shipper) Maintain(ctx context.Context) (compacted *Object, pruned []string, err error) {
	if _, err = s.Merge(ctx); err != nil {
		return nil, nil, err
	}
	if compacted, err = s.Compact(ctx, CompactAfter); err != nil {
		return nil, nil, err
	}
	if pruned, err = s.Prune(ctx, s.Window); err != nil {
		return compacted, pruned, err
	}
	if !s.Repo.sweepDue(s.Product) {
		return compacted, pruned, nil
	}
	swept, err := s.Sweep(ctx)
	if err != nil {
		s.Repo.sweepFailed(s.Product)
	}
	return compacted, append(pruned, swept...), err
}
