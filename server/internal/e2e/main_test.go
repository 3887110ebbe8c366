package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every service's Stop (or
// Kill) must end what it started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
