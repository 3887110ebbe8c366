// Package orders is an order service that uses retryhub the way a business service does. When
// an order is created it publishes an "order created" message to a broker and tells a partner
// about the order over HTTP, each through a retryable scene:
//
//   - publish-order-created (LOCAL_REMOTE): retried in-process, then reported to the retryhub
//     server, which replays it later; the message id is the order id, so the broker drops the
//     copy a replay sends after a lost acknowledgement.
//   - notify-partner (LOCAL_REMOTE, with a callback): the same, and when its task ends the
//     server runs the callback, which marks an order whose partner was never told for a person
//     to follow up. The partner refuses notifications that come too late, with an answer the
//     function marks retryhub.Permanent: such a task ends exhausted at once.
//
// The broker and the partner here are in-process stand-ins (Broker, PartnerServer) that fail a
// configurable fraction of calls, so that every path of a retry shows.
package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/client-sdk/retryhub/prom"
)

// The service's scenes, as the retryhub console shows them.
const (
	ScenePublishOrderCreated = "publish-order-created"
	SceneNotifyPartner       = "notify-partner"
)

// OrderCreated is the body of the "order created" message. It is the publish-order-created
// scene's argument, so it travels to the retryhub server as JSON and back for a replay.
type OrderCreated struct {
	OrderID     string    `json:"order_id"`
	Customer    string    `json:"customer"`
	AmountCents int64     `json:"amount_cents"`
	Currency    string    `json:"currency"`
	CreatedAt   time.Time `json:"created_at"`
}

// Service is the order service: its HTTP API, its store, and its two retryable side effects.
type Service struct {
	log     *slog.Logger
	broker  *Broker
	partner *PartnerClient
	store   *store
	orders  atomic.Int64

	publishStats, notifyStats sceneStats
	// metrics holds the SDK client's collector, served at /metrics.
	metrics *prometheus.Registry

	// The retryable scenes: call them like the functions they wrap.
	publishOrderCreated func(context.Context, OrderCreated) error
	notifyPartner       func(context.Context, PartnerNotice) error
}

// New returns the service, with its scenes declared on client. Declare them before
// client.Start, so that the instance registers with its scenes and replays find them. log nil
// means slog.Default().
func New(client *retryhub.Client, broker *Broker, partner *PartnerClient, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{log: log, broker: broker, partner: partner, store: newStore(), metrics: prometheus.NewRegistry()}
	s.metrics.MustRegister(prom.NewCollector(client, nil))
	s.publishStats.name = ScenePublishOrderCreated
	s.notifyStats.name = SceneNotifyPartner

	// The options are code defaults: once the server knows a scene, its policy (edited in the
	// console) wins. They match the server's defaults for a new scene, so nothing changes when
	// the policy arrives.
	s.publishOrderCreated = retryhub.RetryableOn(client, ScenePublishOrderCreated, s.publish,
		retryhub.WithMode(retryhub.LocalRemote),
		retryhub.WithLocalAttempts(3),
		// One task per order: a repeated report merges into the order's active task.
		retryhub.WithKey(func(m OrderCreated) string { return m.OrderID }))

	s.notifyPartner = retryhub.RetryableOn(client, SceneNotifyPartner, s.notify,
		retryhub.WithMode(retryhub.LocalRemote),
		retryhub.WithLocalAttempts(3),
		retryhub.WithKey(func(n PartnerNotice) string { return n.OrderID }),
		retryhub.WithCallback(s.partnerNotified))
	return s
}

// publish is publish-order-created's function: it publishes the message once. The SDK calls it
// again for local retries and replays.
func (s *Service) publish(ctx context.Context, m OrderCreated) error {
	body, err := json.Marshal(m)
	if err != nil {
		return retryhub.Permanent(fmt.Errorf("encode the message of order %s: %w", m.OrderID, err))
	}
	// The message id is the order id: at-least-once replays become exactly one message.
	err = s.broker.Publish(ctx, Message{ID: m.OrderID, Topic: TopicOrderCreated, Body: body})
	s.publishStats.attempt(ctx, err)
	if err == nil {
		s.store.update(m.OrderID, func(o *Order) { o.Published = StateDone })
	}
	return err
}

// notify is notify-partner's function: it tells the partner once.
func (s *Service) notify(ctx context.Context, n PartnerNotice) error {
	err := s.partner.Notify(ctx, n)
	s.notifyStats.attempt(ctx, err)
	switch {
	case err == nil:
		s.store.update(n.OrderID, func(o *Order) { o.Partner = StateDone })
	case retryhub.IsPermanent(err):
		s.store.update(n.OrderID, func(o *Order) { o.Partner = StateFailed })
		if r, ok := retryhub.ReplayOf(ctx); ok {
			s.log.WarnContext(ctx, "the partner refused an order's notification for good; its task ends exhausted",
				"order", n.OrderID, "task", r.TaskID, "replay", r.Attempt, "err", err)
		}
	}
	return err
}

