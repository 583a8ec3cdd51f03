package restore

import (
	"slices"
	"strings"
	"testing"
)

// A migration rebuilds a protected table (create new, copy, drop, rename)
// and deletes rows on the way; protect re-installs capture and asks for a
// fresh snapshot, which the next shipping round takes. A restore to a
// moment after that gives the tenant the rows the database had then: the
// rows the rebuild left out are not brought back, and changes after the
// snapshot are there.
func TestRestoreAfterAMigrationRebuiltATable(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setupCapture(t, e, 4)
		create := strings.Replace(strings.Split(ddl[e.Name], "CREATE TABLE comments ")[1], "CREATE TABLE insight", "", 1)
		create = create[:strings.Index(create, ");")+1]
		migration := []string{`CREATE TABLE comments_new ` + create,
			`INSERT INTO comments_new SELECT * FROM comments WHERE NOT (site_id = 2 AND n = 2)`,
			`DROP TABLE comments`,
			`ALTER TABLE comments_new RENAME TO comments`}
		if e.Name == "postgres" {
			// The guard lets a deliberate migration drop the table.
			migration = slices.Insert(migration, 2, `SET LOCAL lifeline.allow_drop = 'comments'`)
		}
		tx, err := b.raw.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range migration {
			if _, err := tx.Exec(stmt); err != nil {
				t.Fatalf("%v\n%s", err, stmt)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		b.protectAgain(t)
		if why, err := b.db.SnapshotWanted(ctx); err != nil || !strings.Contains(why, "comments rebuilt") {
			t.Fatalf("protect did not ask for a fresh snapshot: %q %v", why, err)
		}
		b.exec(t, `UPDATE docs SET title = 'after the rebuild' WHERE site_id = 2`)
		b.shipNow(t)
		if why, err := b.db.SnapshotWanted(ctx); err != nil || why != "" {
			t.Fatalf("the request is still there after shipping: %q %v", why, err)
		}
		// The stream continues after the fresh snapshot.
		b.exec(t, `UPDATE comments SET body = 'after the snapshot' WHERE site_id = 2 AND doc_id = 201 AND n = 1`)
		M := b.shipNow(t)
		atM := b.dump(t, 2)
		if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
			t.Fatalf("verify: %+v %v", problems, err)
		}
		b.april(t, 2)
		b.shipNow(t)
		mustRestore(t, b, Request{Tenants: []string{"2"}, To: M})
		sameDump(t, "restored after the rebuild", atM, b.dump(t, 2))
	})
}
