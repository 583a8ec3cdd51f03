package state

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"

	"lifeline/internal/fault"
)

// Token secrets look like "ll_" + ID + "_" + 52 base32 characters (260 bits
// from crypto/rand). The ID (12 base32 characters) finds the row; only the
// SHA-256 of the whole secret is stored, and it is compared in constant
// time. A fast hash is enough: the secret has far too much entropy to guess.
const (
	tokenIDLen     = 12
	tokenSecretLen = 52
	tokenPrefix    = "ll_"
)

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func roleNames() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// CreateToken makes a token for name with role and returns its secret, which
// is shown once and never stored. An empty name or an unknown role is
// fault.Invalid. The audit entry "token.create" records the ID, name and
// role, never the secret.
func (s *Store) CreateToken(ctx context.Context, name string, role Role) (string, Token, error) {
	if role.rank() == 0 {
		return "", Token{}, fault.New(fault.Invalid, "use one of: "+roleNames(), "unknown role %q", role)
	}
	if strings.TrimSpace(name) == "" {
		return "", Token{}, fault.New(fault.Invalid, "name the person or script the token is for", "token without a name")
	}
	tok := Token{ID: randomString(tokenIDLen), Name: name, Role: role, Created: s.stamp()}
	secret := tokenPrefix + tok.ID + "_" + randomString(tokenSecretLen)
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.Rebind("INSERT INTO api_tokens (id, name, role, secret_hash, created, revoked) VALUES (?, ?, ?, ?, ?, 0)"),
			tok.ID, tok.Name, string(tok.Role), hashSecret(secret), Micros(tok.Created))
		if err != nil {
			return fmt.Errorf("state: create token: %w", err)
		}
		_, err = s.appendAudit(ctx, tx, AuditEntry{Action: "token.create",
			Detail: map[string]any{"token": tok.ID, "name": tok.Name, "role": string(tok.Role)}})
		return err
	})
	if err != nil {
		return "", Token{}, err
	}
	return secret, tok, nil
}

// Authenticate returns the token whose secret this is. A malformed, unknown
// or revoked secret, or a wrong one, is fault.Unauthorized.
func (s *Store) Authenticate(ctx context.Context, secret string) (Token, error) {
	const hint = "pass a token made by `lifeline tokens create NAME --role ROLE`"
	rest, ok := strings.CutPrefix(secret, tokenPrefix)
	id, random, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || len(id) != tokenIDLen || len(random) != tokenSecretLen || !isBase32(id) || !isBase32(random) {
		return Token{}, fault.New(fault.Unauthorized, hint+"; tokens look like ll_<id>_<secret>", "malformed token")
	}
	var tok Token
	var role, stored string
	var created, revoked int64
	err := s.db.QueryRowContext(ctx, s.Rebind("SELECT id, name, role, secret_hash, created, revoked FROM api_tokens WHERE id = ?"), id).
		Scan(&tok.ID, &tok.Name, &role, &stored, &created, &revoked)
	if isNoRows(err) {
		return Token{}, fault.New(fault.Unauthorized, hint, "unknown token %s", id)
	}
	if err != nil {
		return Token{}, fmt.Errorf("state: authenticate: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(stored)) != 1 {
		return Token{}, fault.New(fault.Unauthorized, hint, "wrong secret for token %s", id)
	}
	if revoked != 0 {
		return Token{}, fault.New(fault.Unauthorized, hint, "token %s (%s) was revoked", id, tok.Name)
	}
	tok.Role, tok.Created = Role(role), FromMicros(created)
	return tok, nil
}

// ListTokens returns every token, revoked ones included, oldest first.
func (s *Store) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, name, role, created, revoked FROM api_tokens ORDER BY created, id")
	if err != nil {
		return nil, fmt.Errorf("state: list tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		var t Token
		var role string
		var created, revoked int64
		if err := rows.Scan(&t.ID, &t.Name, &role, &created, &revoked); err != nil {
			return nil, fmt.Errorf("state: list tokens: %w", err)
		}
		t.Role, t.Created, t.Revoked = Role(role), FromMicros(created), revoked != 0
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken makes a token unusable from now on, and audits
// "token.revoke". Revoking a revoked token does nothing. An unknown id is
// fault.NotFound.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	now := s.stamp()
	return s.write(ctx, func(tx *sql.Tx) error {
		var name string
		var revoked int64
		err := tx.QueryRowContext(ctx, s.Rebind("SELECT name, revoked FROM api_tokens WHERE id = ?"+s.forUpdate()), id).Scan(&name, &revoked)
		if isNoRows(err) {
			return fault.New(fault.NotFound, "check the token ID against the token list", "token %q not found", id)
		}
		if err != nil {
			return fmt.Errorf("state: revoke token: %w", err)
		}
		if revoked != 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, s.Rebind("UPDATE api_tokens SET revoked = ? WHERE id = ?"), Micros(now), id); err != nil {
			return fmt.Errorf("state: revoke token: %w", err)
		}
		_, err = s.appendAudit(ctx, tx, AuditEntry{Action: "token.revoke", Detail: map[string]any{"token": id, "name": name}})
		return err
	})
}
