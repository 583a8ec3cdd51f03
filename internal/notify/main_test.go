package notify

import (
	"os"
	"testing"

	"lifeline/internal/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(deliveryHelper())
	}
	pgtest.Main(m)
}
