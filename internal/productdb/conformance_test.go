package productdb

import (
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/fault"
)

// The conformance suite: every test here runs against SQLite and PostgreSQL.

func TestInspect(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		s, err := x.db.Inspect(x.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tb := range s.Tables {
			names = append(names, tb.Name)
		}
		want := []string{"attachments", "comments", "insight_links", "insight_objects", "issues", "plans", "projects", "sites"}
		if !slices.Equal(names, want) {
			t.Fatalf("tables %v, want %v (lifeline objects must be left out)", names, want)
		}
		c := s.Table("comments")
		if !slices.Equal(c.PrimaryKey, []string{"id"}) {
			t.Errorf("comments primary key %v", c.PrimaryKey)
		}
		var fks []string
		for _, fk := range c.ForeignKeys {
			fks = append(fks, fkString(fk))
		}
		wantFK := []string{"(issue_id) -> issues(id) on delete cascade", "(parent_id) -> comments(id)"}
		if !slices.Equal(fks, wantFK) {
			t.Errorf("comments foreign keys %q, want %q", fks, wantFK)
		}
		if col := c.Column("site_id"); col == nil || !col.NotNull {
			t.Errorf("comments.site_id: %+v", col)
		}
		if got := s.Table("plans").PrimaryKey; !slices.Equal(got, []string{"code"}) {
			t.Errorf("plans primary key %v", got)
		}
		// Lifeline's own objects do not change the fingerprint.
		s2, _ := x.db.Inspect(x.ctx)
		if Fingerprint(s) != Fingerprint(s2) {
			t.Error("fingerprint not stable")
		}
	})
}

func TestDrift(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		x.exec(t, "CREATE TABLE pages (id {int} NOT NULL, rev {int} NOT NULL, body TEXT, PRIMARY KEY (id))")
		before, err := x.db.Inspect(x.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := Diff(before, before); len(d) != 0 {
			t.Fatalf("diff of a schema with itself: %q", d)
		}
		x.exec(t, "ALTER TABLE issues ADD COLUMN priority {int}")
		x.exec(t, "CREATE TABLE audit_log (id {id}, site_id {int}, what TEXT)")
		if e.Name == "postgres" {
			x.exec(t, "ALTER TABLE pages DROP CONSTRAINT pages_pkey;\nALTER TABLE pages ADD PRIMARY KEY (id, rev)")
		} else {
			x.exec(t, "CREATE TABLE pages2 (id INTEGER NOT NULL, rev INTEGER NOT NULL, body TEXT, PRIMARY KEY (id, rev));\nDROP TABLE pages;\nALTER TABLE pages2 RENAME TO pages")
		}
		after, err := x.db.Inspect(x.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if Fingerprint(before) == Fingerprint(after) {
			t.Error("fingerprint did not change")
		}
		got := Diff(before, after)
		for _, want := range []string{
			"table audit_log added",
			"table issues: column priority added",
			"table pages: primary key changed from (id) to (id, rev)",
		} {
			if !slices.Contains(got, want) {
				t.Errorf("diff lacks %q; got %q", want, got)
			}
		}
		if len(got) != 3 {
			t.Errorf("diff has extra lines: %q", got)
		}
	})
}

