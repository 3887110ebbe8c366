package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/retryhub/retryhub/server/internal/alert"
	"github.com/retryhub/retryhub/server/internal/alert/notify"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// publicURL is the console address the tests' messages link to.
const publicURL = "https://retryhub.example.com"

var sealKey = []byte("0123456789abcdef0123456789abcdef")

// hookReceiver takes webhook messages, or refuses them while down.
type hookReceiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	msgs []notify.WebhookPayload
	down bool
}

func newHook(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.down {
			http.Error(w, "receiver down", http.StatusServiceUnavailable)
			return
		}
		var p notify.WebhookPayload
		if err := json.Unmarshal(b, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.msgs = append(h.msgs, p)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) received() []notify.WebhookPayload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]notify.WebhookPayload(nil), h.msgs...)
}

func (h *hookReceiver) setDown(down bool) {
	h.mu.Lock()
	h.down = down
	h.mu.Unlock()
}

// smtpMail is one message the SMTP server took.
type smtpMail struct {
	From string
	To   []string
	Data string
}

// smtpServer is an SMTP server inside the test (emersion/go-smtp) that keeps every mail.
type smtpServer struct {
	addr string
	srv  *smtp.Server
	mu   sync.Mutex
	got  []smtpMail
}

// newSMTP starts an SMTP server on addr ("" picks a free port).
func newSMTP(t *testing.T, addr string) *smtpServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{addr: ln.Addr().String()}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "localhost"
	s.srv.ReadTimeout, s.srv.WriteTimeout = 10*time.Second, 10*time.Second
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *smtpServer) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: s}, nil }

func (s *smtpServer) mails() []smtpMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]smtpMail(nil), s.got...)
}

type smtpSession struct {
	s *smtpServer
	m smtpMail
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error { ss.m.From = from; return nil }
func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.m.To = append(ss.m.To, to)
	return nil
}
func (ss *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.m.Data = string(b)
	ss.s.mu.Lock()
	ss.s.got = append(ss.s.got, ss.m)
	ss.s.mu.Unlock()
	return nil
}
func (ss *smtpSession) Reset()        { ss.m = smtpMail{} }
func (ss *smtpSession) Logout() error { return nil }

// world is one test's database with a namespace, a group "orders" with scenes "notify" and
// "refund", channels, and an evaluator.
type world struct {
	t        *testing.T
	target   storagetest.Target
	store    *storage.Store
	channels *alert.Channels
	ns       retry.Namespace
	orders   *testkit.Fixture
	notify   retry.Scene
	refund   retry.Scene
	hook     *hookReceiver
	hookCh   storage.AlertChannel
}

