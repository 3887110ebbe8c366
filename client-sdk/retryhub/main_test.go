package retryhub

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every client a test starts
// is shut down, and Shutdown must leave nothing running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Shutdown stops everything the client started: its loops, its executor listener, the spool,
// and the connections of its own HTTP client.
func TestShutdownLeavesNoGoroutine(t *testing.T) {
	fs := newFakeServer(t, "secret")
	ignore := goleak.IgnoreCurrent()
	cfg := testConfig(fs.URL())
	cfg.HTTPClient = nil // the SDK's own
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.SpoolDir = t.TempDir()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := remoteFailure(c, "leak-check")
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	eventually(t, "delivery", func() bool { return c.Stats().Delivered == 1 })
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, ignore)
}