func TestProtectIdempotent(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		objects := func() []string {
			q := `SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master WHERE name LIKE 'lifeline%' ORDER BY name`
			if e.Name == "postgres" {
				q = `SELECT c.relname || ' ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname LIKE 'lifeline%'
				UNION ALL SELECT p.proname || ' ' || p.prosrc FROM pg_proc p WHERE p.pronamespace = 'lifeline'::regnamespace
				UNION ALL SELECT 'table ' || c.relname FROM pg_class c WHERE c.relnamespace = 'lifeline'::regnamespace
				UNION ALL SELECT 'protected ' || name FROM lifeline.protected_tables ORDER BY 1`
			}
			out, err := queryStrings(x.ctx, x.raw, q)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		first := objects()
		// Soft-deleted rows survive a re-protect.
		x.remove(t, "4")
		x.protect(t, sampleSpec())
		if second := objects(); !slices.Equal(first, second) {
			t.Fatalf("second protect changed the installed objects:\n%q\n%q", first, second)
		}
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 4"); n != 0 {
			t.Fatalf("tenant 4 has %d live comments after delete", n)
		}

		// Changed limits take effect: 3 rows in one statement.
		spec := sampleSpec()
		spec.Limits.RowsPerStatement = 2
		x.protect(t, spec)
		_, err := x.raw.Exec("DELETE FROM comments WHERE site_id = 1 AND issue_id = 1002")
		refused(t, err, "comments")
		spec.Limits.RowsPerStatement = 3
		x.l = x.protect(t, spec)
		if _, err := x.raw.Exec("DELETE FROM comments WHERE site_id = 1 AND issue_id = 1002"); err != nil {
			t.Fatalf("3 rows with a limit of 3: %v", err)
		}
		x.step(t, "op_undel_4", Undelete, "4", "", Deactivated, Deleted)
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 4"); n != 18 {
			t.Fatalf("tenant 4 has %d comments after undelete, want 18", n)
		}
		if on, err := x.db.DropGuard(x.ctx); err != nil || on != (e.Name == "postgres") {
			t.Errorf("DropGuard = %v, %v", on, err)
		}
	})
}

func TestLifecycle(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		original := x.dumpAll(t, "")
		others := x.dumpAll(t, "site_id <> 2")

		_, err := x.db.Apply(x.ctx, x.l, Step{OpID: "op_1", Action: Delete, Tenant: "2", From: []State{Deactivated}, To: Deleted})
		wantCode(t, err, fault.Conflict, "tenant 2 in tracker is active; delete needs deactivated", "lifeline tenants deactivate site:2")

		r := x.step(t, "op_2", Deactivate, "2", "", Deactivated, Active)
		if r.Already || len(r.Rows) != 0 {
			t.Fatalf("deactivate result %+v", r)
		}
		if r := x.step(t, "op_2", Deactivate, "2", "", Deactivated, Active); !r.Already {
			t.Fatal("repeated deactivate not Already")
		}
		states, err := x.db.States(x.ctx)
		if err != nil || len(states) != 1 || states[0].Tenant != "2" || states[0].State != Deactivated || states[0].OpID != "op_2" || states[0].Changed.IsZero() {
			t.Fatalf("states %+v, %v", states, err)
		}
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 2"); n != 18 {
			t.Fatalf("deactivate touched rows: %d comments", n)
		}

		del := x.step(t, "op_3", Delete, "2", "", Deleted, Deactivated)
		want := map[string]int64{"sites": 1, "projects": 2, "issues": 6, "comments": 18, "attachments": 3, "insight_objects": 2, "insight_links": 2}
		for table, n := range want {
			if del.Rows[table] != n {
				t.Errorf("delete moved %d rows of %s, want %d", del.Rows[table], table, n)
			}
		}
		again := x.step(t, "op_3", Delete, "2", "", Deleted, Deactivated)
		if !again.Already || again.Rows["comments"] != 18 {
			t.Fatalf("repeated delete: %+v", again)
		}
		info, err := x.db.Tenant(x.ctx, x.l, "2")
		if err != nil {
			t.Fatal(err)
		}
		if info.State != Deleted || info.OpID != "op_3" || info.Name != "Site 2 ✓" || info.Rows["comments"] != 0 || info.Trash["comments"] != 18 || info.Trash["sites"] != 1 {
			t.Fatalf("tenant after delete: %+v", info)
		}
		sameDump(t, "other tenants after delete", others, x.dumpAll(t, "site_id <> 2"))

		list, err := x.db.Tenants(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, ti := range list {
			keys = append(keys, ti.Key+"="+string(ti.State)+":"+ti.Name)
		}
		if strings.Join(keys, ",") != "1=active:Site 1 ✓,2=deleted:Site 2 ✓,3=active:Site 3 ✓,4=active:Site 4 ✓,5=active:Site 5 ✓" {
			t.Fatalf("tenants %q", keys)
		}

		_, err = x.db.Apply(x.ctx, x.l, Step{OpID: "op_4", Action: Reactivate, Tenant: "2", From: []State{Deactivated}, To: Active})
		wantCode(t, err, fault.Conflict, "is deleted")

		x.step(t, "op_5", Undelete, "2", "", Deactivated, Deleted)
		sameDump(t, "after undelete", original, x.dumpAll(t, ""))
		x.step(t, "op_6", Reactivate, "2", "", Active, Deactivated)
		if states, _ := x.db.States(x.ctx); len(states) != 0 {
			t.Fatalf("states after reactivate: %+v", states)
		}

		// Delete, then purge: the trash is emptied, the state remembers the delete.
		x.step(t, "op_7", Deactivate, "3", "", Deactivated, Active)
		x.step(t, "op_8", Delete, "3", "", Deleted, Deactivated)
		p := x.step(t, "op_9", Purge, "3", "", Purged, Deleted)
		if p.Rows["comments"] != 18 || p.Rows["sites"] != 1 {
			t.Fatalf("purge rows %+v", p.Rows)
		}
		info, err = x.db.Tenant(x.ctx, x.l, "3")
		if err != nil || info.State != Purged || info.OpID != "op_8" || len(info.Trash) != 0 {
			t.Fatalf("after purge: %+v %v", info, err)
		}
		_, err = x.db.Apply(x.ctx, x.l, Step{OpID: "op_10", Action: Undelete, Tenant: "3", From: []State{Deleted}, To: Deactivated})
		wantCode(t, err, fault.Conflict, "is purged", "restore")

		_, err = x.db.Apply(x.ctx, x.l, Step{OpID: "op_11", Action: Deactivate, Tenant: "99", From: []State{Active}, To: Deactivated})
		wantCode(t, err, fault.NotFound, "99")
		_, err = x.db.Apply(x.ctx, x.l, Step{OpID: "op_12", Action: Deactivate, Tenant: "abc", From: []State{Active}, To: Deactivated})
		wantCode(t, err, fault.NotFound, "abc")
		_, err = x.db.Tenant(x.ctx, x.l, "abc")
		wantCode(t, err, fault.NotFound, "tenants list")
		_, err = x.db.Apply(x.ctx, x.l, Step{OpID: "op_13", Action: Deactivate, Tenant: "1", App: "jira", To: Deactivated})
		wantCode(t, err, fault.NotFound, "insight")
		_, err = x.db.Apply(x.ctx, x.l, Step{Action: "explode", Tenant: "1", To: Deactivated})
		wantCode(t, err, fault.Invalid, "operation ID", "explode")
	})
}

