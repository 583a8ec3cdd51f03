package format

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"lifeline/internal/change"
)

// withAbsent marks every third row's non-key, non-tenant columns Absent, as
// a snapshot compacted across an added column holds them.
func withAbsent(rows []change.Change) []change.Change {
	for i := range rows {
		if i%3 != 0 {
			continue
		}
		t := tableOf(rows[i].Table)
		for c := range rows[i].Row {
			if c != t.Tenant && !isKey(t, c) {
				rows[i].Row[c] = change.Value{Kind: change.Absent}
			}
		}
	}
	return rows
}

func isKey(t *change.Table, c int) bool {
	for _, k := range t.PrimaryKey {
		if k == c {
			return true
		}
	}
	return false
}

// Version 2 snapshots carry Absent values through a round trip; segments,
// key columns and version-1 objects never hold them.
func TestAbsentValues(t *testing.T) {
	t.Parallel()
	rows := withAbsent(genSnapshot(7, 500, 60, 4))
	obj, _ := writeSnapshot(t, 500, rows, Options{})
	h, got := readAll(t, obj, nil)
	if h.Version != Version || len(got) != len(rows) {
		t.Fatalf("version %d, %d rows; want %d, %d", h.Version, len(got), Version, len(rows))
	}
	absent := 0
	for i := range rows {
		if d := sameChange(&got[i], &rows[i]); d != "" {
			t.Fatalf("row %d: %s", i, d)
		}
		for _, v := range got[i].Row {
			if v.Kind == change.Absent {
				absent++
			}
		}
	}
	if absent == 0 {
		t.Fatal("no Absent value was written: the test proves nothing")
	}
	if err := Verify(context.Background(), memReader(obj), int64(len(obj)), nil); err != nil {
		t.Fatal(err)
	}

	seg := genChanges(3, 1, 20, 2)
	seg[4].Row[len(seg[4].Row)-1] = change.Value{Kind: change.Absent}
	if _, err := WriteSegment(&bytes.Buffer{}, segHeader(1, 20), seg, Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a segment with an Absent value: %v, want ErrInvalid", err)
	}
	key := genSnapshot(8, 10, 5, 1)
	tb := tableOf(key[0].Table)
	key[0].Row[tb.PrimaryKey[0]] = change.Value{Kind: change.Absent}
	var buf bytes.Buffer
	w, err := NewSnapshotWriter(&buf, Header{Product: "tracker", First: 10, Last: 10, Tables: testTables(), FirstTime: baseTime, LastTime: baseTime, Created: baseTime}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(&key[0]); !errors.Is(err, ErrInvalid) {
		t.Errorf("an Absent primary key: %v, want ErrInvalid", err)
	}

	// The same object claiming version 1, which has no Absent kind: corrupt.
	old := asVersion(obj, 1)
	if _, got := readAll(t, asVersion(writeV2NoAbsent(t), 1), nil); len(got) == 0 {
		t.Fatal("a version 1 object without Absent values does not read")
	}
	if err := Verify(context.Background(), memReader(old), int64(len(old)), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a version 1 snapshot holding Absent values: %v, want ErrCorrupt", err)
	}
}

func writeV2NoAbsent(t *testing.T) []byte {
	obj, _ := writeSnapshot(t, 500, genSnapshot(9, 500, 30, 3), Options{})
	return obj
}

// asVersion rewrites an unencrypted object's version fields (and the header
// checksum), as an older writer would have framed the same bytes.
func asVersion(obj []byte, v uint16) []byte {
	out := bytes.Clone(obj)
	f := out[len(out)-footerSize:]
	hl := binary.LittleEndian.Uint32(f[32:36])
	binary.LittleEndian.PutUint16(out[5:7], v)
	binary.LittleEndian.PutUint32(out[hl-4:hl], checksum(out[:hl-4]))
	binary.LittleEndian.PutUint16(f[41:43], v)
	return out
}
