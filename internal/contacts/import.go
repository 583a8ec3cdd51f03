package contacts

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"slices"
	"strings"

	"lifeline/internal/fault"
)

// ImportColumns is the CSV header `contacts import` understands, in any
// order and case. Only email is required. role and tenant may hold several
// values separated by ";": each role is recorded for each tenant.
var ImportColumns = []string{"email", "name", "phone", "language", "role", "tenant", "account", "account_name"}

// ImportOptions control one import.
type ImportOptions struct {
	Actor string
	// Source names the import in links and history, e.g. "import:billing.csv".
	Source string
	DryRun bool
}

// ImportCSV reads a CSV file (header first, see ImportColumns) and applies
// it as one transaction. An import is partial: it adds and updates, and
// never removes what it does not mention. A file with any unusable row is
// refused whole (fault.Invalid, naming the lines) and changes nothing; so
// does a dry run, which reports exactly what the import would do.
func (s *Service) ImportCSV(ctx context.Context, r io.Reader, o ImportOptions) (*Changes, error) {
	records, err := ParseCSV(r)
	if err != nil {
		return nil, err
	}
	if o.Source == "" {
		o.Source = "import"
	}
	return s.apply(ctx, &batch{source: o.Source, actor: o.Actor, records: records, strict: true, dryRun: o.DryRun})
}

// ParseCSV turns an import file into Records, one per role and tenant.
// A missing or unknown header column is fault.Invalid.
func ParseCSV(r io.Reader) ([]Record, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 0 // every row as wide as the header
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fault.New(fault.Invalid, "start the file with the header: "+strings.Join(ImportColumns, ","), "the CSV file is empty")
	}
	if err != nil {
		return nil, csvErr(err)
	}
	idx := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if !slices.Contains(ImportColumns, h) {
			return nil, fault.New(fault.Invalid, "the header may name: "+strings.Join(ImportColumns, ", "), "the CSV header has an unknown column %q", header[i])
		}
		if _, dup := idx[h]; dup {
			return nil, fault.New(fault.Invalid, "name each column once", "the CSV header names %q twice", h)
		}
		idx[h] = i
	}
	if _, ok := idx["email"]; !ok {
		return nil, fault.New(fault.Invalid, "add an email column; the header may name: "+strings.Join(ImportColumns, ", "), "the CSV header has no email column")
	}
	var out []Record
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, csvErr(err)
		}
		line, _ := cr.FieldPos(0)
		get := func(name string) string {
			if i, ok := idx[name]; ok {
				return strings.TrimSpace(row[i])
			}
			return ""
		}
		base := Record{Line: line, Email: get("email"), Name: get("name"), Phone: get("phone"), Language: get("language"),
			Account: get("account"), AccountName: get("account_name")}
		roles, tenants := splitList(get("role")), splitList(get("tenant"))
		if len(tenants) == 0 {
			tenants = []string{""}
		}
		if len(roles) == 0 {
			roles = []string{""}
		}
		for _, tk := range tenants {
			for _, role := range roles {
				rec := base
				rec.Tenant, rec.Role = tk, Role(strings.ToLower(role))
				out = append(out, rec)
			}
		}
	}
}

func splitList(s string) []string {
	var out []string
	for v := range strings.SplitSeq(s, ";") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func csvErr(err error) error {
	return fault.Wrap(err, fault.Invalid, "check the file is comma-separated with the same number of fields on every line", "the CSV file cannot be read")
}