func TestAppDelete(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		original := x.dumpAll(t, "")
		others := x.dumpAll(t, "site_id <> 2")
		mine := x.dumpAll(t, "site_id = 2")
		x.step(t, "op_a1", Deactivate, "2", "insight", Deactivated, Active)
		r := x.step(t, "op_a2", Delete, "2", "insight", Deleted, Deactivated)
		if len(r.Rows) != 2 || r.Rows["insight_objects"] != 2 || r.Rows["insight_links"] != 2 {
			t.Fatalf("app delete moved %+v", r.Rows)
		}
		sameDump(t, "other tenants after app delete", others, x.dumpAll(t, "site_id <> 2"))
		now := x.dumpAll(t, "site_id = 2")
		for table, rows := range mine {
			if table == "insight_objects" || table == "insight_links" {
				rows = nil
			}
			if !slices.Equal(rows, now[table]) {
				t.Errorf("table %s of tenant 2 changed beyond its app rows: %q", table, now[table])
			}
		}
		info, err := x.db.Tenant(x.ctx, x.l, "2")
		if err != nil || info.State != Active || len(info.Apps) != 1 || info.Apps[0].App != "insight" || info.Apps[0].State != Deleted {
			t.Fatalf("tenant after app delete: %+v %v", info, err)
		}

		// The whole tenant can now go and come back; the app stays deleted.
		x.remove(t, "2")
		x.step(t, "op_u", Undelete, "2", "", Deactivated, Deleted)
		if n := x.count(t, "SELECT count(*) FROM insight_objects WHERE site_id = 2"); n != 0 {
			t.Fatalf("whole undelete restored %d app rows of a separately deleted app", n)
		}
		x.step(t, "op_a3", Undelete, "2", "insight", Deactivated, Deleted)
		x.step(t, "op_a4", Reactivate, "2", "insight", Active, Deactivated)
		x.step(t, "op_r", Reactivate, "2", "", Active, Deactivated)
		sameDump(t, "after app and whole undelete", original, x.dumpAll(t, ""))

		// An app step of a deleted tenant is refused.
		x.remove(t, "5")
		_, err = x.db.Apply(x.ctx, x.l, Step{OpID: "op_a5", Action: Delete, Tenant: "5", App: "insight", To: Deleted})
		wantCode(t, err, fault.Conflict, "undelete")
	})
}

