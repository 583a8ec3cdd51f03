package capture

import "context"

// Both sources pass protect's requests for a fresh snapshot on.
var (
	_ Refresher = (*sqliteSource)(nil)
	_ Refresher = (*pgSource)(nil)
)

func (s *sqliteSource) SnapshotWanted(ctx context.Context) (string, error) {
	return s.db.SnapshotWanted(ctx)
}

func (s *sqliteSource) SnapshotTaken(ctx context.Context, why string) error {
	return s.db.SnapshotTaken(ctx, why)
}

func (s *pgSource) SnapshotWanted(ctx context.Context) (string, error) {
	return s.db.SnapshotWanted(ctx)
}

func (s *pgSource) SnapshotTaken(ctx context.Context, why string) error {
	return s.db.SnapshotTaken(ctx, why)
}
