package restore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// into restores out of place: the product's protected tables are created
// in the empty target database and the chosen tenants loaded into them, in
// one transaction, then verified by hash before it commits. A failure
// leaves the target empty, so the same command can simply run again. So
// does a cancelled ctx (Ctrl-C), which is reported as an interruption, not
// a failure.
func (s *Service) into(ctx context.Context, pl *plan) error {
	err := s.load(ctx, pl)
	if err == nil || ctx.Err() == nil {
		return err
	}
	for _, st := range pl.steps {
		if !st.skip {
			st.report.Status, st.report.Hash, st.report.Rows, st.report.Tables = "interrupted", "", 0, nil
			st.report.Error = "not loaded: the restore was interrupted before it committed"
		}
	}
	pl.report.Status = "interrupted"
	return fault.Wrap(context.Cause(ctx), fault.Internal, "run the same command again: the target was left empty",
		"restore --into was interrupted before it committed: nothing was loaded")
}

// load creates the tables in the target and loads and verifies the
// tenants, in one transaction.
func (s *Service) load(ctx context.Context, pl *plan) error {
	p := pl.products[0]
	target, err := productdb.OpenTarget(ctx, pl.req.Into, pl.req.IntoBase)
	if err != nil {
		return err
	}
	defer target.Close()
	ld, err := target.BeginLoad(ctx)
	if err != nil {
		return err
	}
	defer ld.Rollback()
	rts, schema := pl.tables[p.Name], pl.schemas[p.Name]
	for i := range rts {
		if err := ld.CreateTable(ctx, schema.Table(rts[i].Name), &rts[i]); err != nil {
			return err
		}
	}
	var pending []*step
	for _, st := range pl.steps {
		if !st.skip {
			pending = append(pending, st)
		}
	}
	var mu sync.Mutex // one load transaction: one writer
	err = pool(ctx, s.workers(), pending, func(ctx context.Context, st *step) error {
		t0 := time.Now()
		r := newRebuilder(target.Engine(), st.tables, pl.req.AllowDrift, s.chunkRows())
		want, err := r.run(ctx, pl.readings[p.Name], st.tenant, func(batches []productdb.Batch) error {
			mu.Lock()
			defer mu.Unlock()
			s.advance("load", len(pending), 0, countRows(batches))
			for _, b := range batches {
				if err := ld.Rows(ctx, b.Table.Name, b.Cols, b.Rows); err != nil {
					return err
				}
			}
			return nil
		})
		st.report.Notes = append(st.report.Notes, r.notes()...)
		st.report.Seconds += time.Since(t0).Seconds()
		if err != nil {
			if broken(err) && pl.req.SkipBroken {
				// Take out what it loaded before the damage: the target
				// holds whole tenants only.
				st.skip = true
				st.report.Status, st.report.Error = "skipped", err.Error()
				return s.dropTenant(ctx, ld, &mu, st)
			}
			if broken(err) {
				return fault.Wrap(err, fault.Refused, "run `lifeline backup verify` to list the damage; --skip-broken loads the other tenants and reports this one",
					"tenant %s of %s cannot be rebuilt; nothing was loaded", st.tenant, p.Name)
			}
			return fmt.Errorf("rebuilding tenant %s of %s: %w", st.tenant, p.Name, err)
		}
		st.want = want
		s.advance("load", len(pending), 1, 0)
		return nil
	})
	if err != nil {
		return err
	}
	for _, st := range pending {
		if st.skip {
			continue
		}
		t0 := time.Now()
		st.report.Status, st.report.Hash = "loaded", "verified"
		for i := range st.tables {
			rt := &st.tables[i]
			got, err := ld.Hash(ctx, rt, st.tenant)
			if err != nil {
				return err
			}
			want := st.want[rt.Name]
			if want == nil {
				want = productdb.NewTableHash(target.Engine(), rt.Name)
			}
			if !got.Equal(want, rt.Columns) {
				st.report.Status, st.report.Hash = "failed", "mismatch"
				return &fault.Error{Code: fault.Internal, Err: productdb.ErrMismatch, Hint: "nothing was loaded; run the restore again, or report it if it repeats",
					Msg: fmt.Sprintf("tenant %s: table %s holds %d rows that do not hash to the %d rebuilt ones", st.tenant, rt.Name, got.Rows, want.Rows)}
			}
			st.report.Tables = append(st.report.Tables, TableReport{Table: rt.Name, TableResult: productdb.TableResult{
				Rows: got.Rows, Inserted: got.Rows, Hash: got.Digest(rt.Columns, want), Partial: want.Partial()}})
			st.report.Rows += got.Rows
		}
		st.report.Seconds += time.Since(t0).Seconds()
	}
	if err := ld.Commit(ctx); err != nil {
		return err
	}
	return s.outcome(pl)
}

// dropTenant removes what a broken tenant had loaded before its backup
// failed to read, so the load holds whole tenants only.
func (s *Service) dropTenant(ctx context.Context, ld *productdb.Load, mu *sync.Mutex, st *step) error {
	mu.Lock()
	defer mu.Unlock()
	for i := len(st.tables) - 1; i >= 0; i-- {
		if err := ld.DeleteTenant(ctx, &st.tables[i], st.tenant); err != nil {
			return err
		}
	}
	return nil
}