func TestUndeleteExact(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		if e.Name == "postgres" {
			x.exec(t, `CREATE TABLE kitchen (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id),
				i8 bigint, i4 integer, i2 smallint, f8 double precision, f4 real, b bytea, t text, vc varchar(20), ch char(5),
				j json, jb jsonb, ts timestamptz, tsn timestamp, d date, tm time, num numeric(38,10), numu numeric,
				arr integer[], tarr text[], u uuid, bo boolean, iv interval, inet_ inet,
				gen bigint GENERATED ALWAYS AS (i4::bigint * 2) STORED,
				ident bigint GENERATED ALWAYS AS IDENTITY)`)
			x.exec(t, `INSERT INTO kitchen (id, site_id, i8, i4, i2, f8, f4, b, t, vc, ch, j, jb, ts, tsn, d, tm, num, numu, arr, tarr, u, bo, iv, inet_) VALUES
				(1, 1, -9223372036854775808, -2147483648, -32768, 0.1::float8 + 0.2::float8, 3.4028235e38, '\x00ff00'::bytea, '', '', 'ab',
				 '{"b": 1,  "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}', '2024-02-29 23:59:59.123456+05:30', '1999-12-31 23:59:59.999999',
				 '0001-01-01', '24:00:00', 1234567890123456789012345678.0123456789, 0.000000000000000000000000000001,
				 '{1,NULL,3}', '{"a,b","",NULL,"🎉"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, '1 year 2 mons 3 days 04:05:06.789', '10.0.0.1/8'),
				(2, 1, 9223372036854775807, 2147483647, 32767, 'NaN', '-Infinity', '\x'::bytea, NULL, 'e'||chr(769)||'漢字', NULL,
				 'null', '{"k": "👩‍👩‍👧", "n": null}', '-infinity', 'infinity', '4714-11-24 BC'::date, '00:00:00', -0.0000000001, 'NaN',
				 '{}', '{}', NULL, false, '-1 days', '::1'),
				(3, 1, 0, 0, 0, '-0', 1e-38, NULL, 'tab	and newline
				here', 'x', 'y', '[]', '[]', '1970-01-01 00:00:00+00', '2038-01-19 03:14:08', '9999-12-31', '12:34:56.789', 0, 1e-130,
				 NULL, '{NULL}', '00000000-0000-0000-0000-000000000000', NULL, '0', NULL),
				(4, 1, 1, 1, 1, 1e-308, 1e-45, '\x0000', 'x', 'x', 'x', '{}', '{}', 'infinity', '-infinity', 'infinity', '23:59:59.999999',
				 99999999999999999999999999.9999999999, 12345678901234567890123456789012345678901234567890.123456789, '{2147483647}', '{"\\\""}', NULL, NULL, NULL, NULL),
				(5, 2, 5, 5, 5, 'Infinity', 'NaN', '\x01', 'other tenant', 'o', 'o', '{}', '{}', now(), now(), now(), now(), 5, 5, '{5}', '{5}', NULL, true, '5 s', NULL)`)
		} else {
			x.exec(t, `CREATE TABLE kitchen (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id),
				i INTEGER, r REAL, b BLOB, t TEXT, n NUMERIC, untyped, d DATETIME, j JSON, v VARCHAR(3), bool BOOLEAN,
				gen INTEGER GENERATED ALWAYS AS (i * 2) VIRTUAL)`)
			x.exec(t, `CREATE TABLE strictk (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL, a ANY, i INT, t TEXT) STRICT`)
			ins := `INSERT INTO kitchen (id, site_id, i, r, b, t, n, untyped, d, j, v, bool) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`
			rows := [][]any{
				{1, 1, int64(-9223372036854775808), 0.1 + 0.2, []byte{0, 255, 0}, "", "1234567890123456789012345678.0123456789", "42", "2024-02-29 23:59:59.123456+05:30", `{"b": 1,  "a": [1, 2.50]}`, "longer than 3", true},
				{2, 1, int64(9223372036854775807), 1e-308, []byte{}, nil, 0.1, int64(42), 1.5, "null", "e\u0301漢字", false},
				{3, 1, int64(0), -0.0, nil, "👩‍👩‍👧", "12", []byte{0, 0}, int64(1700000000), nil, nil, nil},
				{4, 1, "not a number", 5e-324, []byte("text as blob"), "tab\tand\nnewline", "x1", 3.25, nil, "[]", "", int64(7)},
				{5, 2, int64(5), 1.7976931348623157e308, []byte{1}, "other tenant", 5, nil, nil, nil, nil, nil},
			}
			for _, r := range rows {
				if _, err := x.raw.Exec(ins, r...); err != nil {
					t.Fatal(err)
				}
			}
			for i, v := range []any{"42", int64(42), 4.2, []byte{0}, nil} {
				if _, err := x.raw.Exec(`INSERT INTO strictk (id, site_id, a, i, t) VALUES ($1, 1, $2, $3, $4)`, i+1, v, int64(i), "t"); err != nil {
					t.Fatal(err)
				}
			}
		}
		x.l = x.protect(t, sampleSpec())
		tables := append([]string{"kitchen"}, x.l.Tables...)
		if e.Name == "sqlite" {
			tables = append(tables, "strictk")
		}
		before := map[string][]string{}
		for _, table := range tables {
			before[table] = x.dump(t, table, "")
		}
		del := x.remove(t, "1")
		if del.Rows["kitchen"] != 4 {
			t.Fatalf("moved %d kitchen rows, want 4", del.Rows["kitchen"])
		}
		if n := x.count(t, "SELECT count(*) FROM kitchen"); n != 1 {
			t.Fatalf("%d kitchen rows left, want the other tenant's 1", n)
		}
		x.step(t, "op_undel", Undelete, "1", "", Deactivated, Deleted)
		for _, table := range tables {
			if got := x.dump(t, table, ""); !slices.Equal(before[table], got) {
				t.Errorf("table %s not restored exactly:\nbefore %q\nafter  %q", table, before[table], got)
			}
		}
		if e.Name == "postgres" {
			// The identity sequence was not disturbed by inserting stored values.
			if _, err := x.raw.Exec(`INSERT INTO kitchen (id, site_id) VALUES (6, 1)`); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestTextKeys(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		dsn, base, raw := e.NewDB(t)
		x := &env{e: e, ctx: t.Context(), raw: raw}
		x.exec(t, `CREATE TABLE orgs (slug TEXT PRIMARY KEY, title TEXT);
CREATE TABLE docs (id {id}, org TEXT NOT NULL REFERENCES orgs(slug), body TEXT);
INSERT INTO orgs VALUES ('acme', 'Acme'), ('42', 'Numeric-looking'), ('umbrella', NULL);
INSERT INTO docs VALUES (1, 'acme', 'a'), (2, 'acme', 'b'), (3, '42', 'c'), (4, 'umbrella', 'd')`)
		db, err := Open(x.ctx, dsn, base)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		x.db = db
		x.l = x.protect(t, Spec{Product: "wiki", TenantColumn: "org", TenantsTable: "orgs"})
		if x.l.NameColumn != "title" || x.l.KeyColumn != "slug" {
			t.Fatalf("layout %+v", x.l)
		}
		_, err = raw.Exec("DELETE FROM orgs WHERE slug = 'acme'")
		refused(t, err)
		for _, key := range []string{"acme", "42"} {
			x.remove(t, key)
			x.step(t, "op_u"+key, Undelete, key, "", Deactivated, Deleted)
		}
		if n := x.count(t, "SELECT count(*) FROM docs"); n != 4 {
			t.Fatalf("%d docs after round trips", n)
		}
		x.step(t, "op_del_acme_again", Delete, "acme", "", Deleted, Deactivated)
		list, err := db.Tenants(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ti := range list {
			got = append(got, ti.Key+":"+ti.Name+":"+string(ti.State))
		}
		if strings.Join(got, ",") != "42:Numeric-looking:deactivated,acme:Acme:deleted,umbrella::active" {
			t.Fatalf("tenants %q", got)
		}
	})
}

func TestGuards(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)

		// Ordinary application deletes below the limits keep working.
		if _, err := x.raw.Exec("DELETE FROM comments WHERE id = 10013"); err != nil {
			t.Fatalf("delete one comment: %v", err)
		}
		if _, err := x.raw.Exec("DELETE FROM issues WHERE site_id = 3 AND id BETWEEN 3002 AND 3006"); err != nil {
			t.Fatalf("delete 5 issues (and their comments) of one tenant: %v", err)
		}
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 3"); n != 3 {
			t.Fatalf("cascade left %d comments of tenant 3, want 3", n)
		}

		// The root row cannot go, through this pool or a new plain connection.
		_, err := x.raw.Exec("DELETE FROM sites WHERE id = 1")
		refused(t, err, "root row", "lifeline tenants delete site:", "sites")
		if e.Name == "postgres" {
			refused(t, err, "tenant 1", "site:1")
		}
		_, err = x.raw.Exec("UPDATE sites SET id = 77 WHERE id = 1")
		refused(t, err, "key")
		if _, err := x.raw.Exec("UPDATE sites SET name = 'renamed' WHERE id = 1"); err != nil {
			t.Fatalf("renaming a tenant: %v", err)
		}
		fresh := x.freshConn(t)
		_, err = fresh.Exec("DELETE FROM sites")
		refused(t, err)

		// Mass deletes past the limits are refused.
		x.l = x.protect(t, Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
			Apps: map[string][]string{"insight": {"insight_objects", "insight_links"}}, Limits: Limits{RowsPerStatement: 5, RowsPerTransaction: 8, TenantsPerStatement: 2}})
		_, err = x.raw.Exec("DELETE FROM comments WHERE site_id = 2")
		refused(t, err, "comments", "5")
		_, err = x.raw.Exec("DELETE FROM comments WHERE id IN (20013, 40013, 50013)")
		refused(t, err, "tenants")
		_, err = x.raw.Exec("DELETE FROM attachments")
		refused(t, err)
		if _, err := x.raw.Exec("DELETE FROM comments WHERE id IN (10023, 20023)"); err != nil {
			t.Fatalf("2 rows of 2 tenants: %v", err)
		}
		// Many one-row statements in a row are each their own statement.
		for _, id := range []int{10033, 10043, 10053, 10063, 20033, 20043, 20053, 20063, 40023, 40033, 40043, 50013, 50023, 50033} {
			if _, err := x.raw.Exec("DELETE FROM comments WHERE id = $1", id); err != nil {
				t.Fatalf("single-row delete %d: %v", id, err)
			}
		}
		if n := x.count(t, "SELECT count(*) FROM sites"); n != 5 {
			t.Fatalf("%d sites left", n)
		}

		// Lifeline itself deletes whole tenants despite the guards.
		x.remove(t, "2")
		x.step(t, "op_u2", Undelete, "2", "", Deactivated, Deleted)
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 2"); n != 13 {
			t.Fatalf("tenant 2 has %d comments after the round trip, want 13", n)
		}
		// A purge of a large tenant, too.
		x.remove(t, "4")
		x.step(t, "op_p4", Purge, "4", "", Purged, Deleted)
		// And the guard state left behind does not trip the next app delete.
		if _, err := x.raw.Exec("DELETE FROM comments WHERE id = 50043"); err != nil {
			t.Fatalf("delete after Lifeline's steps: %v", err)
		}
	})
}

