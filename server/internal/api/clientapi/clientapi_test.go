package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/goleak"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "0123456789abcdef0123456789"

// serve runs the API on a real HTTP server over a fresh SQLite store, with one enabled group.
func serve(t *testing.T, p Params) (*API, string, retry.Group) {
	t.Helper()
	s := storagetest.Open(t, storagetest.SQLite(t))
	g := testkit.NewGroup(t, s, "shop", token)
	if p.MaxBodyBytes == 0 {
		p.MaxBodyBytes = 1 << 20
	}
	p.SignatureWindow, p.InstanceHeartbeat, p.InstanceTTL, p.Buckets = time.Minute, time.Second, 10*time.Second, storagetest.Buckets
	log := testkit.Logger(t)
	a := New(p, s, catalog.New(catalog.Params{Store: s, TTL: time.Second}), dispatch.NewRegistry(dispatch.RegistryParams{Store: s, TTL: 10 * time.Second, Interval: time.Second, Log: log}), log)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	a.Mount(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return a, srv.URL, g
}

// slowBody is a request body that hands out its first part at once and the rest only once
// released, counting the bytes it handed out: a client still sending.
type slowBody struct {
	r       io.Reader
	first   int64
	sent    atomic.Int64
	release chan struct{}
	once    sync.Once
}

// newSlowBody returns a body of which first bytes come at once; the rest come on done, or when
// the test ends.
func newSlowBody(t *testing.T, body []byte, first int64) *slowBody {
	b := &slowBody{r: bytes.NewReader(body), first: first, release: make(chan struct{})}
	t.Cleanup(b.done)
	return b
}

func (b *slowBody) Read(p []byte) (int, error) {
	if left := b.first - b.sent.Load(); left > 0 {
		p = p[:min(int64(len(p)), left)]
	} else {
		<-b.release
	}
	n, err := b.r.Read(p)
	b.sent.Add(int64(n))
	return n, err
}

func (b *slowBody) Close() error { b.done(); return nil }

// done lets the rest of the body go.
func (b *slowBody) done() { b.once.Do(func() { close(b.release) }) }

type answer struct {
	status     int
	code       string
	retryAfter string
	err        error
}

// send sends req in the background; the answer arrives on the channel.
func send(req *http.Request) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		var eb protocol.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		ch <- answer{status: resp.StatusCode, code: eb.Error.Code, retryAfter: resp.Header.Get("Retry-After")}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan answer, what string) answer {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatalf("%s: %v", what, a.err)
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer while the body is still being sent: the server waits for the body", what)
		return answer{}
	}
}

// request builds a POST of body to path for namespace/group, signed with token unless token is
// empty, whose body is sent as body does.
func request(t *testing.T, url, path, namespace, group, token string, raw []byte, body io.ReadCloser) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(raw))
	req.Header.Set(protocol.HeaderNamespace, namespace)
	req.Header.Set(protocol.HeaderGroup, group)
	if token != "" {
		protocol.SignRequest(req, token, raw, time.Now())
	}
	return req
}

// A request that is unsigned, or names no group that exists, is refused before its body is
// read: the answer comes while the client is still sending, and the server read no more than
// the first part. Before, the server read the whole body (up to the limit) first.
func TestRefusedBeforeTheBodyIsRead(t *testing.T) {
	_, url, g := serve(t, Params{MaxBodyBytes: 4 << 20})
	raw := bytes.Repeat([]byte("x"), 4<<20)
	for _, c := range []struct {
		name, namespace, group, token, code string
	}{
		{"unsigned", g.Namespace, g.Name, "", "missing_signature"},
		{"unknown group", g.Namespace, "nowhere", token, "unknown_group"},
		{"unknown namespace", "nowhere", g.Name, token, "unknown_group"},
	} {
		body := newSlowBody(t, raw, 64<<10)
		got := wait(t, send(request(t, url, protocol.PathReports, c.namespace, c.group, c.token, raw, body)), c.name)
		if got.status != http.StatusUnauthorized || got.code != c.code {
			t.Errorf("%s: %d %s, want 401 %s", c.name, got.status, got.code, c.code)
		}
		if sent := body.sent.Load(); sent >= int64(len(raw)) {
			t.Errorf("%s: the whole body was sent (%d bytes)", c.name, sent)
		}
		body.done()
	}
}

