package orders

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// NewOrder is the body of POST /orders.
type NewOrder struct {
	// Customer identifies who ordered: 1 to 64 bytes.
	Customer string `json:"customer"`
	// AmountCents is the order's total in the currency's smallest unit: 1 to MaxAmountCents.
	AmountCents int64 `json:"amount_cents"`
	// Currency is an ISO 4217 code of three capital letters, such as "EUR".
	Currency string `json:"currency"`
}

// MaxAmountCents bounds an order's total.
const MaxAmountCents = 100_000_000_00

// ErrInvalidOrder marks an order the service refuses as it stands; the error says why.
var ErrInvalidOrder = errors.New("invalid order")

// Validate says what is wrong with o, naming every field at fault; nil when nothing is.
func (o NewOrder) Validate() error {
	var problems []string
	switch c := strings.TrimSpace(o.Customer); {
	case c == "":
		problems = append(problems, "customer is empty")
	case len(o.Customer) > 64:
		problems = append(problems, fmt.Sprintf("customer is %d bytes, at most 64", len(o.Customer)))
	}
	if o.AmountCents < 1 || o.AmountCents > MaxAmountCents {
		problems = append(problems, fmt.Sprintf("amount_cents is %d, want 1 to %d", o.AmountCents, int64(MaxAmountCents)))
	}
	if !isCurrency(o.Currency) {
		problems = append(problems, fmt.Sprintf("currency %q is not three capital letters (ISO 4217)", o.Currency))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOrder, strings.Join(problems, "; "))
	}
	return nil
}

func isCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range len(s) {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// The states of an order's side effects.
const (
	// StatePending: not done yet (the call is running).
	StatePending = "pending"
	// StateDone: the message is published, or the partner was told.
	StateDone = "done"
	// StateRetrying: the call failed and was reported; retryhub replays it.
	StateRetrying = "retrying"
	// StateFailed: it failed for good and needs a person.
	StateFailed = "failed"
)

// Order is a created order and where its side effects stand.
type Order struct {
	ID          string    `json:"id"`
	Customer    string    `json:"customer"`
	AmountCents int64     `json:"amount_cents"`
	Currency    string    `json:"currency"`
	CreatedAt   time.Time `json:"created_at"`
	// Published is the state of the "order created" message (StatePending, StateDone, …).
	Published string `json:"published"`
	// Partner is the state of the partner's notification.
	Partner string `json:"partner"`
}

// store keeps the orders in memory: a stand-in for the service's database.
type store struct {
	mu     sync.Mutex
	orders map[string]*Order
}

func newStore() *store { return &store{orders: make(map[string]*Order)} }

// create stores a new order with a fresh id and returns a copy.
func (s *store) create(o NewOrder, now time.Time) Order {
	ord := &Order{ID: newOrderID(), Customer: o.Customer, AmountCents: o.AmountCents, Currency: o.Currency,
		CreatedAt: now.UTC(), Published: StatePending, Partner: StatePending}
	s.mu.Lock()
	s.orders[ord.ID] = ord
	s.mu.Unlock()
	return *ord
}

// get returns a copy of the order with that id.
func (s *store) get(id string) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[id]
	if !ok {
		return Order{}, false
	}
	return *o, true
}

// update changes an order under the lock and returns a copy; it does nothing for an unknown
// id (a replay of an order this process does not hold, say after a restart).
func (s *store) update(id string, f func(*Order)) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[id]
	if !ok {
		return Order{}, false
	}
	f(o)
	return *o, true
}

// newOrderID returns "ord-" and 16 random hex digits: unique across restarts, so that an
// order's idempotency key never meets a task of another order.
func newOrderID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "ord-" + hex.EncodeToString(b[:])
}
