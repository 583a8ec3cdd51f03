package notify

import (
	"testing"

	"lifeline/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
