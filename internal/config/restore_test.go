package config

import (
	"testing"
	"time"
)

func TestRestoreSection(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(good), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Restore; r.SQLiteTransaction != 0 || r.SQLitePause != 0 {
		t.Errorf("an unset restore section is %+v; want zero, the restore's own defaults", r)
	}
	c, err = Parse([]byte(good+"restore: {sqlite_transaction: 60ms, sqlite_pause: 1s}\n"), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Restore; r.SQLiteTransaction.D() != 60*time.Millisecond || r.SQLitePause.D() != time.Second {
		t.Errorf("restore: %+v", r)
	}
}

// Every restore error names the key path, the bad value and a fix, and exits 2.
func TestRestoreErrorsNameKeyValueAndFix(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		yaml string
		want []string
	}{
		"negative transaction": {"restore: {sqlite_transaction: -5ms}\n", []string{"restore.sqlite_transaction", "-5ms", "duration"}},
		"long transaction":     {"restore: {sqlite_transaction: 2s}\n", []string{"restore.sqlite_transaction", "2s", "up to 1s"}},
		"long pause":           {"restore: {sqlite_pause: 1m}\n", []string{"restore.sqlite_pause", "1m0s", "up to 5s"}},
		"negative pause":       {"restore: {sqlite_pause: -1ms}\n", []string{"restore.sqlite_pause", "-1ms", "duration"}},
		"not a duration":       {"restore: {sqlite_pause: soon}\n", []string{"restore.sqlite_pause", "soon", "duration"}},
		"typo":                 {"restore: {sqlite_tx: 20ms}\n", []string{"restore.sqlite_tx"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			wantRefused(t, good+tc.yaml, tc.want...)
		})
	}
}
