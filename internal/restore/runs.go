package restore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

//go:embed migrations/*.sql
var migrations embed.FS

func migrate(ctx context.Context, store *state.Store) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return store.Migrate(ctx, "restore", sub)
}

// runKey is the canonical form of what a restore does, so that the same
// command run again is recognised: the same tenants, products, moment and
// policy, whatever their order on the command line.
func runKey(pl *plan) string {
	tenants := slices.Clone(pl.req.Tenants)
	slices.Sort(tenants)
	products := map[string]string{}
	for _, p := range pl.products {
		products[p.Name] = pl.uptos[p.Name].String()
	}
	b, _ := json.Marshal(map[string]any{"tenants": tenants, "products": products, "policy": pl.req.Policy})
	return string(b)
}

// runArgs is what a restore was asked, as recorded for `ops resume`.
type runArgs struct {
	Tenants    []string         `json:"tenants"`
	To         time.Time        `json:"to,omitzero"`
	Before     string           `json:"before,omitempty"`
	Products   []string         `json:"products,omitempty"`
	Policy     productdb.Policy `json:"policy"`
	SkipBroken bool             `json:"skip_broken,omitempty"`
	AllowDrift bool             `json:"allow_drift,omitempty"`
	Actor      string           `json:"actor"`
	Reason     string           `json:"reason,omitempty"`
}

// saveRun records the key and the request of a restore operation before
// it is created.
func saveRun(ctx context.Context, store *state.Store, opID, key string, req Request) error {
	args, _ := json.Marshal(runArgs{Tenants: req.Tenants, To: req.To, Before: req.Before, Products: req.Products, Policy: req.Policy,
		SkipBroken: req.SkipBroken, AllowDrift: req.AllowDrift, Actor: req.Actor, Reason: req.Reason})
	_, err := store.DB().ExecContext(ctx, store.Rebind(`INSERT INTO restore_runs (op_id, request, created, args) VALUES (?, ?, ?, ?)`),
		opID, key, store.Now().UnixMicro(), string(args))
	if err != nil {
		return fmt.Errorf("restore: record the request: %w", err)
	}
	return nil
}

// loadArgs returns the request a restore operation was recorded with.
func loadArgs(ctx context.Context, store *state.Store, opID string) (Request, error) {
	var raw string
	err := store.DB().QueryRowContext(ctx, store.Rebind(`SELECT args FROM restore_runs WHERE op_id = ?`), opID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && raw == "") {
		return Request{}, fault.New(fault.NotFound, "run the same `lifeline restore` command again: it resumes the restore",
			"restore %s was recorded without its request (by an older version)", opID)
	}
	if err != nil {
		return Request{}, fmt.Errorf("restore: read the request of %s: %w", opID, err)
	}
	var a runArgs
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return Request{}, fmt.Errorf("restore: read the request of %s: %w", opID, err)
	}
	return Request{Tenants: a.Tenants, To: a.To, Before: a.Before, Products: a.Products, Policy: a.Policy,
		SkipBroken: a.SkipBroken, AllowDrift: a.AllowDrift, Actor: a.Actor, Reason: a.Reason}, nil
}

// loadRun returns the key a restore operation was recorded with.
func loadRun(ctx context.Context, store *state.Store, opID string) (string, error) {
	var key string
	err := store.DB().QueryRowContext(ctx, store.Rebind(`SELECT request FROM restore_runs WHERE op_id = ?`), opID).Scan(&key)
	return key, err
}
