package retryhub

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// remoteFailure declares a scene whose calls always fail and are reported at once.
func remoteFailure(c *Client, scene string) func(context.Context, int) error {
	return RetryableOn(c, scene, func(context.Context, int) error { return errBoom }, WithMode(Remote))
}

func TestTLSServerWithACustomCA(t *testing.T) {
	fs := newFakeTLSServer(t, "secret")
	cfg := testConfig(fs.URL())
	cfg.CAFile = fs.CAFile()
	var f func(context.Context, int) error
	c := startClient(t, cfg, func(c *Client) { f = remoteFailure(c, "over-tls") })
	if !strings.HasPrefix(fs.URL(), "https://") {
		t.Fatalf("the fake server is not serving TLS: %s", fs.URL())
	}
	if !c.Stats().Registered {
		t.Fatal("not registered with the TLS server at start")
	}
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	eventually(t, "delivery over TLS", func() bool { return c.Stats().Delivered == 1 })
	if got := fs.committedCount(); got != 1 {
		t.Fatalf("%d reports committed, want 1", got)
	}
}

// Without the CA the client refuses the server's certificate: nothing is sent, the reports are
// kept, and the log says what to set.
func TestTLSServerWithoutItsCA(t *testing.T) {
	fs := newFakeTLSServer(t, "secret")
	var logs logBuffer
	cfg := testConfig(fs.URL())
	cfg.Logger = logs.logger()
	var f func(context.Context, int) error
	c := startClient(t, cfg, func(c *Client) { f = remoteFailure(c, "untrusted-tls") })
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	eventually(t, "a refused delivery", func() bool { return strings.Contains(logs.String(), "cannot deliver reports") })
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "certificate") || !strings.Contains(out, "set Config.CAFile") {
		t.Fatalf("the log does not say at error level that the certificate is not trusted and what to set:\n%s", out)
	}
	if st := c.Stats(); st.Registered || st.Delivered != 0 || st.Queued != 1 {
		t.Fatalf("stats %+v: want unregistered, nothing delivered and the report kept", st)
	}
	fs.get(func(fs *fakeServer) {
		if len(fs.registers)+len(fs.batches) != 0 {
			t.Fatalf("the server received %d registrations and %d batches from a client that does not trust it", len(fs.registers), len(fs.batches))
		}
	})
}

func TestBadCAFileIsAnErrorFromStart(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ path, want string }{
		"missing file": {filepath.Join(dir, "nope.pem"), "no such file"},
		"no PEM":       {garbage, "holds no PEM certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig("https://127.0.0.1:1")
			cfg.CAFile = tc.path
			_, err := Start(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), "CAFile") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start with a bad CA file: %v; want an error naming CAFile and %q", err, tc.want)
			}
		})
	}
}
