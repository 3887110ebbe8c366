package orders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

// PartnerNotice is what the partner is told about a new order. It is the notify-partner
// scene's argument, so it travels to the retryhub server as JSON and back for a replay.
type PartnerNotice struct {
	OrderID     string    `json:"order_id"`
	AmountCents int64     `json:"amount_cents"`
	Currency    string    `json:"currency"`
	CreatedAt   time.Time `json:"created_at"`
}

// PartnerPath is where the partner takes notifications.
const PartnerPath = "/notifications"

// PartnerServer is an in-process stand-in for a partner's HTTP API, which takes order
// notifications at POST PartnerPath. It answers 503 to a fraction of requests, and 422 to a
// notification about an order created longer ago than its window, as partners that refuse
// stale events do: a notification that has not got through within the window never will. It
// counts the notifications it accepted, per order. It is safe for concurrent use.
type PartnerServer struct {
	failRate float64
	window   time.Duration

	mu       sync.Mutex
	notified map[string]int // accepted notifications by order id
}

// NewPartnerServer returns a partner that fails the fraction failRate (0 to 1) of requests
// with 503 and refuses notifications of orders older than window (0: no limit) with 422.
func NewPartnerServer(failRate float64, window time.Duration) *PartnerServer {
	return &PartnerServer{failRate: failRate, window: window, notified: make(map[string]int)}
}

// ServeHTTP serves POST PartnerPath.
func (p *PartnerServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != PartnerPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	var n PartnerNotice
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&n); err != nil || n.OrderID == "" || n.CreatedAt.IsZero() {
		http.Error(w, "want a JSON notice with order_id and created_at", http.StatusBadRequest)
		return
	}
	if age := time.Since(n.CreatedAt); p.window > 0 && age > p.window {
		http.Error(w, fmt.Sprintf("order %s is %s old; notifications are accepted within %s of the order",
			n.OrderID, age.Round(time.Second), p.window), http.StatusUnprocessableEntity)
		return
	}
	if rand.Float64() < p.failRate {
		http.Error(w, "partner temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	p.notified[n.OrderID]++
	p.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// PartnerStats are what the partner received.
type PartnerStats struct {
	// Orders counts the orders the partner accepted a notification for.
	Orders int
	// Duplicates counts the accepted notifications beyond the first of an order.
	Duplicates int
}

// Stats returns what the partner received.
func (p *PartnerServer) Stats() PartnerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PartnerStats{Orders: len(p.notified)}
	for _, n := range p.notified {
		st.Duplicates += n - 1
	}
	return st
}

// PartnerError is an answer of the partner other than success.
type PartnerError struct {
	StatusCode int
	// Message is the start of the partner's answer.
	Message string
}

// Error says what the partner answered.
func (e *PartnerError) Error() string {
	return fmt.Sprintf("partner answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// PartnerClient sends notifications to a partner's API.
type PartnerClient struct {
	url  string
	http *http.Client
}

// NewPartnerClient returns a client of the partner API at baseURL. Its requests carry the
// retry flow (retryhub.Transport), so a partner that uses retryhub itself does not add retries
// of its own to a replay of ours.
func NewPartnerClient(baseURL string) *PartnerClient {
	return &PartnerClient{
		url:  strings.TrimRight(baseURL, "/") + PartnerPath,
		http: &http.Client{Timeout: 5 * time.Second, Transport: retryhub.Transport(nil)},
	}
}

// Notify tells the partner about an order. A failure that may pass (no answer, 408, 429, 5xx)
// is returned as is, to be retried; a refusal (any other 4xx) is marked retryhub.Permanent,
// since sending the same notice again cannot change the answer.
func (c *PartnerClient) Notify(ctx context.Context, n PartnerNotice) error {
	body, err := json.Marshal(n)
	if err != nil {
		return retryhub.Permanent(fmt.Errorf("encode the notice of order %s: %w", n.OrderID, err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return retryhub.Permanent(fmt.Errorf("notify the partner of order %s: %w", n.OrderID, err))
	}
	req.Header.Set("Content-Type", "application/json")
	// The partner can drop repeats by this key: replays are at least once.
	req.Header.Set("Idempotency-Key", n.OrderID)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("notify the partner of order %s: %w", n.OrderID, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return nil
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
		return fmt.Errorf("notify the partner of order %s: %w", n.OrderID,
			&PartnerError{StatusCode: s, Message: strings.TrimSpace(string(msg))})
	default:
		return retryhub.Permanent(fmt.Errorf("notify the partner of order %s: %w", n.OrderID,
			&PartnerError{StatusCode: s, Message: strings.TrimSpace(string(msg))}))
	}
}
