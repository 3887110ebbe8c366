package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strconv"
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

// mailbox is an SMTP server inside the test that keeps the mails' data.
type mailbox struct {
	mu    sync.Mutex
	mails []string
}

func (m *mailbox) NewSession(*smtp.Conn) (smtp.Session, error) { return &mailSession{box: m}, nil }

func (m *mailbox) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mails)
}

type mailSession struct{ box *mailbox }

func (s *mailSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *mailSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.box.mu.Lock()
	s.box.mails = append(s.box.mails, string(b))
	s.box.mu.Unlock()
	return nil
}
func (s *mailSession) Reset()        {}
func (s *mailSession) Logout() error { return nil }

// Two nodes evaluate the alert rules every second on the leader only: a dead letter makes one
// mail, through the configured sealing key, the email channel and the console link.
func TestAlertMailFromTwoNodes(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		box := &mailbox{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := smtp.NewServer(box)
		srv.Domain = "localhost"
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })

		cfg := testConfig(target)
		cfg.Alert.Evaluate = "* * * * * *"
		cfg.Alert.SecretKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
		cfg.Server.PublicURL = "https://retryhub.example.com"
		a := startNode(t, cfg, "node-a")
		b := startNode(t, cfg, "node-b")
		ctx := context.Background()

		f := testkit.NewFixture(t, a.Store, storagetest.RandomName("ns"), "alert-e2e-token-0123456789",
			testkit.RemoteScene(1, time.Hour, 0, nil))
		host, port, _ := net.SplitHostPort(ln.Addr().String())
		p, _ := strconv.Atoi(port)
		settings, _ := json.Marshal(map[string]any{"host": host, "port": p, "tls": "none", "from": "alerts@example.com",
			"to": []string{"oncall@example.com"}})
		sealed, err := b.Channels.Prepare(notify.KindEmail, nil, settings) // sealed on one node, opened on the other
		if err != nil {
			t.Fatal(err)
		}
		ch, err := a.Store.CreateAlertChannel(ctx, storage.AlertChannel{NamespaceID: f.Group.NamespaceID, Name: "oncall",
			Kind: notify.KindEmail, Settings: sealed, Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		r := storage.AlertRule{NamespaceID: f.Group.NamespaceID, Name: "dead-letters", Kind: alert.TasksExhausted,
			Severity: alert.Critical, ChannelIDs: []int64{ch.ID}, Enabled: true}
		if err := alert.Normalize(&r); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Store.CreateAlertRule(ctx, r); err != nil {
			t.Fatal(err)
		}

		// A task that ends exhausted.
		due := time.Now().Add(-time.Minute)
		f.Add(due, "order-1")
		claims := f.Claim(retry.KindReplay, "node-x", due, time.Now().Add(time.Hour))
		pol, err := f.Scene.Compile()
		if err != nil || len(claims) != 1 {
			t.Fatalf("claims %+v (%v)", claims, err)
		}
		now := time.Now()
		set := retry.SettleReplay(&claims[0], &f.Scene, pol, retry.Result{Outcome: retry.OutcomeFailed, Error: "partner refused"},
			&retry.Attempt{Kind: retry.KindReplay, Number: 1, NodeID: "node-x", StartedAt: now, Outcome: retry.OutcomeFailed, Error: "partner refused"}, now)
		if _, err := a.Store.Settle(ctx, []retry.Settlement{set}); err != nil {
			t.Fatal(err)
		}

		waitFor(t, 20*time.Second, "the alert mail", func() bool { return box.count() > 0 })
		first := lastEvaluation(t, a.Store)
		waitFor(t, 20*time.Second, "two more evaluations", func() bool {
			return lastEvaluation(t, a.Store).After(first.Add(1500 * time.Millisecond))
		})
		if n := box.count(); n != 1 {
			t.Fatalf("%d mails from two nodes, want 1", n)
		}
		box.mu.Lock()
		data := strings.ReplaceAll(box.mails[0], "=\r\n", "")
		box.mu.Unlock()
		if !strings.Contains(data, "partner refused") || !strings.Contains(data, "https://retryhub.example.com/tasks?") {
			t.Fatalf("the mail:\n%s", data)
		}
	})
}

func lastEvaluation(t *testing.T, s *storage.Store) time.Time {
	t.Helper()
	states, err := s.AlertStates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var at time.Time
	for _, st := range states {
		if st.EvaluatedAt != nil && st.EvaluatedAt.After(at) {
			at = *st.EvaluatedAt
		}
	}
	return at
}
