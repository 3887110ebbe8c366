package orders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

const (
	testNamespace = "default"
	testGroup     = "orders-test"
	testInstance  = "orders-test-1"
	testToken     = "orders-test-token-0123456789"
)

// fixture is a service wired to a broker and an in-process partner, with a retryhub client that
// is never started: calls retry locally, and a call that would be reported fails with
// retryhub.ErrNotStarted instead. Replays and callbacks are sent straight to the client's
// executor endpoint, signed as the server signs them.
type fixture struct {
	svc     *Service
	client  *retryhub.Client
	broker  *Broker
	partner *PartnerServer
}

func newFixture(t *testing.T, brokerFailRate, partnerFailRate float64, window time.Duration) *fixture {
	t.Helper()
	client, err := retryhub.NewClient(retryhub.Config{
		Servers:    []string{"http://127.0.0.1:1"},
		Namespace:  testNamespace,
		Group:      testGroup,
		InstanceID: testInstance,
		Token:      testToken,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	broker := NewBroker(brokerFailRate)
	partner := NewPartnerServer(partnerFailRate, window)
	ps := httptest.NewServer(partner)
	t.Cleanup(ps.Close)
	svc := New(client, broker, NewPartnerClient(ps.URL), slog.New(slog.NewTextHandler(io.Discard, nil)))
	return &fixture{svc: svc, client: client, broker: broker, partner: partner}
}

// execute sends a signed executor request, as the server does, and returns the answer.
func (f *fixture) execute(t *testing.T, req protocol.ExecuteRequest) protocol.ExecuteResponse {
	t.Helper()
	req.Namespace, req.Group = testNamespace, testGroup
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, retryhub.ExecutorPath, bytes.NewReader(body))
	r.Header.Set(protocol.HeaderNamespace, testNamespace)
	r.Header.Set(protocol.HeaderGroup, testGroup)
	r.Header.Set(protocol.HeaderInstance, testInstance)
	protocol.SignRequest(r, testToken, body, time.Now())
	w := httptest.NewRecorder()
	f.client.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("executor answered %d: %s", w.Code, w.Body)
	}
	var resp protocol.ExecuteResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatalf("decode the executor's answer %q: %v", w.Body, err)
	}
	return resp
}

func (f *fixture) counts(scene string) SceneCounts {
	for _, c := range f.svc.Stats().Scenes {
		if c.Scene == scene {
			return c
		}
	}
	panic("no scene " + scene)
}

func rawJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCreateOrderRefusesBadInputAndChangesNothing(t *testing.T) {
	f := newFixture(t, 0, 0, 0)
	h := f.svc.Handler()
	for _, tc := range []struct {
		name, method, body string
		status             int
		mention            string
	}{
		{"not JSON", "POST", `customer=ada`, 400, "not a JSON order"},
		{"unknown field", "POST", `{"customer":"ada","amount_cents":100,"currency":"EUR","coupon":"x"}`, 400, "coupon"},
		{"two values", "POST", `{"customer":"ada","amount_cents":100,"currency":"EUR"}{}`, 400, "more than one"},
		{"empty customer", "POST", `{"customer":" ","amount_cents":100,"currency":"EUR"}`, 400, "customer is empty"},
		{"long customer", "POST", `{"customer":"` + strings.Repeat("a", 65) + `","amount_cents":100,"currency":"EUR"}`, 400, "customer is 65 bytes"},
		{"zero amount", "POST", `{"customer":"ada","amount_cents":0,"currency":"EUR"}`, 400, "amount_cents is 0"},
		{"huge amount", "POST", `{"customer":"ada","amount_cents":10000000001,"currency":"EUR"}`, 400, "amount_cents"},
		{"bad currency", "POST", `{"customer":"ada","amount_cents":100,"currency":"eur"}`, 400, "currency"},
		{"every field", "POST", `{}`, 400, "customer is empty; amount_cents is 0"},
		{"too large", "POST", `{"customer":"` + strings.Repeat("a", maxBody) + `"}`, 400, "too large"},
		{"wrong method", "PUT", `{}`, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tc.method, "/orders", strings.NewReader(tc.body)))
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			if !strings.Contains(w.Body.String(), tc.mention) {
				t.Errorf("answer %s does not mention %q", w.Body, tc.mention)
			}
		})
	}
	if st := f.svc.Stats(); st.Orders != 0 || st.Scenes[0].Calls != 0 || st.Scenes[1].Calls != 0 {
		t.Errorf("refused orders changed the counters: %+v", st)
	}
	if b := f.broker.Stats(); b.Messages != 0 {
		t.Errorf("refused orders published %d messages", b.Messages)
	}
	if p := f.partner.Stats(); p.Orders != 0 {
		t.Errorf("refused orders notified the partner of %d orders", p.Orders)
	}
}