func newWorld(t *testing.T, target storagetest.Target) *world {
	t.Helper()
	s := storagetest.Open(t, target)
	w := &world{t: t, target: target, store: s, hook: newHook(t)}
	f := testkit.NewFixture(t, s, storagetest.RandomName("ns"), "alert-test-token-0123456789",
		testkit.RemoteScene(3, time.Hour, 0, func(sc *retry.Scene) {
			sc.Callback.Enabled = true
			sc.Callback.MaxAttempts = 2
		}))
	w.orders, w.notify = f, f.Scene
	ns, err := s.Namespace(context.Background(), f.Group.NamespaceID)
	if err != nil {
		t.Fatal(err)
	}
	w.ns = ns
	def := retry.DefaultScene(f.Group.ID, "refund")
	testkit.RemoteScene(3, time.Hour, 0, nil)(&def)
	if w.refund, err = s.CreateScene(context.Background(), def); err != nil {
		t.Fatal(err)
	}
	if w.channels, err = alert.NewChannels(sealKey, notify.Options{DialTimeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	w.hookCh = w.channel(notify.KindWebhook, map[string]any{"url": w.hook.srv.URL, "secret": "hook-secret"})
	return w
}

// channel stores a channel of the namespace.
func (w *world) channel(kind string, settings map[string]any) storage.AlertChannel {
	w.t.Helper()
	raw, _ := json.Marshal(settings)
	sealed, err := w.channels.Prepare(kind, nil, raw)
	if err != nil {
		w.t.Fatal(err)
	}
	ch, err := w.store.CreateAlertChannel(context.Background(), storage.AlertChannel{NamespaceID: w.ns.ID,
		Name: storagetest.RandomName(kind), Kind: kind, Settings: sealed, Enabled: true})
	if err != nil {
		w.t.Fatal(err)
	}
	return ch
}

// emailChannel is an email channel to the SMTP server at addr, in plain SMTP.
func (w *world) emailChannel(addr string) storage.AlertChannel {
	host, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	return w.channel(notify.KindEmail, map[string]any{"host": host, "port": p, "tls": "none",
		"from": "Retryhub <alerts@example.com>", "to": []string{"oncall@example.com", "payments@example.com"}})
}

// evaluator returns an evaluator of the world's database on its own store (another node).
func (w *world) evaluator(store *storage.Store) *alert.Evaluator {
	w.t.Helper()
	if store == nil {
		store = w.store
	}
	e, err := alert.NewEvaluator(alert.Params{Store: store, Sender: w.channels.Sender, PublicURL: publicURL,
		Buckets: storagetest.Buckets, History: 30 * 24 * time.Hour, Log: testkit.Logger(w.t)})
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

// rule stores a rule of the namespace, changed by edit, with its kind's defaults.
func (w *world) rule(kind string, edit func(r *storage.AlertRule)) storage.AlertRule {
	w.t.Helper()
	r := storage.AlertRule{NamespaceID: w.ns.ID, Name: storagetest.RandomName("rule"), Kind: kind, Severity: alert.Critical,
		ChannelIDs: []int64{w.hookCh.ID}, Enabled: true}
	if edit != nil {
		edit(&r)
	}
	if err := alert.Normalize(&r); err != nil {
		w.t.Fatal(err)
	}
	r, err := w.store.CreateAlertRule(context.Background(), r)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// evaluate runs one pass as of at, failing the test on an error.
func evaluate(t *testing.T, e *alert.Evaluator, at time.Time) {
	t.Helper()
	if err := e.Evaluate(context.Background(), at); err != nil {
		t.Fatal(err)
	}
}

// replay makes n tasks of the scene (due in the past), replays them once, and settles each
// with outcome: "ok", "fail" (retried later), "exhaust" (a permanent failure) with errText.
func (w *world) replay(sc retry.Scene, n int, outcome, errText string) []int64 {
	w.t.Helper()
	f := &testkit.Fixture{T: w.t, Store: w.store, Group: w.orders.Group, Scene: sc}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = storagetest.RandomName("k")
	}
	due := time.Now().Add(-time.Hour)
	ids := f.Add(due, keys...)
	claims := f.Claim(retry.KindReplay, "node-1", due, time.Now().Add(time.Hour))
	w.settle(claims, sc, outcome, errText)
	return ids
}

func (w *world) settle(claims []retry.Claim, sc retry.Scene, outcome, errText string) {
	w.t.Helper()
	pol, err := sc.Compile()
	if err != nil {
		w.t.Fatal(err)
	}
	now := time.Now()
	var batch []retry.Settlement
	for i := range claims {
		c := &claims[i]
		res := retry.Result{Outcome: retry.OutcomeSucceeded}
		if outcome != "ok" {
			res = retry.Result{Outcome: retry.OutcomeFailed, Error: errText, Permanent: outcome == "exhaust"}
		}
		att := &retry.Attempt{TaskID: c.TaskID, Kind: c.Kind, Number: c.Number(), NodeID: "node-1", InstanceID: "i1",
			StartedAt: now, Duration: time.Millisecond, Outcome: res.Outcome, Error: res.Error}
		if c.Kind == retry.KindCallback {
			batch = append(batch, retry.SettleCallback(c, &sc, pol, res, att, now))
		} else {
			batch = append(batch, retry.SettleReplay(c, &sc, pol, res, att, now))
		}
	}
	if _, err := w.store.Settle(context.Background(), batch); err != nil {
		w.t.Fatal(err)
	}
}

// history is the namespace's history, newest first.
func (w *world) history() []storage.AlertMessage {
	w.t.Helper()
	ms, err := w.store.ListAlertMessages(context.Background(), storage.AlertMessageFilter{NamespaceIDs: []int64{w.ns.ID}}, 100)
	if err != nil {
		w.t.Fatal(err)
	}
	return ms
}

// kinds lists the webhook messages' kinds in order.
func kinds(ps []notify.WebhookPayload) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind)
	}
	return strings.Join(out, ",")
}
