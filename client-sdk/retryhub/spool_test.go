package retryhub

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSpoolSurvivesARestart(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.down = true })
	dir := t.TempDir()
	cfg := testConfig(fs.URL())
	cfg.SpoolDir = dir

	// First life: the server is down; every report goes to the spool.
	failedAt := time.UnixMilli(1_700_000_000_123)
	c1, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c1.now = func() time.Time { return failedAt }
	f1 := RetryableOn(c1, "spooled", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	if err := c1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := range n {
		if err := f1(context.Background(), i); !errors.Is(err, ErrReported) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := c1.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a spool must keep what it cannot deliver, not fail: %v", err)
	}
	if got := fs.committedCount(); got != 0 {
		t.Fatalf("%d reports committed while the server was down", got)
	}

	// Second life on the same directory: the server is back; the spool is re-sent.
	fs.set(func(fs *fakeServer) { fs.down = false })
	c2 := startClient(t, cfg, func(c *Client) {
		RetryableOn(c, "spooled", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	})
	eventually(t, "the spool re-sent", func() bool { return c2.Stats().Queued == 0 })
	for _, it := range fs.items() {
		// Re-sent after the restart, each report still says when its call failed.
		if it.FailedAt != failedAt.UnixMilli() {
			t.Fatalf("a re-sent report has failed_at %d, want the failure's %d", it.FailedAt, failedAt.UnixMilli())
		}
	}
	fs.get(func(fs *fakeServer) {
		if len(fs.committed) != n {
			t.Fatalf("%d keys committed after the restart, want %d", len(fs.committed), n)
		}
		for k, times := range fs.committed {
			if times != 1 {
				t.Errorf("key %q committed %d times", k, times)
			}
		}
	})
	// Fully delivered: the journal is back to its header line.
	eventually(t, "the journal compacted", func() bool {
		b, err := os.ReadFile(c2.spool.Path())
		return err == nil && strings.Count(string(b), "\n") == 1
	})
}

func TestSpoolIsHeldByOneClient(t *testing.T) {
	fs := newFakeServer(t, "secret")
	cfg := testConfig(fs.URL())
	cfg.SpoolDir = t.TempDir()
	startClient(t, cfg, nil)
	c2, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c2.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second client on the same spool started: %v", err)
	}
	// Another group in the same directory has a journal of its own.
	cfg.Group = "other"
	startClient(t, cfg, nil)
}
