package backup

import (
	"context"

	"lifeline/internal/backup/format"
	"lifeline/internal/capture"
	"lifeline/internal/fault"
)

// refresh takes a fresh snapshot from the database when protect asked for
// one (it found a table rebuilt by a migration: what the rebuild deleted
// was never captured, so only the rows as they are now make the repository
// exact again). Ship calls it once everything pending is shipped. A
// restore to a moment from the snapshot on starts from it.
//
// The snapshot continues the repository's numbering. On SQLite its
// position is the change log's, at or after the catalog's end: the changes
// up to it are shipped as segments first, so the chain has no gap. On
// PostgreSQL the source numbers its stream anew from the snapshot (a new
// slot): the snapshot takes the catalog's last position and the stream
// continues after it. Because that position may already hold a compacted
// snapshot, a refresh waits while the catalog ends with a snapshot; the
// request stays in the database until a snapshot is recorded, so a
// refresh cut short is retried.
func (s *Shipper) refresh(ctx context.Context, res *Shipped) (err error) {
	rs, ok := s.Source.(capture.Refresher)
	if !ok {
		return nil
	}
	why, err := rs.SnapshotWanted(ctx)
	if err != nil || why == "" {
		return err
	}
	objs, err := s.Repo.Objects(ctx, s.Product)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.Kind == format.Snapshot && o.Last == s.cur.Pos {
			return nil // wait for a change past it
		}
	}
	ctx, kept := s.keepLease(ctx)
	defer kept(&err)
	snap, err := s.Source.Snapshot(ctx)
	if err != nil {
		return err
	}
	cur := snap.Cursor()
	renumbered := cur.Pos <= s.cur.Pos
	if renumbered {
		cur.Pos = s.cur.Pos
	}
	key, sp, sum, err := s.image(ctx, snap, cur)
	snap.Close()
	defer sp.close()
	if err != nil {
		return err
	}
	for s.cur.Pos < cur.Pos {
		b, err := s.Source.Read(ctx, s.cur, s.maxBatch())
		if err != nil {
			return err
		}
		if len(b.Changes) == 0 {
			return fault.New(fault.Internal, "", "%s: capture returned nothing after position %d, though its snapshot is at %d", s.Product, s.cur.Pos, cur.Pos)
		}
		if err := s.shipBatch(ctx, b, res); err != nil {
			return err
		}
	}
	body, err := sp.reader()
	if err != nil {
		return err
	}
	if err := s.put(ctx, key, body, sum); err != nil {
		return err
	}
	if renumbered {
		s.cur = cur
	}
	if err := s.Source.Ack(ctx, s.cur); err != nil && s.Log != nil {
		s.Log.Warn("acknowledging the fresh snapshot's position failed", "product", s.Product, "err", err)
	}
	o := objectOf(key, sum.Header, sum.Size, sum.PlainBytes, sum.Records, len(sum.Tenants))
	res.Snapshot = &o
	if s.Log != nil {
		s.Log.Info("took a fresh snapshot that protect asked for", "product", s.Product, "position", cur.Pos, "why", why)
	}
	return rs.SnapshotTaken(ctx, why)
}
