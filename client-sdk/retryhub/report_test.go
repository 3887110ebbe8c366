package retryhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

type email struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

func alwaysFails(context.Context, email) error { return errBoom }

func TestReportsAreBatchedAndSigned(t *testing.T) {
	fs := newFakeServer(t, "secret")
	var send func(context.Context, email) error
	cfg := testConfig(fs.URL())
	cfg.Namespace = "shop"
	cfg.InstanceID = "inst-1"
	c := startClient(t, cfg, func(c *Client) {
		send = RetryableOn(c, "send-email", alwaysFails, WithMode(Remote))
	})
	const n = 25
	for i := range n {
		err := send(context.Background(), email{To: fmt.Sprintf("u%d@example.com", i), Subject: "hi"})
		if !errors.Is(err, ErrReported) || !errors.Is(err, errBoom) {
			t.Fatalf("call %d: got %v, want ErrReported wrapping the failure", i, err)
		}
	}
	eventually(t, "every report delivered", func() bool { return c.Stats().Delivered == n })

	items := fs.items()
	if len(items) != n {
		t.Fatalf("server got %d items, want %d", len(items), n)
	}
	fs.get(func(fs *fakeServer) {
		if fs.badSigs != 0 {
			t.Errorf("%d requests had bad signatures", fs.badSigs)
		}
		if len(fs.batches) < 3 {
			t.Errorf("%d items came in %d requests; want batches of at most 10", n, len(fs.batches))
		}
		for _, b := range fs.batches {
			if len(b) > 10 {
				t.Errorf("a batch of %d items exceeds ReportBatchSize 10", len(b))
			}
		}
		for _, h := range fs.headers {
			if h.Get(protocol.HeaderNamespace) != "shop" || h.Get(protocol.HeaderGroup) != "g" || h.Get(protocol.HeaderInstance) != "inst-1" {
				t.Fatalf("request headers name %q/%q/%q", h.Get(protocol.HeaderNamespace), h.Get(protocol.HeaderGroup), h.Get(protocol.HeaderInstance))
			}
		}
	})
	first := items[0]
	var got email
	if err := json.Unmarshal(first.Args, &got); err != nil || got.Subject != "hi" {
		t.Fatalf("args %s do not decode to the call's arguments: %v", first.Args, err)
	}
	if first.Scene != "send-email" || first.Error != errBoom.Error() || first.LocalAttempts != 1 {
		t.Errorf("item %+v: want scene, error text and 1 local attempt", first)
	}
	if want := defaultKey("send-email", first.Args); first.IdempotencyKey != want || len(want) != 64 {
		t.Errorf("key %q, want the hex SHA-256 of scene and args %q", first.IdempotencyKey, want)
	}
}

func TestLocalRemoteReportsAfterLocalAttempts(t *testing.T) {
	fs := newFakeServer(t, "secret")
	var calls atomic.Int32
	var f func(context.Context, int) error
	c := startClient(t, testConfig(fs.URL()), func(c *Client) {
		f = RetryableOn(c, "local-remote", failing(-1, &calls), WithMode(LocalRemote), WithLocalAttempts(3),
			WithLocalBackoff(fixed(time.Millisecond)), WithKey(func(n int) string { return fmt.Sprintf("order-%d", n) }))
	})
	err := f(context.Background(), 42)
	if !errors.Is(err, ErrReported) || calls.Load() != 3 {
		t.Fatalf("got %v after %d calls; want reported after 3", err, calls.Load())
	}
	if !strings.Contains(err.Error(), "order-42") {
		t.Errorf("error %q does not name the key", err)
	}
	eventually(t, "delivery", func() bool { return c.Stats().Delivered == 1 })
	it := fs.items()[0]
	if it.IdempotencyKey != "order-42" || it.LocalAttempts != 3 {
		t.Fatalf("item %+v: want key order-42 and 3 local attempts", it)
	}
}

