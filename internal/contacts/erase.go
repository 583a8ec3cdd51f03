package contacts

import (
	"context"
	"strings"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// EraseResult says what an erasure removed.
type EraseResult struct {
	Email    string `json:"email"` // masked
	Hash     string `json:"hash"`  // what the ledger keeps
	LedgerID int64  `json:"ledger_id"`
	InVault  bool   `json:"in_vault"`
	Links    int    `json:"links"`
	History  int    `json:"history"`
	Note     string `json:"note,omitempty"`
}

// Erase removes a person from the vault for good: their contact, links,
// spellings and history. Purging a tenant never does this; erasing a person
// does, and only this. It is recorded first in the state store's erasure
// ledger (as product "contacts", tenant "contact:" + ErasureHash), so that a
// later vault restore, which would bring the person back from an older
// export, erases them again, and syncs and imports keep them out. Erasing
// someone the vault does not hold still records the erasure, for the same
// reasons. A missing reason is fault.Invalid.
func (s *Service) Erase(ctx context.Context, email, reason, actor string) (*EraseResult, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, fault.New(fault.Invalid, `add --reason "why", e.g. the request's ticket number; it goes into the erasure ledger`, "an erasure needs a reason")
	}
	a, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	hash := ErasureHash(a.Key)
	res := &EraseResult{Email: Mask(a.Email), Hash: hash}
	err = s.store.read(ctx, func(t *tx) error {
		r, err := loadOne[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE email_key = $1", a.Key)
		if err != nil || r == nil {
			return err
		}
		res.InVault = true
		if err := t.QueryRowContext(t.ctx, "SELECT count(*) FROM links WHERE contact_id = $1", r.ID).Scan(&res.Links); err != nil {
			return err
		}
		return t.QueryRowContext(t.ctx, "SELECT count(*) FROM history WHERE contact_id = $1", r.ID).Scan(&res.History)
	})
	if err != nil {
		return nil, s.store.unavailable(err)
	}
	prior, err := s.cfg.Ledger.Erasures(ctx, ledgerPrefix+hash)
	if err != nil {
		return nil, err
	}
	if len(prior) > 0 {
		res.LedgerID = prior[0].ID
	} else {
		e := &state.Erasure{Actor: actor, Reason: reason, Tenant: ledgerPrefix + hash, Product: LedgerProduct,
			Rows: map[string]int64{"contacts": boolInt(res.InVault), "links": int64(res.Links), "history": int64(res.History)}}
		if err := s.cfg.Ledger.RecordErasure(ctx, e); err != nil {
			return nil, err
		}
		res.LedgerID = e.ID
	}
	if err := s.guardFresh(ctx, true); err != nil {
		// The vault awaits a restore; the restore applies the ledger.
		res.Note = "the vault awaits `lifeline contacts restore`, which applies this erasure"
		return res, nil
	}
	if err := s.eraseHashes(ctx, map[string]int64{hash: res.LedgerID}, actor); err != nil {
		return res, fault.Wrap(err, fault.Unavailable, "run the same erase again: the ledger already has it, and the vault will follow",
			"the erasure is recorded in the ledger (#%d) but the vault was not changed", res.LedgerID)
	}
	s.log.Info("contact erased", "email", res.Email, "ledger_id", res.LedgerID, "in_vault", res.InVault)
	return res, nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// ReapplyErasures erases again every person the erasure ledger names that
// the vault still holds (or has not marked erased): after a restore from
// an export written before the erasure, that is what keeps erased people
// erased. It returns how many contacts it removed.
func (s *Service) ReapplyErasures(ctx context.Context) (int, error) {
	all, err := s.cfg.Ledger.Erasures(ctx, "")
	if err != nil {
		return 0, err
	}
	want := map[string]int64{}
	for _, e := range all {
		if h, ok := strings.CutPrefix(e.Tenant, ledgerPrefix); ok && e.Product == LedgerProduct {
			want[h] = e.ID
		}
	}
	if len(want) == 0 {
		return 0, nil
	}
	todo := map[string]int64{}
	present := 0
	err = s.store.read(ctx, func(t *tx) error {
		erased, err := erasedHashes(t)
		if err != nil {
			return err
		}
		for h, id := range want {
			if !erased[h] {
				todo[h] = id
			}
		}
		rows, err := load[contactRow](t, "SELECT "+contactCols+" FROM contacts")
		for _, c := range rows {
			if id, ok := want[ErasureHash(c.EmailKey)]; ok {
				todo[ErasureHash(c.EmailKey)] = id
				present++
			}
		}
		return err
	})
	if err != nil || len(todo) == 0 {
		return 0, err
	}
	return present, s.eraseHashes(ctx, todo, "lifeline")
}

// eraseHashes removes every contact whose ErasureHash is in hashes and
// marks each hash erased, with a history tombstone that names no one.
func (s *Service) eraseHashes(ctx context.Context, hashes map[string]int64, actor string) error {
	_, err := s.store.write(ctx, s.now(), false, func(t *tx) error {
		rows, err := load[contactRow](t, "SELECT "+contactCols+" FROM contacts")
		if err != nil {
			return err
		}
		byHash := map[string]string{}
		for _, r := range rows {
			byHash[ErasureHash(r.EmailKey)] = r.ID
		}
		erased, err := erasedHashes(t)
		if err != nil {
			return err
		}
		for h, ledgerID := range hashes {
			id := byHash[h]
			if id == "" && erased[h] {
				continue
			}
			if !erased[h] {
				if err := (&erasedRow{Hash: h, ContactID: id, LedgerID: ledgerID, At: micros(t.now)}).insert(t); err != nil {
					return err
				}
			} else if id != "" {
				// Restored contact of an erasure already marked: point the
				// mark at it, so the history guard lets its rows go.
				if err := t.exec("UPDATE erased SET contact_id = $2 WHERE hash = $1", h, id); err != nil {
					return err
				}
			}
			if id != "" {
				for _, q := range []string{"DELETE FROM links WHERE contact_id = $1", "DELETE FROM aliases WHERE contact_id = $1",
					"DELETE FROM history WHERE contact_id = $1", "DELETE FROM contacts WHERE id = $1"} {
					if err := t.exec(q, id); err != nil {
						return err
					}
				}
			}
			if err := t.record(Change{Actor: actor, Source: "erasure", Action: "erase", Detail: map[string]any{"hash": h, "ledger_id": ledgerID}}); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}
