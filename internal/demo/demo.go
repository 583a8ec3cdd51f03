// Package demo builds a realistic sample multi-tenant SaaS: two SQLite
// product databases that share tables between many tenants, the way real
// applications do, and a lifeline.yaml that protects them. `lifeline demo`
// and the benchmarks use it.
package demo

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"lifeline/internal/fault"
)

// Options shape the generated data.
type Options struct {
	Tenants int    // how many sites; default 300
	Seed    uint64 // same seed, same data
	// Internal is how many of the first sites are the company's own
	// (plans run on them first); default 3.
	Internal int
}

const trackerSchema = `
CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL, plan TEXT NOT NULL, internal INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE site_admins (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), email TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL);
CREATE TABLE projects (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), key TEXT NOT NULL, name TEXT NOT NULL);
CREATE TABLE issues (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), project_id INTEGER NOT NULL REFERENCES projects(id), title TEXT NOT NULL, body TEXT, priority INTEGER, estimate REAL, created_at TEXT NOT NULL);
CREATE INDEX issues_site ON issues(site_id);
CREATE TABLE comments (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE, parent_id INTEGER REFERENCES comments(id), author TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX comments_site ON comments(site_id);
CREATE TABLE attachments (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), issue_id INTEGER NOT NULL REFERENCES issues(id), filename TEXT NOT NULL, content BLOB NOT NULL);
CREATE TABLE insight_objects (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE insight_links (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), from_id INTEGER NOT NULL REFERENCES insight_objects(id), to_id INTEGER NOT NULL REFERENCES insight_objects(id));
CREATE INDEX site_admins_site ON site_admins(site_id);
CREATE INDEX projects_site ON projects(site_id);
CREATE INDEX attachments_site ON attachments(site_id);
CREATE INDEX insight_objects_site ON insight_objects(site_id);
CREATE INDEX insight_links_site ON insight_links(site_id);
`

const wikiSchema = `
CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE spaces (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), key TEXT NOT NULL, name TEXT NOT NULL);
CREATE TABLE pages (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), space_id INTEGER NOT NULL REFERENCES spaces(id), parent_id INTEGER REFERENCES pages(id), title TEXT NOT NULL);
CREATE INDEX pages_site ON pages(site_id);
CREATE TABLE page_versions (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), page_id INTEGER NOT NULL REFERENCES pages(id), version INTEGER NOT NULL, body TEXT NOT NULL, edited_at TEXT NOT NULL);
CREATE INDEX page_versions_site ON page_versions(site_id);
CREATE INDEX spaces_site ON spaces(site_id);
`

// Config is the lifeline.yaml the demo writes next to its databases.
const Config = `# Written by lifeline demo. See lifeline init for every key.
state: sqlite:lifeline-state.db
backups: file:backups
listen: 127.0.0.1:8080
retention: {deleted: 30d, backups: 30d}
guard: {max_rows_per_statement: 1000, max_rows_per_transaction: 10000, max_tenants_per_statement: 10}
products:
  - name: tracker
    database: sqlite:tracker.db
    tenant_column: site_id
    tenants_table: sites
    apps: {insight: [insight_objects, insight_links]}
  - name: wiki
    database: sqlite:wiki.db
    tenant_column: site_id
    tenants_table: sites
contacts:
  - product: tracker
    query: SELECT site_id AS tenant, email, name, role FROM site_admins
`

// Generate writes tracker.db, wiki.db and lifeline.yaml into dir, which must
// not already hold them.
func Generate(ctx context.Context, dir string, o Options) error {
	if o.Tenants <= 0 {
		o.Tenants = 300
	}
	if o.Internal == 0 {
		o.Internal = 3
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"tracker.db", "wiki.db", "lifeline.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fault.New(fault.Refused, "choose an empty folder with --dir, or remove it", "%s already exists in %s", f, dir)
		}
	}
	rng := rand.New(rand.NewPCG(o.Seed, 2022))
	if err := build(ctx, filepath.Join(dir, "tracker.db"), trackerSchema, func(tx *sql.Tx) error { return fillTracker(ctx, tx, rng, o) }); err != nil {
		return err
	}
	if err := build(ctx, filepath.Join(dir, "wiki.db"), wikiSchema, func(tx *sql.Tx) error { return fillWiki(ctx, tx, rng, o) }); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "lifeline.yaml"), []byte(Config), 0o644)
}

func build(ctx context.Context, path, schema string, fill func(*sql.Tx) error) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create schema of %s: %w", path, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fill(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

var (
	words    = strings.Fields("alpha beta orbit nimbus cedar quartz harbor summit falcon ember atlas willow meridian copper lumen tidal")
	suffixes = strings.Fields("Labs Robotics Foods Logistics Health Studio Energy Systems Analytics Travel")
	firsts   = strings.Fields("Ana Ben Chen Dana Eli Fatima Gus Hana Ivan Jun Kofi Lea Mei Noor Omar Priya")
	roles    = strings.Fields("admin technical billing")
)

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// SiteName is the human name of demo site key.
func SiteName(key int) string {
	return fmt.Sprintf("%s %s %d", strings.ToUpper(words[key%len(words)][:1])+words[key%len(words)][1:], suffixes[key%len(suffixes)], key)
}

// inserter prepares one INSERT per table and runs it row after row.
type inserter struct {
	ctx   context.Context
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
	err   error
}