func TestServerDownThenUpDeliversEachKeyOnce(t *testing.T) {
	fs := newFakeServer(t, "secret")
	// The first server is unreachable: the client fails over to the second.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	var f func(context.Context, int) error
	c := startClient(t, testConfig(dead, fs.URL()), func(c *Client) {
		f = RetryableOn(c, "down-up", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	})
	fs.set(func(fs *fakeServer) { fs.down = true })
	const n = 60
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := f(context.Background(), i); !errors.Is(err, ErrReported) {
				t.Errorf("call %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	eventually(t, "several failed tries", func() bool { return fs.refusedReportCount() >= 3 })
	if got := fs.committedCount(); got != 0 {
		t.Fatalf("%d reports committed while the server was down", got)
	}
	if q := c.Stats().Queued; q != n {
		t.Fatalf("%d reports held while the server is down, want %d", q, n)
	}
	// One batch is committed but its answer is lost: the client sends it again and it merges.
	fs.set(func(fs *fakeServer) { fs.down, fs.failNextCommitAnswers = false, 1 })
	eventually(t, "every report delivered", func() bool { return c.Stats().Queued == 0 })
	fs.get(func(fs *fakeServer) {
		if len(fs.committed) != n {
			t.Fatalf("%d keys committed, want %d", len(fs.committed), n)
		}
		for k, times := range fs.committed {
			if times != 1 {
				t.Errorf("key %q committed %d times", k, times)
			}
		}
	})
	st := c.Stats()
	if st.Delivered != n || st.Merged == 0 {
		t.Errorf("stats %+v: want %d delivered, some merged after the lost answer", st, n)
	}
}

func TestRejectedReportsAreLoggedAndDropped(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.rejectScene = "closed-scene" })
	var logs logBuffer
	cfg := testConfig(fs.URL())
	cfg.Logger = logs.logger()
	var f func(context.Context, int) error
	c := startClient(t, cfg, func(c *Client) {
		f = RetryableOn(c, "closed-scene", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	})
	// Alone in its batch (answered 422 with the reasons), then beside an accepted one (200).
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	eventually(t, "the rejection", func() bool { return c.Stats().Rejected == 1 && c.Stats().Queued == 0 })
	f(context.Background(), 2)
	c.Report(context.Background(), "open-scene", 2, "", errBoom)
	eventually(t, "the mixed batch", func() bool {
		st := c.Stats()
		return st.Rejected == 2 && st.Delivered == 1 && st.Queued == 0
	})
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "scene is closed") {
		t.Fatalf("the rejection was not logged at error level with its reason:\n%s", out)
	}
}

func TestTooLargeBatchesAreSplit(t *testing.T) {
	fs := newFakeServer(t, "secret")
	// Each item is ~1.2 KB of body: 3 fit in 4 KB, 10 do not.
	fs.set(func(fs *fakeServer) { fs.maxBody = 4000 })
	var logs logBuffer
	cfg := testConfig(fs.URL())
	cfg.Logger = logs.logger()
	var f func(context.Context, string) error
	c := startClient(t, cfg, func(c *Client) {
		f = RetryableOn(c, "big", func(context.Context, string) error { return errBoom }, WithMode(Remote))
	})
	for i := range 10 {
		if err := f(context.Background(), fmt.Sprintf("%d-%s", i, strings.Repeat("x", 1000))); !errors.Is(err, ErrReported) {
			t.Fatal(err)
		}
	}
	// One item alone is too large: it is rejected with a logged error, the others arrive.
	if err := f(context.Background(), strings.Repeat("y", 5000)); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	eventually(t, "delivery", func() bool { st := c.Stats(); return st.Queued == 0 })
	st := c.Stats()
	if st.Delivered != 10 || st.Rejected != 1 {
		t.Fatalf("stats %+v: want 10 delivered and the oversized one rejected", st)
	}
	if !strings.Contains(logs.String(), "too large") {
		t.Errorf("the oversized report was not logged:\n%s", logs.String())
	}
}

func TestArgsOverThePayloadLimitAreRefusedAtOnce(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.register.MaxPayloadBytes = 100 })
	var f func(context.Context, string) error
	c := startClient(t, testConfig(fs.URL()), func(c *Client) {
		f = RetryableOn(c, "payload-limit", func(context.Context, string) error { return errBoom }, WithMode(Remote))
	})
	err := f(context.Background(), strings.Repeat("z", 200))
	if !errors.Is(err, ErrArgsTooLarge) || !errors.Is(err, errBoom) || errors.Is(err, ErrReported) {
		t.Fatalf("got %v; want ErrArgsTooLarge wrapping the failure", err)
	}
	if c.Stats().Queued != 0 {
		t.Fatal("an oversized report was queued")
	}
}

func TestConfigProblemsKeepReports(t *testing.T) {
	fs := newFakeServer(t, "secret")
	var logs logBuffer
	cfg := testConfig(fs.URL())
	cfg.Token = "wrong"
	cfg.Logger = logs.logger()
	var f func(context.Context, int) error
	c := startClient(t, cfg, func(c *Client) {
		f = RetryableOn(c, "bad-token", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	})
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	// Refused twice, ConfigErrorDelay apart: the report is still kept.
	eventually(t, "two refused deliveries", func() bool {
		var n int
		fs.get(func(fs *fakeServer) { n = fs.badSigReports })
		return n >= 2
	})
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "bad_signature") ||
		!strings.Contains(out, "check Config.Namespace, Config.Group and Config.Token") {
		t.Errorf("the log does not say at error level what the server refused and what to check:\n%s", out)
	}
	if st := c.Stats(); st.Queued != 1 || st.Delivered != 0 || st.Rejected != 0 {
		t.Fatalf("stats %+v: the report must be kept", st)
	}
}