func TestCreateOrderPublishesAndNotifies(t *testing.T) {
	f := newFixture(t, 0, 0, time.Minute)
	h := f.svc.Handler()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/orders", strings.NewReader(`{"customer":"ada","amount_cents":1999,"currency":"EUR"}`)))
	if w.Code != http.StatusCreated {
		t.Fatalf("status %d, want 201; body %s", w.Code, w.Body)
	}
	var o Order
	if err := json.Unmarshal(w.Body.Bytes(), &o); err != nil {
		t.Fatal(err)
	}
	if o.Published != StateDone || o.Partner != StateDone {
		t.Errorf("order %+v: want the message published and the partner told", o)
	}
	if loc := w.Header().Get("Location"); loc != "/orders/"+o.ID {
		t.Errorf("Location %q, want /orders/%s", loc, o.ID)
	}
	m, ok := f.broker.Message(o.ID)
	if !ok || m.Topic != TopicOrderCreated {
		t.Fatalf("broker holds %+v, %v; want the order's message on %s", m, ok, TopicOrderCreated)
	}
	var body OrderCreated
	if err := json.Unmarshal(m.Body, &body); err != nil || body.OrderID != o.ID || body.AmountCents != 1999 || body.Currency != "EUR" {
		t.Errorf("message body %s (%v) does not describe order %+v", m.Body, err, o)
	}
	if p := f.partner.Stats(); p.Orders != 1 {
		t.Errorf("partner notified of %d orders, want 1", p.Orders)
	}

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/orders/"+o.ID, nil))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), o.ID) {
		t.Errorf("GET the order: %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/orders/ord-unknown", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("GET an unknown order: %d, want 404", w.Code)
	}
	for _, c := range f.svc.Stats().Scenes {
		if c.Calls != 1 || c.LocalRetries != 0 || c.Reported != 0 || c.Failed != 0 || c.Replays != 0 {
			t.Errorf("%s: counters %+v, want one call that succeeded at once", c.Scene, c)
		}
	}
}

