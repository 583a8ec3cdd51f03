package demo

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
)

// Tables of the demo products, each with the column naming the tenant.
var Tables = map[string][][2]string{
	"tracker": {{"sites", "id"}, {"site_admins", "site_id"}, {"projects", "site_id"}, {"issues", "site_id"}, {"comments", "site_id"},
		{"attachments", "site_id"}, {"insight_objects", "site_id"}, {"insight_links", "site_id"}},
	"wiki": {{"sites", "id"}, {"spaces", "site_id"}, {"pages", "site_id"}, {"page_versions", "site_id"}},
}

// Digest hashes every row of one tenant in one demo product, with each
// value's SQLite storage class, so that "the same rows" means byte for byte.
// It also returns the row count. It reads through its own connection, as an
// independent observer would.
func Digest(ctx context.Context, db *sql.DB, product, key string) (string, int, error) {
	h := sha256.New()
	n := 0
	for _, t := range Tables[product] {
		rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT * FROM %s WHERE %s = ? ORDER BY rowid", t[0], t[1]), key)
		if err != nil {
			return "", 0, err
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return "", 0, err
			}
			var b strings.Builder
			b.WriteString(t[0])
			for _, v := range vals {
				fmt.Fprintf(&b, "|%T:%v", v, v)
			}
			h.Write([]byte(b.String()))
			n++
		}
		if err := rows.Close(); err != nil {
			return "", 0, err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], n, nil
}