func TestQueueFullIsAClearError(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.down = true })
	cfg := testConfig(fs.URL())
	cfg.MaxQueuedReports = 3
	var f func(context.Context, int) error
	startClient(t, cfg, func(c *Client) {
		f = RetryableOn(c, "queue-full", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	})
	for i := range 3 {
		if err := f(context.Background(), i); !errors.Is(err, ErrReported) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	err := f(context.Background(), 3)
	if !errors.Is(err, ErrQueueFull) || !errors.Is(err, errBoom) || errors.Is(err, ErrReported) {
		t.Fatalf("got %v; want ErrQueueFull wrapping the failure", err)
	}
	if !strings.Contains(err.Error(), "not reported") {
		t.Errorf("error %q does not say the call was not reported", err)
	}
}

func TestShutdownWithoutSpoolCountsLostReports(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.down = true })
	c, err := NewClient(testConfig(fs.URL()))
	if err != nil {
		t.Fatal(err)
	}
	f := RetryableOn(c, "lost", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		f(context.Background(), i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = c.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "4 reports were not delivered and are lost") {
		t.Fatalf("Shutdown returned %v; want it to count the 4 lost reports", err)
	}
	// After Shutdown, failed calls are not reported.
	if err := f(context.Background(), 9); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("after Shutdown got %v, want ErrNotStarted", err)
	}
}

