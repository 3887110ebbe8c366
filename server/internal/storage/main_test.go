package storage_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every store a test opens
// is closed with its connections, and nothing the store starts runs on.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