func TestConcurrentTenants(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		x.seed(t, 9)
		big := 20000
		if raceEnabled {
			big = 2000
		}
		x.exec(t, fmt.Sprintf(`WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %d)
INSERT INTO comments (id, site_id, issue_id, parent_id, body) SELECT 900000 + n, 9, 9001, NULL, 'bulk comment ' || n FROM s`, big))
		other := x.dumpAll(t, "site_id NOT IN (9, 1)")

		var stop atomic.Bool
		var ops atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		pool := x.db.SQL()
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := 500000 + w*100000
				for i := 0; !stop.Load(); i++ {
					var err error
					if w%2 == 0 {
						var n int
						err = pool.QueryRow("SELECT count(*) FROM comments WHERE site_id = 1").Scan(&n)
						if err == nil && n < 18 {
							err = fmt.Errorf("reader saw %d comments of tenant 1", n)
						}
					} else {
						id++
						if _, err = pool.Exec("INSERT INTO comments (id, site_id, issue_id, body) VALUES ($1, 1, 1001, 'live')", id); err == nil {
							_, err = pool.Exec("DELETE FROM comments WHERE id = $1", id)
						}
					}
					if err != nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
						return
					}
					ops.Add(1)
				}
			}()
		}
		start := time.Now()
		del := x.remove(t, "9")
		x.step(t, "op_u9", Undelete, "9", "", Deactivated, Deleted)
		took := time.Since(start)
		stop.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if del.Rows["comments"] != int64(big+18) {
			t.Fatalf("moved %d comments, want %d", del.Rows["comments"], big+18)
		}
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 9"); n != int64(big+18) {
			t.Fatalf("%d comments of tenant 9 after undelete", n)
		}
		sameDump(t, "uninvolved tenants", other, x.dumpAll(t, "site_id NOT IN (9, 1)"))
		t.Logf("%s: delete+undelete of %d rows took %v while other tenants ran %d queries", e.Name, big+18+35, took, ops.Load())
		if ops.Load() == 0 {
			t.Error("other tenants made no progress")
		}
	})
}

func TestOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := Open(t.Context(), "sqlite:missing.db", dir)
	wantCode(t, err, fault.NotFound, "sqlite:missing.db", "never creates")
	if fileExists(dir + "/missing.db") {
		t.Fatal("Open created the missing product database")
	}
	_, err = Open(t.Context(), "postgres://app:s3cret@127.0.0.1:1/nowhere?sslmode=disable&connect_timeout=2", "")
	wantCode(t, err, fault.Unavailable, "postgres://app@127.0.0.1:1/nowhere")
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error shows the password: %v", err)
	}
	_, err = Open(t.Context(), "mysql://x", "")
	wantCode(t, err, fault.Invalid)
}

// TestStepRace: steps of one tenant started at once are serialised by the
// state lock; exactly one delete wins, and a whole delete racing an app
// delete never copies a row twice.
func TestStepRace(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		x.step(t, "op_d2", Deactivate, "2", "", Deactivated, Active)
		var ok, conflicts atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := x.db.Apply(x.ctx, x.l, Step{OpID: fmt.Sprintf("op_race_%d", i), Action: Delete, Tenant: "2", From: []State{Deactivated}, To: Deleted})
				switch {
				case err == nil:
					ok.Add(1)
				case fault.CodeOf(err) == fault.Conflict:
					conflicts.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 1 || conflicts.Load() != 3 {
			t.Fatalf("%d deletes succeeded and %d conflicted, want 1 and 3", ok.Load(), conflicts.Load())
		}
		if info, err := x.db.Tenant(x.ctx, x.l, "2"); err != nil || info.Trash["comments"] != 18 {
			t.Fatalf("trash after racing deletes: %+v %v", info, err)
		}

		x.step(t, "op_d3", Deactivate, "3", "", Deactivated, Active)
		x.step(t, "op_d3a", Deactivate, "3", "insight", Deactivated, Active)
		errs := make(chan error, 2)
		for _, app := range []string{"", "insight"} {
			go func() {
				_, err := x.db.Apply(x.ctx, x.l, Step{OpID: "op_race3" + app, Action: Delete, Tenant: "3", App: app, From: []State{Deactivated}, To: Deleted})
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil && fault.CodeOf(err) != fault.Conflict {
				t.Fatal(err)
			}
		}
		info, err := x.db.Tenant(x.ctx, x.l, "3")
		if err != nil || info.Trash["insight_objects"] != 2 || info.Trash["insight_links"] != 2 || info.Trash["comments"] != 18 {
			t.Fatalf("trash after whole/app race: %+v %v", info, err)
		}
	})
}

