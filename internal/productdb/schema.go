package productdb

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// canonical sorts a schema in place: tables by name, foreign keys by their
// columns and target. Columns keep their table order, which is part of the
// schema. Two inspections of the same database are then deeply equal.
func canonical(s *Schema) {
	sort.Slice(s.Tables, func(i, j int) bool { return s.Tables[i].Name < s.Tables[j].Name })
	for i := range s.Tables {
		fks := s.Tables[i].ForeignKeys
		sort.Slice(fks, func(a, b int) bool { return fkString(fks[a]) < fkString(fks[b]) })
		if len(fks) == 0 {
			s.Tables[i].ForeignKeys = nil
		}
		if s.Tables[i].PrimaryKey == nil {
			s.Tables[i].PrimaryKey = []string{}
		}
	}
}

func fkString(fk ForeignKey) string {
	s := fmt.Sprintf("(%s) -> %s(%s)", strings.Join(fk.Columns, ", "), fk.RefTable, strings.Join(fk.RefColumns, ", "))
	if fk.OnDelete != "" && fk.OnDelete != "NO ACTION" {
		s += " on delete " + strings.ToLower(fk.OnDelete)
	}
	return s
}

// Table returns the table named name, or nil.
func (s *Schema) Table(name string) *Table {
	for i := range s.Tables {
		if s.Tables[i].Name == name {
			return &s.Tables[i]
		}
	}
	return nil
}

// Column returns the column named name, or nil.
func (t *Table) Column(name string) *Column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// Fingerprint is a stable hex SHA-256 of the canonical schema. protect
// records it; a later mismatch means the schema drifted and the guards and
// trash may no longer fit (see Diff for what changed).
func Fingerprint(s *Schema) string {
	c := cloneSchema(s)
	canonical(c)
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // plain structs of strings and bools always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func cloneSchema(s *Schema) *Schema {
	c := &Schema{Tables: make([]Table, len(s.Tables))}
	for i, t := range s.Tables {
		t.Columns = slices.Clone(t.Columns)
		t.PrimaryKey = slices.Clone(t.PrimaryKey)
		t.ForeignKeys = slices.Clone(t.ForeignKeys)
		c.Tables[i] = t
	}
	return c
}

// Diff lists, one human-readable line each, how cur differs from old:
//
//	table audit_log added
//	table issues: column priority added
//	table pages: primary key changed from (id) to (id, rev)
//
// No lines means no drift.
func Diff(old, cur *Schema) []string {
	var out []string
	o, c := cloneSchema(old), cloneSchema(cur)
	canonical(o)
	canonical(c)
	names := map[string]bool{}
	for _, t := range o.Tables {
		names[t.Name] = true
	}
	for _, t := range c.Tables {
		names[t.Name] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		ot, ct := o.Table(n), c.Table(n)
		switch {
		case ot == nil:
			out = append(out, "table "+n+" added")
		case ct == nil:
			out = append(out, "table "+n+" removed")
		default:
			for _, line := range diffTable(ot, ct) {
				out = append(out, "table "+n+": "+line)
			}
		}
	}
	return out
}

func diffTable(o, c *Table) []string {
	var out []string
	for _, oc := range o.Columns {
		cc := c.Column(oc.Name)
		if cc == nil {
			out = append(out, "column "+oc.Name+" removed")
			continue
		}
		if oc.Type != cc.Type {
			out = append(out, fmt.Sprintf("column %s type changed from %s to %s", oc.Name, orNone(oc.Type), orNone(cc.Type)))
		}
		if oc.NotNull != cc.NotNull {
			if cc.NotNull {
				out = append(out, "column "+oc.Name+" is now NOT NULL")
			} else {
				out = append(out, "column "+oc.Name+" is now nullable")
			}
		}
		if oc.Default != cc.Default {
			out = append(out, fmt.Sprintf("column %s default changed from %s to %s", oc.Name, orNone(oc.Default), orNone(cc.Default)))
		}
	}
	for _, cc := range c.Columns {
		if o.Column(cc.Name) == nil {
			out = append(out, "column "+cc.Name+" added")
		}
	}
	if !slices.Equal(o.PrimaryKey, c.PrimaryKey) {
		out = append(out, fmt.Sprintf("primary key changed from %s to %s", keyList(o.PrimaryKey), keyList(c.PrimaryKey)))
	}
	ofk, cfk := map[string]bool{}, map[string]bool{}
	for _, fk := range o.ForeignKeys {
		ofk[fkString(fk)] = true
	}
	for _, fk := range c.ForeignKeys {
		cfk[fkString(fk)] = true
	}
	for _, fk := range o.ForeignKeys {
		if !cfk[fkString(fk)] {
			out = append(out, "foreign key "+fkString(fk)+" removed")
		}
	}
	for _, fk := range c.ForeignKeys {
		if !ofk[fkString(fk)] {
			out = append(out, "foreign key "+fkString(fk)+" added")
		}
	}
	return out
}

func keyList(cols []string) string {
	if len(cols) == 0 {
		return "none"
	}
	return "(" + strings.Join(cols, ", ") + ")"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
