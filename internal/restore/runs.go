package restore

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"

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

// saveRun records the key of a restore operation before it is created.
func saveRun(ctx context.Context, store *state.Store, opID, key string) error {
	_, err := store.DB().ExecContext(ctx, store.Rebind(`INSERT INTO restore_runs (op_id, request, created) VALUES (?, ?, ?)`),
		opID, key, store.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("restore: record the request: %w", err)
	}
	return nil
}

// loadRun returns the key a restore operation was recorded with.
func loadRun(ctx context.Context, store *state.Store, opID string) (string, error) {
	var key string
	err := store.DB().QueryRowContext(ctx, store.Rebind(`SELECT request FROM restore_runs WHERE op_id = ?`), opID).Scan(&key)
	return key, err
}
