package change

import (
	"math"
	"testing"
)

func TestValueEqualIsExact(t *testing.T) {
	t.Parallel()
	nan1 := math.Float64frombits(0x7ff8000000000001)
	nan2 := math.Float64frombits(0x7ff8000000000002)
	same := []Value{{}, {Kind: Int, Int: math.MinInt64}, {Kind: Float, Float: nan1}, {Kind: Text, Bytes: []byte("")}, {Kind: Blob, Bytes: []byte{0}}}
	for _, v := range same {
		if !v.Equal(v) {
			t.Errorf("%+v differs from itself", v)
		}
	}
	differ := [][2]Value{
		{{Kind: Float, Float: 0}, {Kind: Float, Float: math.Copysign(0, -1)}}, // -0 is not +0
		{{Kind: Float, Float: nan1}, {Kind: Float, Float: nan2}},              // NaN payloads kept
		{{Kind: Text, Bytes: []byte("")}, {Kind: Null}},                       // empty is not NULL
		{{Kind: Text, Bytes: []byte("1")}, {Kind: Int, Int: 1}},               // '1' is not 1
		{{Kind: Text, Bytes: []byte("x")}, {Kind: Blob, Bytes: []byte("x")}},  // text is not blob
	}
	for _, p := range differ {
		if p[0].Equal(p[1]) {
			t.Errorf("%+v equals %+v", p[0], p[1])
		}
	}
}

func TestKeyPicksPrimaryKeyColumns(t *testing.T) {
	t.Parallel()
	tb := &Table{Columns: []Column{{Name: "site"}, {Name: "id"}, {Name: "body"}}, PrimaryKey: []int{1, 0}}
	c := &Change{Row: []Value{{Kind: Int, Int: 7}, {Kind: Int, Int: 42}, {Kind: Text, Bytes: []byte("b")}}}
	k := c.Key(tb)
	if len(k) != 2 || k[0].Int != 42 || k[1].Int != 7 {
		t.Errorf("Key = %+v", k)
	}
	if Op('I').String() != "insert" || Op('Z').String() == "insert" {
		t.Error("Op names")
	}
}
