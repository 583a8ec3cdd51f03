package contacts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"lifeline/internal/contacts/exportfile"
)

// An export object is an exportfile container (versioned, checksummed,
// zstd-compressed, AES-256-GCM-sealed when a key is configured) around one
// JSON document: the whole vault at one revision (dump). docs/contacts.md
// describes both.

// ArchiveVersion is the version of the JSON document inside.
const ArchiveVersion = 1

// The export errors, from package exportfile; test with errors.Is.
var (
	ErrCorrupt = exportfile.ErrCorrupt
	ErrVersion = exportfile.ErrVersion
	ErrKey     = exportfile.ErrKey
)

// dump is the export document: every table of the vault, row for row.
type dump struct {
	Format     string       `json:"format"` // "lifeline-contacts-vault"
	Version    int          `json:"version"`
	VaultID    string       `json:"vault_id"`
	Revision   int64        `json:"revision"`
	ExportedAt time.Time    `json:"exported_at"`
	Accounts   []accountRow `json:"accounts"`
	Tenants    []tenantRow  `json:"tenants"`
	Contacts   []contactRow `json:"contacts"`
	Aliases    []aliasRow   `json:"aliases"`
	Links      []linkRow    `json:"links"`
	History    []historyRow `json:"history"`
	Erased     []erasedRow  `json:"erased"`
}

const dumpFormat = "lifeline-contacts-vault"

// encodeArchive writes d as an export object, encrypted when key is set.
func encodeArchive(d *dump, key []byte) ([]byte, error) {
	plain, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	return exportfile.Encode(plain, key)
}

// decodeArchive reads an export object: the container, then the document,
// strictly (unknown fields are refused), then its consistency. Every
// failure wraps ErrCorrupt, ErrVersion or ErrKey.
func decodeArchive(data, key []byte, maxPlain int) (*dump, error) {
	plain, err := exportfile.Decode(data, key, maxPlain)
	if err != nil {
		return nil, err
	}
	var d dump
	jd := json.NewDecoder(bytes.NewReader(plain))
	jd.DisallowUnknownFields()
	if err := jd.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: document: %v", ErrCorrupt, err)
	}
	if jd.More() {
		return nil, fmt.Errorf("%w: trailing data after the document", ErrCorrupt)
	}
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &d, nil
}

// check verifies the document's own consistency, so a restore fails with a
// clear message before it writes anything.
func (d *dump) check() error {
	if d.Format != dumpFormat || d.Version != ArchiveVersion {
		return fmt.Errorf("document format %q version %d", d.Format, d.Version)
	}
	ids, keys := map[string]bool{}, map[string]bool{}
	for _, c := range d.Contacts {
		if c.ID == "" || ids[c.ID] || keys[c.EmailKey] {
			return fmt.Errorf("contact %q is empty or repeated", c.ID)
		}
		ids[c.ID], keys[c.EmailKey] = true, true
	}
	for _, l := range d.Links {
		if !ids[l.ContactID] {
			return fmt.Errorf("a link refers to unknown contact %q", l.ContactID)
		}
		if (l.Scope != scopeTenant && l.Scope != scopeAccount) || Role(l.Role).rank() == len(Roles) {
			return fmt.Errorf("a link of contact %q has scope %q and role %q", l.ContactID, l.Scope, l.Role)
		}
	}
	for _, a := range d.Aliases {
		if !ids[a.ContactID] {
			return fmt.Errorf("an alias refers to unknown contact %q", a.ContactID)
		}
	}
	seq := int64(0)
	for _, h := range d.History {
		if h.Seq <= seq {
			return errors.New("history is not in order")
		}
		seq = h.Seq
	}
	return nil
}
