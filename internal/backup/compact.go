package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/change"
)

// Compact merges the newest snapshot of product with the segments after it
// into a new snapshot at the last shipped position, without reading the
// live database. It does nothing (nil, nil) when fewer than minSegments
// segments follow the snapshot, or when a table's shape changed among them
// (the shipper takes a fresh snapshot from the database after a schema
// change instead). The segments stay: they hold the versions the
// point-in-time window needs; Prune removes them once they are older.
func (r *Repo) Compact(ctx context.Context, product string, minSegments int) (*Object, error) {
	cur, ok, err := r.Cursor(ctx, product)
	if err != nil || !ok {
		return nil, err
	}
	rd, err := r.OpenAt(ctx, product, Upto{Pos: cur.Pos})
	if err != nil {
		return nil, err
	}
	segs := len(rd.objects) - 1
	if segs < max(1, minSegments) {
		return nil, nil
	}
	shape, _ := json.Marshal(rd.readers[0].Header().Tables)
	for _, fr := range rd.readers[1:] {
		if s, _ := json.Marshal(fr.Header().Tables); !bytes.Equal(s, shape) {
			return nil, nil
		}
	}
	last := rd.objects[len(rd.objects)-1]
	h := format.Header{Product: product, First: last.Last, Last: last.Last, Source: last.Source,
		Tables: rd.Tables(), FirstTime: last.LastTime, LastTime: last.LastTime, Created: r.Now()}
	var buf bytes.Buffer
	w, err := format.NewSnapshotWriter(&buf, h, r.options())
	if err != nil {
		return nil, err
	}
	for _, tenant := range rd.Tenants() {
		err := rd.Tenant(ctx, tenant, func(_ *change.Table, c *change.Change) error { return w.Add(c) })
		if err != nil {
			return nil, err
		}
	}
	sum, err := w.Close()
	if err != nil {
		return nil, err
	}
	key := snapshotKey(product, last.Last)
	if err := r.put(ctx, key, buf.Bytes(), sum); err != nil {
		return nil, err
	}
	o := objectOf(key, sum.Header, sum.Size, sum.PlainBytes, sum.Records, len(sum.Tenants))
	return &o, nil
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

// Prune deletes the objects of product that no restorable moment inside
// the window needs: every snapshot older than the newest snapshot taken at
// or before now-window (the base of the oldest restorable moment), and the
// segments that end at or before that base. Pinned objects, and objects
// whose retention date (Object Lock) has not passed, stay.
func (r *Repo) Prune(ctx context.Context, product string, window time.Duration) (deleted []string, err error) {
	objs, err := r.Objects(ctx, product)
	if err != nil {
		return nil, err
	}
	horizon := r.Now().Add(-window)
	var base *Object
	for i := range objs {
		o := &objs[i]
		if o.Kind == format.Snapshot && !o.LastTime.After(horizon) && (base == nil || o.Last > base.Last) {
			base = o
		}
	}
	if base == nil {
		return nil, nil
	}
	pinned := map[string]bool{}
	rows, err := r.State.DB().QueryContext(ctx, r.State.Rebind(`SELECT key FROM backup_pins WHERE until > ?`), micros(r.Now()))
	if err != nil {
		return nil, fmt.Errorf("backup pins: %w", err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return nil, err
		}
		pinned[k] = true
	}
	rows.Close()
	for _, o := range objs {
		old := (o.Kind == format.Snapshot && o.Last < base.Last) || (o.Kind == format.Segment && o.Last <= base.Last)
		if !old || pinned[o.Key] {
			continue
		}
		if err := r.Blobs.Delete(ctx, o.Key); err != nil {
			if errors.Is(err, blob.ErrRetained) {
				continue
			}
			return deleted, err
		}
		if _, err := r.State.DB().ExecContext(ctx, r.State.Rebind(`DELETE FROM backup_objects WHERE key = ?`), o.Key); err != nil {
			return deleted, fmt.Errorf("backup catalog: %w", err)
		}
		deleted = append(deleted, o.Key)
	}
	return deleted, nil
}

// CompactAfter is how many segments may follow a snapshot before
// maintenance merges them into a new one, so a restore never has to replay
// more than this many objects on top of its snapshot.
const CompactAfter = 64

// Maintain compacts product's repository when enough segments have piled up
// and prunes what the window no longer needs. serve runs it every minute and
// `lifeline backup run` after shipping.
func (r *Repo) Maintain(ctx context.Context, product string, window time.Duration) (compacted *Object, pruned []string, err error) {
	if compacted, err = r.Compact(ctx, product, CompactAfter); err != nil {
		return nil, nil, err
	}
	pruned, err = r.Prune(ctx, product, window)
	return compacted, pruned, err
}
