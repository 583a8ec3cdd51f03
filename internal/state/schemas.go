package state

import (
	"context"
	"database/sql"
	"fmt"
	"unicode/utf8"

	"lifeline/internal/fault"
)

// SaveSchema records what `lifeline protect` saw of a product, replacing the
// previous record of that product, and audits "schema.save" with the
// fingerprint. Protected defaults to now. A record without product or
// fingerprint, or whose Schema is not UTF-8 text, is fault.Invalid.
func (s *Store) SaveSchema(ctx context.Context, r SchemaRecord) error {
	if r.Product == "" || r.Fingerprint == "" {
		return fault.New(fault.Invalid, "this is a bug in the caller of SaveSchema", "schema record without product or fingerprint")
	}
	if !utf8.Valid(r.Schema) {
		return fault.New(fault.Invalid, "store the schema as JSON", "schema of product %s is not UTF-8 text", r.Product)
	}
	if r.Protected.IsZero() {
		r.Protected = s.stamp()
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.Rebind(
			"INSERT INTO product_schemas (product, fingerprint, schema_json, protected) VALUES (?, ?, ?, ?) "+
				"ON CONFLICT (product) DO UPDATE SET fingerprint = excluded.fingerprint, schema_json = excluded.schema_json, protected = excluded.protected"),
			r.Product, r.Fingerprint, string(r.Schema), Micros(r.Protected))
		if err != nil {
			return fmt.Errorf("state: save schema: %w", err)
		}
		_, err = s.appendAudit(ctx, tx, AuditEntry{Action: "schema.save",
			Detail: map[string]any{"product": r.Product, "fingerprint": r.Fingerprint}})
		return err
	})
}

// LoadSchema returns the schema recorded for product. fault.NotFound if the
// product was never protected.
func (s *Store) LoadSchema(ctx context.Context, product string) (*SchemaRecord, error) {
	r := SchemaRecord{Product: product}
	var schema string
	var protected int64
	err := s.db.QueryRowContext(ctx, s.Rebind("SELECT fingerprint, schema_json, protected FROM product_schemas WHERE product = ?"), product).
		Scan(&r.Fingerprint, &schema, &protected)
	if isNoRows(err) {
		return nil, fault.New(fault.NotFound, "run `lifeline protect`", "product %s has not been protected yet", product)
	}
	if err != nil {
		return nil, fmt.Errorf("state: load schema: %w", err)
	}
	r.Schema, r.Protected = []byte(schema), FromMicros(protected)
	return &r, nil
}