// partnerNotified is notify-partner's callback: the server runs it when a reported
// notification's task ends. An order whose partner was never told needs a person.
func (s *Service) partnerNotified(ctx context.Context, ev retryhub.CallbackEvent[PartnerNotice]) error {
	s.notifyStats.callback(ev.Outcome)
	switch ev.Outcome {
	case protocol.OutcomeSucceeded:
		s.log.InfoContext(ctx, "partner notified after replays", "order", ev.Args.OrderID, "replays", ev.Attempts)
	case protocol.OutcomeExhausted:
		s.store.update(ev.Args.OrderID, func(o *Order) { o.Partner = StateFailed })
		s.log.WarnContext(ctx, "the partner was never told about an order; follow it up by hand",
			"order", ev.Args.OrderID, "task", ev.TaskID, "replays", ev.Attempts, "last_error", ev.LastError)
	}
	return nil
}

// CreateOrder validates and stores an order, then publishes its message and tells the partner.
// A side effect that fails is retried by retryhub and does not fail the order: the returned
// order says where each stands. Only an invalid order is an error (ErrInvalidOrder).
func (s *Service) CreateOrder(ctx context.Context, in NewOrder) (Order, error) {
	if err := in.Validate(); err != nil {
		return Order{}, err
	}
	o := s.store.create(in, time.Now())
	s.orders.Add(1)

	err := s.publishOrderCreated(ctx, OrderCreated{OrderID: o.ID, Customer: o.Customer,
		AmountCents: o.AmountCents, Currency: o.Currency, CreatedAt: o.CreatedAt})
	s.publishStats.call(err)
	s.settled(ctx, o.ID, ScenePublishOrderCreated, err, func(o *Order) *string { return &o.Published })

	err = s.notifyPartner(ctx, PartnerNotice{OrderID: o.ID, AmountCents: o.AmountCents,
		Currency: o.Currency, CreatedAt: o.CreatedAt})
	s.notifyStats.call(err)
	o, _ = s.settled(ctx, o.ID, SceneNotifyPartner, err, func(o *Order) *string { return &o.Partner })
	return o, nil
}

// settled records what a side effect's call returned in the order's state.
func (s *Service) settled(ctx context.Context, id, scene string, err error, field func(*Order) *string) (Order, bool) {
	var state string
	switch {
	case err == nil:
		state = StateDone
	case errors.Is(err, retryhub.ErrReported):
		// The server has it (or will, from the spool): the replay settles the state.
		s.log.DebugContext(ctx, "side effect failed; retryhub retries it", "order", id, "scene", scene, "err", err)
		state = StateRetrying
	default:
		// Not retried: a permanent failure, or a report the client could not take.
		s.log.ErrorContext(ctx, "side effect failed and is not retried", "order", id, "scene", scene, "err", err)
		state = StateFailed
	}
	return s.store.update(id, func(o *Order) {
		if f := field(o); *f == StatePending || state == StateFailed {
			*f = state
		}
	})
}

// Order returns the order with that id.
func (s *Service) Order(id string) (Order, bool) { return s.store.get(id) }

// Stats are the service's counters.
type Stats struct {
	// Orders counts the orders created.
	Orders int64 `json:"orders"`
	// Scenes holds the counters of each scene.
	Scenes []SceneCounts `json:"scenes"`
}

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	return Stats{Orders: s.orders.Load(), Scenes: []SceneCounts{s.publishStats.counts(), s.notifyStats.counts()}}
}

// maxBody bounds a request body of the API.
const maxBody = 64 << 10

// Handler serves the service's API:
//
//	POST /orders       create an order from a NewOrder; 201 with the Order, 400 when invalid
//	GET  /orders/{id}  the Order; 404 when unknown
//	GET  /stats        the Stats
//	GET  /metrics      the retryhub client's counters for Prometheus (retryhub/prom)
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.handleCreate)
	mux.HandleFunc("GET /orders/{id}", s.handleGet)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Stats()) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	return mux
}

func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	var in NewOrder
	if err := dec.Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "the body is not a JSON order: "+err.Error())
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "the body holds more than one JSON value")
		return
	}
	o, err := s.CreateOrder(r.Context(), in)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Location", "/orders/"+o.ID)
	writeJSON(w, http.StatusCreated, o)
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) {
	o, ok := s.store.get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no such order")
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
