package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestExitStatusFollowsTheCode(t *testing.T) {
	t.Parallel()
	for code, want := range map[Code]int{Invalid: 2, NotFound: 2, Conflict: 2, Refused: 2, Unauthorized: 2, Unavailable: 1, Internal: 1} {
		err := fmt.Errorf("wrapped: %w", New(code, "", "x"))
		if got := ExitStatus(err); got != want {
			t.Errorf("%s: exit %d, want %d", code, got, want)
		}
	}
	if ExitStatus(nil) != 0 || ExitStatus(errors.New("plain")) != 1 {
		t.Error("nil must exit 0 and an error without a code 1")
	}
	if Wrap(nil, Invalid, "", "x") != nil {
		t.Error("wrapping nil must give nil")
	}
}

// The innermost hint is found through wrapping without one.
func TestHintOfFindsTheFirstHint(t *testing.T) {
	t.Parallel()
	inner := New(Refused, "run lifeline protect", "drifted")
	err := Wrap(fmt.Errorf("context: %w", inner), Refused, "", "protect tracker")
	if got := HintOf(err); got != "run lifeline protect" {
		t.Errorf("HintOf = %q", got)
	}
	if CodeOf(err) != Refused || HintOf(errors.New("x")) != "" {
		t.Error("code or empty hint wrong")
	}
}
