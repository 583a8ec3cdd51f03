package contacts

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"lifeline/internal/contacts/exportfile"
)

func sampleDump() *dump {
	return &dump{Format: dumpFormat, Version: ArchiveVersion, VaultID: "v_1", Revision: 7,
		ExportedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Accounts:   []accountRow{{ID: "acme", Name: "Acme", Source: "api", CreatedAt: 1, UpdatedAt: 2, Version: 1}},
		Tenants:    []tenantRow{{Key: "42", AccountID: "acme", Name: "Site 42", States: `{"tracker":"purged"}`, CreatedAt: 1, UpdatedAt: 1}},
		Contacts: []contactRow{{ID: "c_1", Email: "Ana@example.com", EmailKey: "ana@example.com", Domain: "example.com",
			Name: "Ana Lima ☃", Source: "sync:tracker", VerifiedAt: 1767225600123456, CreatedAt: 1, UpdatedAt: 1, Version: 3}},
		Aliases: []aliasRow{{Email: "Ana@example.com", ContactID: "c_1", Source: "sync:tracker", At: 1}},
		Links:   []linkRow{{ContactID: "c_1", Scope: scopeTenant, ScopeKey: "42", Role: "admin", Source: "sync:tracker", AddedAt: 1}},
		History: []historyRow{{Seq: 1, At: 1, Actor: "t", Source: "sync:tracker", Action: "create", ContactID: "c_1", Version: 1, Detail: `{"email":"Ana@example.com"}`}},
		Erased:  []erasedRow{{Hash: strings.Repeat("ab", 32), LedgerID: 3, At: 9}},
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	d := sampleDump()
	data, err := encodeArchive(d, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeArchive(data, key, exportfile.MaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Errorf("round trip changed the document:\n got %+v\nwant %+v", got, d)
	}
}

// The document inside a sound container is checked too.
func TestArchiveRefusesBadDocuments(t *testing.T) {
	t.Parallel()
	for name, mutate := range map[string]func(*dump){
		"other format":     func(d *dump) { d.Format = "something-else" },
		"dangling link":    func(d *dump) { d.Links[0].ContactID = "c_404" },
		"unknown role":     func(d *dump) { d.Links[0].Role = "owner" },
		"repeated contact": func(d *dump) { d.Contacts = append(d.Contacts, d.Contacts[0]) },
		"history disorder": func(d *dump) { d.History = append(d.History, d.History[0]) },
		"dangling alias":   func(d *dump) { d.Aliases[0].ContactID = "c_404" },
	} {
		d := sampleDump()
		mutate(d)
		data, err := encodeArchive(d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeArchive(data, nil, exportfile.MaxPayload); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", name, err)
		}
	}
	data, _ := exportfile.Encode([]byte(`{"format":"lifeline-contacts-vault","version":1,"surprise":true}`), nil)
	if _, err := decodeArchive(data, nil, exportfile.MaxPayload); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unknown field: %v", err)
	}
}