// Bodies being read at once never take more than the in-flight budget: requests that find no
// room within the busy wait are answered 503 busy with Retry-After, unread, and the ones let in
// finish once their bodies arrive.
func TestConcurrentBodiesStayWithinTheBudget(t *testing.T) {
	const size = 60 << 10
	a, url, g := serve(t, Params{MaxBodyBytes: 64 << 10, MaxInflightBytes: 128 << 10, BusyWait: 100 * time.Millisecond})
	raw, err := json.Marshal(map[string]string{"instance_id": "i1", "pad": strings.Repeat("p", size-40)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	type numbered struct {
		i int
		answer
	}
	bodies := make([]*slowBody, n)
	answers := make(chan numbered, n)
	for i := range n {
		bodies[i] = newSlowBody(t, raw, 16<<10) // more than the client buffers: the headers go out
		ch := send(request(t, url, protocol.PathHeartbeat, g.Namespace, g.Name, token, raw, bodies[i]))
		go func() { answers <- numbered{i, <-ch} }()
	}
	// Two bodies fit; the other four are turned away while those two are still arriving.
	pending := map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true}
	for range n - 2 {
		select {
		case got := <-answers:
			if got.err != nil || got.status != http.StatusServiceUnavailable || got.code != "busy" || got.retryAfter == "" {
				t.Fatalf("request %d: %+v, want 503 busy with Retry-After", got.i, got.answer)
			}
			delete(pending, got.i)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d requests turned away, want %d", n-len(pending), n-2)
		}
	}
	if now, high := a.Inflight(); now != 2*int64(len(raw)) || high > 128<<10 {
		t.Fatalf("in flight %d bytes (most %d), want two bodies' %d within the budget of %d", now, high, 2*len(raw), 128<<10)
	}
	for i := range pending {
		bodies[i].done()
	}
	for range pending {
		select {
		case got := <-answers:
			if !pending[got.i] || got.err != nil || got.status != http.StatusNotFound || got.code != "unknown_instance" {
				t.Fatalf("request %d: %+v, want an admitted one past authentication (404 unknown_instance)", got.i, got.answer)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the admitted requests never answered")
		}
	}
	for _, b := range bodies {
		b.done()
	}
	if now, high := a.Inflight(); now != 0 || high > 128<<10 {
		t.Fatalf("in flight %d bytes after the answers (most %d)", now, high)
	}
}

func TestNoncePrunerDeletesOnlyExpiredNonces(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		now := time.Now()
		for i := range 5 {
			if err := s.AddNonce(ctx, protocol.NewNonce(), now.Add(-time.Duration(i+1)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		live := protocol.NewNonce()
		if err := s.AddNonce(ctx, live, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		p := NewNoncePruner(NoncePrunerParams{Store: s, Batch: 2, Log: testkit.Logger(t)})
		n, err := p.Exec(ctx)
		if err != nil || n != 5 {
			t.Fatalf("pruned %d (%v), want the 5 expired in batches of 2", n, err)
		}
		if err := s.AddNonce(ctx, live, now.Add(time.Hour)); err != storage.ErrConflict {
			t.Fatalf("the live nonce was pruned: adding it again answered %v", err)
		}
		if n, err := p.Exec(ctx); err != nil || n != 0 {
			t.Fatalf("a second pass pruned %d (%v)", n, err)
		}
		// As a service: it starts once, prunes on its interval and stops with nothing left running.
		p = NewNoncePruner(NoncePrunerParams{Store: s, Interval: 10 * time.Millisecond, Log: testkit.Logger(t)})
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx); err == nil {
			t.Fatal("a second Start succeeded")
		}
		expired := protocol.NewNonce()
		if err := s.AddNonce(ctx, expired, now.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		testkit.WaitUntil(t, 5*time.Second, "the service to prune the expired nonce", func() bool {
			return s.AddNonce(ctx, expired, now.Add(-time.Second)) == nil
		})
		p.Stop(ctx)
		p.Stop(ctx)
	})
}
