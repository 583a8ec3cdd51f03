// Package faulttest checks errors against the fault codes in tests of every
// package, so that each suite asserts a refusal the same way.
package faulttest

import (
	"strings"
	"testing"

	"lifeline/internal/fault"
)

// WantCode fails the test unless err is a fault with code whose message or
// hint mentions every one of words (a word is what the operator has to read
// somewhere, so either place will do).
func WantCode(t testing.TB, err error, code fault.Code, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := fault.CodeOf(err); got != code {
		t.Fatalf("error %q has code %s, want %s", err, got, code)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) && !strings.Contains(fault.HintOf(err), w) {
			t.Errorf("error %q (hint %q) does not mention %q", err, fault.HintOf(err), w)
		}
	}
}
