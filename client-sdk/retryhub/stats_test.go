package retryhub

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

// Stats count the calls of the client's retryable functions, those whose first attempt failed,
// and the local retries that followed, whether or not the client has started.
func TestStatsCountCallsAndLocalRetries(t *testing.T) {
	c, err := NewClient(Config{Servers: []string{"http://127.0.0.1:1"}, Namespace: "ns", Group: "g", Token: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	fails := 2
	pay := RetryableOn(c, "pay", func(context.Context, int) error {
		if fails > 0 {
			fails--
			return errors.New("partner timed out")
		}
		return nil
	}, WithMode(Local), WithLocalAttempts(5),
		WithLocalBackoff(backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Millisecond)}))
	for range 3 {
		if err := pay(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
	}
	st := c.Stats()
	if st.Calls != 3 || st.Failed != 1 || st.LocalRetries != 2 {
		t.Fatalf("stats %+v: want 3 calls, 1 failed, 2 local retries", st)
	}
}
