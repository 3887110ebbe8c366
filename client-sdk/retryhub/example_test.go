package retryhub_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

type Email struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

func sendEmail(ctx context.Context, e Email) error {
	if e.To == "" {
		return retryhub.Permanent(errors.New("no recipient")) // retrying cannot fix this
	}
	return nil // talk to the mail relay here
}

// SendEmail is declared once, beside its function, and called like it.
var SendEmail = retryhub.Retryable("send-email", sendEmail,
	retryhub.WithMode(retryhub.LocalRemote),
	retryhub.WithLocalAttempts(3),
	retryhub.WithKey(func(e Email) string { return "welcome:" + e.To }),
	retryhub.WithCallback(func(ctx context.Context, ev retryhub.CallbackEvent[Email]) error {
		log.Printf("welcome mail to %s ended %s after %d replays", ev.Args.To, ev.Outcome, ev.Attempts)
		return nil
	}))

func Example() {
	ctx := context.Background()
	client, err := retryhub.Start(ctx, retryhub.Config{
		Servers:    []string{"http://retryhub-1:8080", "http://retryhub-2:8080"},
		Group:      "orders",
		Token:      "the group's token",
		ListenAddr: ":7070",
		SpoolDir:   "/var/lib/orders/retryhub",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.Shutdown(ctx); err != nil {
			log.Print(err)
		}
	}()

	err = SendEmail(ctx, Email{To: "ada@example.com", Subject: "Welcome"})
	switch {
	case err == nil:
	case errors.Is(err, retryhub.ErrReported):
		// The server retries it; the caller can move on.
	default:
		log.Print(err)
	}
}

// An application that already serves HTTP mounts the executor endpoint itself.
func ExampleClient_Handler() {
	client, err := retryhub.NewClient(retryhub.Config{
		Servers:     []string{"http://retryhub:8080"},
		Group:       "orders",
		Token:       "the group's token",
		ExecutorURL: "http://orders-1.internal:8000" + retryhub.ExecutorPath,
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(retryhub.ExecutorPath, client.Handler())
	// … register the application's own routes, start the server, then client.Start(ctx).
	fmt.Println(retryhub.ExecutorPath)
	// Output: /retryhub/execute
}

// Do retries in-process only, for code that needs no scene.
func ExampleDo() {
	calls := 0
	err := retryhub.Do(context.Background(), 3,
		backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Millisecond)}.MustCompile(),
		func(ctx context.Context) error {
			calls++
			if calls < 2 {
				return errors.New("connection reset")
			}
			return nil
		})
	fmt.Println(calls, err)
	// Output: 2 <nil>
}

// Outgoing calls carry the retry flow, so a downstream service using retryhub runs its own
// retryables once inside a replay instead of multiplying retries; a downstream answer with
// the no-retry header stops the retries at once.
func ExampleTransport() {
	httpClient := &http.Client{Transport: retryhub.Transport(nil)}
	handler := retryhub.Middleware(http.NotFoundHandler()) // on the downstream side
	_, _ = httpClient, handler
}