// A call whose dependency keeps failing runs its three local attempts; with no started client
// it cannot be reported, so the order says the side effect failed.
func TestFailingCallRetriesLocally(t *testing.T) {
	f := newFixture(t, 1, 0, time.Minute)
	o, err := f.svc.CreateOrder(context.Background(), NewOrder{Customer: "grace", AmountCents: 500, Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	pub := f.counts(ScenePublishOrderCreated)
	if pub.Calls != 1 || pub.LocalRetries != 2 || pub.Reported != 0 || pub.Failed != 1 || pub.Replays != 0 {
		t.Errorf("publish counters %+v: want 1 call, 2 local retries, 1 failure not reported", pub)
	}
	if o.Published != StateFailed || o.Partner != StateDone {
		t.Errorf("order %+v: want publishing failed and the partner told", o)
	}
	// /metrics serves the SDK client's counters: both scenes' calls, the local retries.
	w := httptest.NewRecorder()
	f.svc.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{"retryhub_client_calls_total 2", "retryhub_client_call_failures_total 1",
		"retryhub_client_local_retries_total 2"} {
		if !strings.Contains(w.Body.String(), want+"\n") {
			t.Errorf("/metrics: no %q in\n%s", want, w.Body.String())
		}
	}
	// The broker failed each attempt, half of them after storing the message: at most one copy
	// is kept, the rest are dropped as repeats.
	if b := f.broker.Stats(); b.Messages > 1 || b.Messages+b.Duplicates > 3 {
		t.Errorf("broker %+v after 3 attempts of one message", b)
	}
}

func TestReplays(t *testing.T) {
	notice := func(age time.Duration) PartnerNotice {
		return PartnerNotice{OrderID: "ord-replayed", AmountCents: 700, Currency: "GBP", CreatedAt: time.Now().Add(-age)}
	}
	t.Run("publish succeeds", func(t *testing.T) {
		f := newFixture(t, 0, 0, 0)
		msg := OrderCreated{OrderID: "ord-published", Customer: "ken", AmountCents: 300, Currency: "EUR", CreatedAt: time.Now()}
		resp := f.execute(t, protocol.ExecuteRequest{Kind: protocol.KindReplay, TaskID: 1, Scene: ScenePublishOrderCreated,
			IdempotencyKey: msg.OrderID, Args: rawJSON(t, msg), Attempt: 1})
		if resp.Status != protocol.ExecuteSucceeded {
			t.Fatalf("answer %+v, want succeeded", resp)
		}
		if _, ok := f.broker.Message(msg.OrderID); !ok {
			t.Error("the replay did not publish the message")
		}
		if c := f.counts(ScenePublishOrderCreated); c.Replays != 1 || c.Succeeded != 1 || c.Calls != 0 || c.LocalRetries != 0 {
			t.Errorf("counters %+v: want one successful replay and no call", c)
		}
	})
	t.Run("partner unavailable", func(t *testing.T) {
		f := newFixture(t, 0, 1, time.Minute)
		resp := f.execute(t, protocol.ExecuteRequest{Kind: protocol.KindReplay, TaskID: 2, Scene: SceneNotifyPartner,
			IdempotencyKey: "ord-replayed", Args: rawJSON(t, notice(0)), Attempt: 1})
		if resp.Status != protocol.ExecuteFailed || resp.Permanent || !strings.Contains(resp.Error, "503") {
			t.Fatalf("answer %+v, want a failure that may pass, naming the 503", resp)
		}
		if c := f.counts(SceneNotifyPartner); c.Replays != 1 || c.ReplaysFailed != 1 || c.Succeeded+c.Exhausted != 0 {
			t.Errorf("counters %+v: want one failed replay", c)
		}
	})
	t.Run("stale notice ends the task", func(t *testing.T) {
		f := newFixture(t, 0, 0, time.Minute)
		resp := f.execute(t, protocol.ExecuteRequest{Kind: protocol.KindReplay, TaskID: 3, Scene: SceneNotifyPartner,
			IdempotencyKey: "ord-replayed", Args: rawJSON(t, notice(time.Hour)), Attempt: 2})
		if resp.Status != protocol.ExecuteFailed || !resp.Permanent || !strings.Contains(resp.Error, "422") {
			t.Fatalf("answer %+v, want a permanent failure naming the 422", resp)
		}
		if c := f.counts(SceneNotifyPartner); c.Replays != 1 || c.Exhausted != 1 {
			t.Errorf("counters %+v: want one replay that exhausted its task", c)
		}
		if p := f.partner.Stats(); p.Orders != 0 {
			t.Errorf("the partner accepted a stale notice: %+v", p)
		}
	})
	t.Run("notice succeeds", func(t *testing.T) {
		f := newFixture(t, 0, 0, time.Minute)
		resp := f.execute(t, protocol.ExecuteRequest{Kind: protocol.KindReplay, TaskID: 4, Scene: SceneNotifyPartner,
			IdempotencyKey: "ord-replayed", Args: rawJSON(t, notice(time.Second)), Attempt: 1})
		if resp.Status != protocol.ExecuteSucceeded {
			t.Fatalf("answer %+v, want succeeded", resp)
		}
		if c := f.counts(SceneNotifyPartner); c.Replays != 1 || c.Succeeded != 1 {
			t.Errorf("counters %+v: want one successful replay", c)
		}
	})
}

func TestCallbackMarksAnAbandonedOrder(t *testing.T) {
	f := newFixture(t, 0, 0, time.Minute)
	o, err := f.svc.CreateOrder(context.Background(), NewOrder{Customer: "barbara", AmountCents: 4200, Currency: "JPY"})
	if err != nil {
		t.Fatal(err)
	}
	n := PartnerNotice{OrderID: o.ID, AmountCents: o.AmountCents, Currency: o.Currency, CreatedAt: o.CreatedAt}
	resp := f.execute(t, protocol.ExecuteRequest{Kind: protocol.KindCallback, TaskID: 5, Scene: SceneNotifyPartner,
		IdempotencyKey: o.ID, Args: rawJSON(t, n), Attempt: 1,
		Callback: &protocol.CallbackInfo{Outcome: protocol.OutcomeExhausted, LastError: "partner answered 422", Attempts: 2}})
	if resp.Status != protocol.ExecuteSucceeded {
		t.Fatalf("answer %+v, want succeeded", resp)
	}
	if got, _ := f.svc.Order(o.ID); got.Partner != StateFailed {
		t.Errorf("order %+v: want the partner state failed after an exhausted task", got)
	}
	if c := f.counts(SceneNotifyPartner); c.CallbacksExhausted != 1 || c.CallbacksSucceeded != 0 || c.Replays != 0 {
		t.Errorf("counters %+v: want one exhausted callback and no replay", c)
	}
}

func TestPartnerClientClassifiesAnswers(t *testing.T) {
	for _, tc := range []struct {
		status    int
		ok        bool
		permanent bool
	}{
		{204, true, false},
		{200, true, false},
		{400, false, true},
		{404, false, true},
		{422, false, true},
		{408, false, false},
		{429, false, false},
		{500, false, false},
		{503, false, false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Idempotency-Key") != "ord-1" {
				http.Error(w, "no idempotency key", http.StatusBadRequest)
				return
			}
			http.Error(w, "answer", tc.status)
		}))
		err := NewPartnerClient(srv.URL).Notify(context.Background(), PartnerNotice{OrderID: "ord-1", CreatedAt: time.Now()})
		srv.Close()
		if tc.ok {
			if err != nil {
				t.Errorf("%d: %v, want success", tc.status, err)
			}
			continue
		}
		var pe *PartnerError
		if !errors.As(err, &pe) || pe.StatusCode != tc.status {
			t.Errorf("%d: error %v does not carry the partner's answer", tc.status, err)
		}
		if retryhub.IsPermanent(err) != tc.permanent {
			t.Errorf("%d: permanent %v, want %v (%v)", tc.status, retryhub.IsPermanent(err), tc.permanent, err)
		}
	}

	// No answer at all may pass.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	err := NewPartnerClient(url).Notify(context.Background(), PartnerNotice{OrderID: "ord-1", CreatedAt: time.Now()})
	if err == nil || retryhub.IsPermanent(err) {
		t.Errorf("unreachable partner: %v, want a failure that may pass", err)
	}
}

func TestBroker(t *testing.T) {
	ctx := context.Background()
	b := NewBroker(0)
	m := Message{ID: "ord-1", Topic: TopicOrderCreated, Body: json.RawMessage(`{}`)}
	for range 3 {
		if err := b.Publish(ctx, m); err != nil {
			t.Fatalf("fail rate 0: %v", err)
		}
	}
	if st := b.Stats(); st.Messages != 1 || st.Duplicates != 2 {
		t.Errorf("stats %+v after the same message three times, want 1 stored and 2 repeats dropped", st)
	}

	b = NewBroker(1)
	for i := range 50 {
		m := Message{ID: "ord-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Topic: TopicOrderCreated}
		err := b.Publish(ctx, m)
		_, stored := b.Message(m.ID)
		switch {
		case errors.Is(err, ErrBrokerUnavailable) && !stored:
		case errors.Is(err, ErrAckLost) && stored:
		default:
			t.Fatalf("fail rate 1: error %v with the message stored %v; want unavailable and not stored, or ack lost and stored", err, stored)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := NewBroker(0).Publish(cctx, m); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
}