func (in *inserter) add(table string, cols string, vals ...any) {
	if in.err != nil {
		return
	}
	st, ok := in.stmts[table]
	if !ok {
		marks := strings.TrimSuffix(strings.Repeat("?,", len(vals)), ",")
		st, in.err = in.tx.PrepareContext(in.ctx, fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", table, cols, marks))
		if in.err != nil {
			return
		}
		in.stmts[table] = st
	}
	_, in.err = st.ExecContext(in.ctx, vals...)
}

var epoch = time.Date(2021, 1, 4, 9, 0, 0, 0, time.UTC)

// text is n to n+spread words of filler.
func text(rng *rand.Rand, n, spread int) string {
	var b strings.Builder
	for range n + rng.IntN(spread+1) {
		b.WriteString(pick(rng, words))
		b.WriteByte(' ')
	}
	return b.String()
}

// The generators write the data the way a shared application accumulates
// it: every tenant signs up, then all of them work at once, so each
// tenant's rows are interleaved with everyone else's in every table, as in
// a real shared database (and as the issue's reference figures were
// measured). A tenant's rows are scattered over many pages, which is what
// makes putting back a few tenants costly.

func fillTracker(ctx context.Context, tx *sql.Tx, rng *rand.Rand, o Options) error {
	in := &inserter{ctx: ctx, tx: tx, stmts: map[string]*sql.Stmt{}}
	for s := 1; s <= o.Tenants; s++ {
		internal := 0
		if s <= o.Internal {
			internal = 1
		}
		in.add("sites", "id,name,url,plan,internal,created_at", s, SiteName(s), fmt.Sprintf("https://site-%d.example.test", s),
			pick(rng, []string{"free", "standard", "premium"}), internal, epoch.Add(time.Duration(s)*time.Hour).Format(time.RFC3339))
		for a := 0; a < 2; a++ {
			name := pick(rng, firsts)
			in.add("site_admins", "site_id,email,name,role", s, fmt.Sprintf("%s.%d@site-%d.example.test", strings.ToLower(name), a, s), name, roles[a%len(roles)])
		}
		for p := 1; p <= 2; p++ {
			in.add("projects", "id,site_id,key,name", (s-1)*2+p, s, fmt.Sprintf("P%d", p), pick(rng, words)+" project")
		}
	}
	var issueID, commentID, objID int
	for i := 0; i < 12; i++ {
		for p := 1; p <= 2; p++ {
			for s := 1; s <= o.Tenants; s++ {
				issueID++
				in.add("issues", "id,site_id,project_id,title,body,priority,estimate,created_at", issueID, s, (s-1)*2+p,
					pick(rng, words)+" "+pick(rng, words)+" is broken", text(rng, 40, 80),
					rng.IntN(5), float64(rng.IntN(400))/8, epoch.Add(time.Duration(issueID)*time.Minute).Format(time.RFC3339))
				first := 0
				for c := 0; c < 2; c++ {
					commentID++
					var parent any
					if c > 0 {
						parent = first
					} else {
						first = commentID
					}
					in.add("comments", "id,site_id,issue_id,parent_id,author,body", commentID, s, issueID, parent, pick(rng, firsts), "I see "+text(rng, 4, 20))
				}
				if i%4 == 0 {
					blob := make([]byte, 64+rng.IntN(192))
					for k := range blob {
						blob[k] = byte(rng.IntN(256))
					}
					blob[0] = 0 // blobs with zero bytes must survive
					in.add("attachments", "site_id,issue_id,filename,content", s, issueID, fmt.Sprintf("screenshot-%d.png", issueID), blob)
				}
			}
		}
	}
	for k := 0; k < 3; k++ {
		for s := 1; s <= o.Tenants; s++ {
			objID++
			in.add("insight_objects", "id,site_id,kind,data", objID, s, pick(rng, []string{"server", "laptop", "licence"}),
				fmt.Sprintf(`{"serial":"SN-%d","value":%d.5}`, objID, rng.IntN(9000)))
			if k > 0 {
				in.add("insight_links", "site_id,from_id,to_id", s, objID-o.Tenants, objID)
			}
		}
	}
	return in.err
}

func fillWiki(ctx context.Context, tx *sql.Tx, rng *rand.Rand, o Options) error {
	in := &inserter{ctx: ctx, tx: tx, stmts: map[string]*sql.Stmt{}}
	for s := 1; s <= o.Tenants; s++ {
		in.add("sites", "id,name", s, SiteName(s))
		for sp := 1; sp <= 2; sp++ {
			in.add("spaces", "id,site_id,key,name", (s-1)*2+sp, s, fmt.Sprintf("S%d", sp), pick(rng, words)+" space")
		}
	}
	roots := make([]int, 2*o.Tenants) // each space's first page
	var pageID, versionID int
	version := func(s, page, v int) {
		versionID++
		in.add("page_versions", "id,site_id,page_id,version,body,edited_at", versionID, s, page, v,
			text(rng, 80, 120)+"✓ 数据", epoch.Add(time.Duration(versionID)*time.Minute).Format(time.RFC3339))
	}
	for p := 0; p < 6; p++ {
		for sp := 1; sp <= 2; sp++ {
			for s := 1; s <= o.Tenants; s++ {
				pageID++
				space := (s-1)*2 + sp
				var parent any
				if p > 0 {
					parent = roots[space-1]
				} else {
					roots[space-1] = pageID
				}
				in.add("pages", "id,site_id,space_id,parent_id,title", pageID, s, space, parent, "How we "+pick(rng, words))
				version(s, pageID, 1)
			}
		}
	}
	// Second versions come later, page by page in the order they were made.
	for page := 1; page <= pageID; page++ {
		s := (page-1)%o.Tenants + 1
		version(s, page, 2)
	}
	return in.err
}