func TestShutdownFlushesAndDeregisters(t *testing.T) {
	fs := newFakeServer(t, "secret")
	cfg := testConfig(fs.URL())
	cfg.ReportInterval = time.Hour // only the flush sends
	cfg.ReportBatchSize = 100
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := RetryableOn(c, "flush", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		f(context.Background(), i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fs.committedCount(); got != 5 {
		t.Fatalf("%d reports delivered by Shutdown, want 5", got)
	}
	fs.get(func(fs *fakeServer) {
		if fs.deregisters != 1 {
			t.Errorf("%d deregistrations, want 1", fs.deregisters)
		}
	})
}

func TestManualReport(t *testing.T) {
	fs := newFakeServer(t, "secret")
	c := startClient(t, testConfig(fs.URL()), nil)
	if err := c.Report(context.Background(), "manual", email{To: "a@example.com"}, "k-1", errBoom); err != nil {
		t.Fatal(err)
	}
	if err := c.Report(context.Background(), "manual", email{To: "b@example.com"}, "", errBoom); err != nil {
		t.Fatal(err)
	}
	if err := c.Report(context.Background(), "manual", 1, "", Permanent(errBoom)); err == nil || !IsPermanent(err) {
		t.Fatalf("a permanent cause was reported: %v", err)
	}
	if err := c.Report(context.Background(), "manual", make(chan int), "", errBoom); err == nil {
		t.Fatal("arguments that do not encode were reported")
	}
	eventually(t, "delivery", func() bool { return c.Stats().Delivered == 2 })
	items := fs.items()
	if items[0].IdempotencyKey != "k-1" || items[1].IdempotencyKey != defaultKey("manual", items[1].Args) || items[0].Error != "boom" {
		t.Fatalf("items %+v", items)
	}
	if err := Report(context.Background(), "manual", 1, "", errBoom); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("package Report without a started client: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	cases := map[string]Config{
		"no servers":   {Group: "g", Token: "t"},
		"bad server":   {Servers: []string{"retryhub:8080"}, Group: "g", Token: "t"},
		"no group":     {Servers: []string{"http://x"}, Token: "t"},
		"no token":     {Servers: []string{"http://x"}, Group: "g"},
		"bad executor": {Servers: []string{"http://x"}, Group: "g", Token: "t", ExecutorURL: "/retryhub/execute"},
		"negative":     {Servers: []string{"http://x"}, Group: "g", Token: "t", Capacity: -1},
	}
	for name, cfg := range cases {
		if _, err := NewClient(cfg); err == nil {
			t.Errorf("%s: NewClient accepted it", name)
		}
	}
	if _, err := NewClient(Config{Servers: []string{"http://x"}, Group: "g", Token: "t", InstanceID: "web 1"}); err == nil {
		t.Error("an instance id the server refuses was accepted")
	}
	for range 3 {
		if id := generateInstanceID(); !protocol.ValidInstanceID(id) {
			t.Errorf("generated instance id %q breaks the server's rule", id)
		}
	}
	c, err := NewClient(Config{Servers: []string{"http://x/"}, Group: "g", Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.Namespace != "default" || c.cfg.Capacity != 16 || c.cfg.PolicyRefreshInterval != 5*time.Second ||
		c.cfg.InstanceID == "" || c.cfg.Servers[0] != "http://x" || c.cfg.HTTPClient == nil {
		t.Fatalf("defaults not applied: %+v", c.cfg)
	}
	var _ http.Handler = c.Handler()
}

func TestCancelledCallsAreStillReported(t *testing.T) {
	fs := newFakeServer(t, "secret")
	var calls atomic.Int32
	var f func(context.Context, int) error
	c := startClient(t, testConfig(fs.URL()), func(c *Client) {
		f = RetryableOn(c, "cancelled-remote", failing(-1, &calls), WithMode(LocalRemote), WithLocalAttempts(5),
			WithLocalBackoff(fixed(10*time.Second)))
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	err := f(ctx, 1)
	// Cancelling stops the local retries, not the remote ones: the report does not wait on ctx.
	if !errors.Is(err, ErrReported) || !errors.Is(err, errBoom) || calls.Load() != 1 {
		t.Fatalf("got %v after %d calls; want reported after 1", err, calls.Load())
	}
	if !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("error %q does not say why local retries stopped", err)
	}
	eventually(t, "delivery", func() bool { return c.Stats().Delivered == 1 })
	if it := fs.items()[0]; it.LocalAttempts != 1 {
		t.Errorf("reported %d local attempts, want 1", it.LocalAttempts)
	}
}

func TestBadKeysAreRefusedAtOnce(t *testing.T) {
	fs := newFakeServer(t, "secret")
	var f func(context.Context, int) error
	c := startClient(t, testConfig(fs.URL()), func(c *Client) {
		f = RetryableOn(c, "bad-key", func(context.Context, int) error { return errBoom },
			WithMode(Remote), WithKey(func(int) string { return "" }))
	})
	if err := f(context.Background(), 1); !errors.Is(err, ErrInvalidKey) || !errors.Is(err, errBoom) || errors.Is(err, ErrReported) {
		t.Fatalf("an empty key gave %v, want ErrInvalidKey wrapping the failure", err)
	}
	if err := c.Report(context.Background(), "bad-key", 1, strings.Repeat("k", MaxKeyLen+1), errBoom); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("a long key gave %v, want ErrInvalidKey", err)
	}
	if c.Stats().Queued != 0 {
		t.Fatal("a report with a bad key was queued")
	}
}

func TestShutdownDoesNotWaitOutALongBackoff(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.down = true })
	cfg := testConfig(fs.URL())
	cfg.RetryMinDelay, cfg.RetryMaxDelay = time.Hour, time.Hour
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := RetryableOn(c, "long-backoff", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	// A delivery failed: the sender is in its hour-long back-off.
	eventually(t, "a failed delivery", func() bool { return fs.refusedReportCount() >= 1 })
	fs.set(func(fs *fakeServer) { fs.down = false })
	// Shutdown delivers the report at once; waiting out the back-off would end ctx first and
	// lose it (no spool), which Shutdown reports as an error.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := fs.committedCount(); got != 1 {
		t.Fatalf("Shutdown delivered %d reports; want 1", got)
	}
}

// A report carries when its call failed, not when it reaches the server: the server schedules
// the first replay from that time, however long the report waited for delivery.
func TestReportsCarryTheFailureTime(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.down = true })
	failedAt := time.UnixMilli(1_700_000_000_123) // long before the test runs: no send time matches it
	c, err := NewClient(testConfig(fs.URL()))
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return failedAt }
	f := RetryableOn(c, "failure-time", func(context.Context, int) error { return errBoom },
		WithMode(LocalRemote), WithLocalAttempts(2), WithLocalBackoff(fixed(time.Millisecond)))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	if err := c.Report(context.Background(), "failure-time-manual", 2, "", errBoom); err != nil {
		t.Fatal(err)
	}
	// Deliveries fail for a while; the reports wait.
	eventually(t, "failed deliveries", func() bool { return fs.refusedReportCount() >= 2 })
	fs.set(func(fs *fakeServer) { fs.down = false })
	eventually(t, "delivery", func() bool { return c.Stats().Delivered == 2 })
	for _, it := range fs.items() {
		if it.FailedAt != failedAt.UnixMilli() {
			t.Errorf("%s: failed_at %d, want the failure's %d", it.Scene, it.FailedAt, failedAt.UnixMilli())
		}
	}
}