// TestSchemaChange: a column added after protect is refused by Apply until
// protect runs again, then kept through delete and undelete.
func TestSchemaChange(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		x.remove(t, "4")
		x.exec(t, "ALTER TABLE issues ADD COLUMN priority {int};\nUPDATE issues SET priority = id WHERE site_id = 1")
		x.step(t, "op_d1", Deactivate, "1", "", Deactivated, Active)
		_, err := x.db.Apply(x.ctx, x.l, Step{OpID: "op_del1", Action: Delete, Tenant: "1", From: []State{Deactivated}, To: Deleted})
		wantCode(t, err, fault.Refused, "issues", "priority", "lifeline protect")
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 1"); n != 18 {
			t.Fatalf("a refused step moved rows: %d comments left", n)
		}

		// A new protected table appearing also needs a new layout.
		x.exec(t, "CREATE TABLE labels (id {id}, site_id {int} NOT NULL REFERENCES sites(id), label TEXT)")
		wantCode(t, x.db.Protect(x.ctx, x.l), fault.Refused, "schema changed", "labels")

		x.l = x.protect(t, sampleSpec())
		before := x.dump(t, "issues", "site_id = 1")
		x.step(t, "op_del1b", Delete, "1", "", Deleted, Deactivated)
		x.step(t, "op_u1", Undelete, "1", "", Deactivated, Deleted)
		if got := x.dump(t, "issues", "site_id = 1"); !slices.Equal(before, got) {
			t.Fatalf("issues with the new column not restored:\n%q\n%q", before, got)
		}
		x.step(t, "op_u4", Undelete, "4", "", Deactivated, Deleted)
		if n := x.count(t, "SELECT count(*) FROM issues WHERE site_id = 4 AND priority IS NULL"); n != 6 {
			t.Fatalf("rows deleted before the column existed: %d with NULL priority, want 6", n)
		}
	})
}

// TestUnlocked: the escape hatch for other operations deletes one tenant's
// rows past the guards, and only that tenant's.
func TestUnlocked(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		err := x.db.Unlocked(x.ctx, "2", "op_restore", func(tx *sql.Tx) error {
			if _, err := tx.Exec("DELETE FROM attachments WHERE site_id = 2"); err != nil {
				return err
			}
			_, err := tx.Exec("DELETE FROM attachments WHERE site_id IN (1, 3, 4, 5)")
			return err
		})
		refused(t, err)
		if n := x.count(t, "SELECT count(*) FROM attachments"); n != 15 {
			t.Fatalf("%d attachments after a rolled-back unlocked step, want 15", n)
		}
		err = x.db.Unlocked(x.ctx, "2", "op_restore", func(tx *sql.Tx) error {
			_, err := tx.Exec("DELETE FROM comments WHERE site_id = 2")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := x.count(t, "SELECT count(*) FROM lifeline_unlock"); n != 0 {
			t.Fatalf("%d unlock rows left behind", n)
		}
	})
}
