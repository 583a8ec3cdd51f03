package restore

import (
	"context"
	"fmt"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// dryRun rebuilds every chosen tenant (which also proves its backup
// readable) and compares it, row by row, with the live rows, without
// writing anything: per table, how many rows a restore would insert,
// replace and remove, how many are already as at the moment, and how many
// it could not put back because another tenant holds their key now.
//
// Rows are compared by primary key one table of one tenant at a time, so a
// dry run holds that table's keys and row digests in memory (about 100
// bytes a row); a restore itself holds none.
func (s *Service) dryRun(ctx context.Context, pl *plan) error {
	var pending []*step
	for _, st := range pl.steps {
		if !st.skip {
			pending = append(pending, st)
		}
	}
	err := pool(ctx, s.workers(), pending, func(ctx context.Context, st *step) error {
		t0 := time.Now()
		err := s.planStep(ctx, pl, st)
		st.report.Seconds = time.Since(t0).Seconds()
		if err != nil {
			if broken(err) && pl.req.SkipBroken {
				st.skip = true
				st.report.Status, st.report.Error = "skipped", err.Error()
				return nil
			}
			if broken(err) {
				return fault.Wrap(err, fault.Refused, "run `lifeline backup verify` to list the damage; --skip-broken restores the other tenants and reports this one",
					"tenant %s of %s cannot be rebuilt", st.tenant, st.product.Name)
			}
			return err
		}
		s.advance("plan", len(pending), 1, st.report.Rows)
		return nil
	})
	if err != nil {
		return err
	}
	for _, st := range pl.steps {
		if st.report.Status == "" {
			st.report.Status = "planned"
		}
	}
	if err := s.outcome(pl); err != nil {
		return err
	}
	pl.report.Status = "planned"
	return nil
}

// rebuiltRow is a rebuilt row, by key, as a dry run compares it.
type rebuiltRow struct {
	key    []change.Value
	digest [32]byte
}

func (s *Service) planStep(ctx context.Context, pl *plan, st *step) error {
	p := st.product
	engine := p.DB.Engine()
	r := newRebuilder(engine, st.tables, pl.req.AllowDrift, s.chunkRows())
	byTable := map[string]map[string]rebuiltRow{}
	_, err := r.run(ctx, pl.readings[p.Name], st.tenant, func(batches []productdb.Batch) error {
		for _, b := range batches {
			planBatch(engine, byTable, b.Table, b.Cols, b.Rows)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.compareLive(ctx, pl, st, r, byTable)
}

// planBatch records rebuilt rows by key, with their digests.
func planBatch(engine string, byTable map[string]map[string]rebuiltRow, rt *productdb.RestoreTable, cols []string, rows [][]change.Value) {
	m := byTable[rt.Name]
	if m == nil {
		m = map[string]rebuiltRow{}
		byTable[rt.Name] = m
	}
	pos := make([]int, len(rt.Key))
	for i, k := range rt.Key {
		for j, c := range cols {
			if c == k {
				pos[i] = j
			}
		}
	}
	var keyBuf []byte
	for _, row := range rows {
		key := make([]change.Value, len(pos))
		keyBuf = keyBuf[:0]
		for i, j := range pos {
			key[i] = row[j]
			keyBuf = productdb.AppendValue(engine, keyBuf, row[j])
		}
		m[string(keyBuf)] = rebuiltRow{key: key, digest: productdb.RowDigest(engine, rt.Name, key, cols, row)}
	}
}

// compareLive compares the rebuilt rows with the live ones, table by table.
func (s *Service) compareLive(ctx context.Context, pl *plan, st *step, r *rebuilder, byTable map[string]map[string]rebuiltRow) error {
	p := st.product
	engine := p.DB.Engine()
	var keyBuf []byte
	st.report.Notes = append(st.report.Notes, r.notes()...)
	for i := range st.tables {
		rt := &st.tables[i]
		m := byTable[rt.Name]
		tr := TableReport{Table: rt.Name}
		tr.Rows = int64(len(m))
		if pl.req.Into != "" { // the target is empty: every row goes in
			tr.Inserted = tr.Rows
			st.report.Tables = append(st.report.Tables, tr)
			st.report.Rows += tr.Rows
			continue
		}
		key := make([]change.Value, len(rt.Key))
		err := p.DB.LiveRows(ctx, rt, st.tenant, func(vals []change.Value) error {
			keyBuf = keyBuf[:0]
			for i, k := range rt.KeyIndex() {
				key[i] = vals[k]
				keyBuf = productdb.AppendValue(engine, keyBuf, vals[k])
			}
			want, ok := m[string(keyBuf)]
			switch {
			case !ok && pl.req.Policy == productdb.Replace:
				tr.Removed++
			case !ok:
			case want.digest == productdb.RowDigest(engine, rt.Name, key, rt.Columns, vals):
				tr.Unchanged++
			case pl.req.Policy == productdb.Replace:
				tr.Replaced++
			}
			if ok {
				delete(m, string(keyBuf))
			}
			return nil
		})
		if err != nil {
			return err
		}
		var absent [][]change.Value
		for _, row := range m {
			absent = append(absent, row.key)
		}
		held, err := p.DB.KeysHeldByOthers(ctx, rt, st.tenant, absent)
		if err != nil {
			return err
		}
		tr.Inserted, tr.Conflicts = int64(len(absent))-held, held
		if held > 0 && pl.req.Policy == productdb.Replace {
			st.report.Notes = append(st.report.Notes, fmt.Sprintf("%d rows of %s have keys another tenant holds now: the restore would fail on them", held, rt.Name))
		}
		st.report.Tables = append(st.report.Tables, tr)
		st.report.Rows += tr.Rows
		delete(byTable, rt.Name)
	}
	st.report.Status = "planned"
	return nil
}
