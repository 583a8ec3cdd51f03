package demo

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// LoadPostgres copies one generated product from its SQLite file into an
// empty PostgreSQL database, for the benchmarks that run the demo on
// PostgreSQL: SQLite's own DDL with its type names spelled the PostgreSQL
// way, then every table of tables (parents first) by COPY, then an index on
// every foreign key but the tenant column (indexed already). PostgreSQL
// checks a reference by looking up the rows that point at a deleted one, and
// a real PostgreSQL schema indexes them; without, each comment a benchmark
// deletes scans the whole comments table for replies (2 s a tenant at
// 10,000 tenants).
func LoadPostgres(ctx context.Context, from, to string, tables [][2]string) error {
	src, err := sql.Open("sqlite", "file:"+from+"?mode=ro")
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := pgx.Connect(ctx, to)
	if err != nil {
		return err
	}
	defer dst.Close(ctx)
	var stmts []string
	if err := each(ctx, src, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid", func(r *sql.Rows) error {
		var stmt string
		err := r.Scan(&stmt)
		stmts = append(stmts, strings.NewReplacer("INTEGER", "bigint", "REAL", "double precision", "BLOB", "bytea").Replace(stmt))
		return err
	}); err != nil {
		return err
	}
	for _, stmt := range stmts {
		if _, err := dst.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	for _, t := range tables {
		if err := copyTable(ctx, src, dst, t[0]); err != nil {
			return fmt.Errorf("copying %s: %w", t[0], err)
		}
	}
	tenantColumn := map[string]string{}
	for _, t := range tables {
		tenantColumn[t[0]] = t[1]
	}
	var indexes []string
	if err := each(ctx, src, `SELECT m.name, f."from" FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table'`, func(r *sql.Rows) error {
		var table, col string
		err := r.Scan(&table, &col)
		if col != tenantColumn[table] {
			indexes = append(indexes, fmt.Sprintf("CREATE INDEX %s_%s ON %s (%s)", table, col, table, col))
		}
		return err
	}); err != nil {
		return err
	}
	for _, ix := range append(indexes, "ANALYZE") {
		if _, err := dst.Exec(ctx, ix); err != nil {
			return fmt.Errorf("%s: %w", ix, err)
		}
	}
	return nil
}

// each calls fn for every row of query.
func each(ctx context.Context, db *sql.DB, query string, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// copyTable copies every row of table by COPY, in rowid order.
func copyTable(ctx context.Context, src *sql.DB, dst *pgx.Conn, table string) error {
	rows, err := src.QueryContext(ctx, "SELECT * FROM "+table+" ORDER BY rowid")
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	_, err = dst.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromFunc(func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		return vals, rows.Scan(ptrs...)
	}))
	return err
}
