// Command failing is a business service whose every call fails, for watching retryhub work on
// failures (the console's browser tests use it). It reports -tasks calls of each of two scenes
// in REMOTE mode and then serves the server's replays, which fail too, until SIGINT or SIGTERM:
//
//   - "charge": up to 1000 replays an hour apart, so its tasks stay waiting;
//   - "notify": 2 replays a second apart, so its tasks soon become dead letters.
//
// Each call's arguments are {"orderId": i, "email": "..."} and its idempotency key order-<i>.
// The group token comes from the environment variable RETRYHUB_TOKEN. Once every report is
// handed to the SDK it prints "reported N" on standard output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

// Order is the arguments of both scenes.
type Order struct {
	OrderID int    `json:"orderId"`
	Email   string `json:"email"`
}

func key(o Order) string { return "order-" + strconv.Itoa(o.OrderID) }

// errDown is what every call answers.
var errDown = errors.New("payment gateway unavailable: connection refused")

var (
	charge = retryhub.Retryable("charge", func(context.Context, Order) error { return errDown },
		retryhub.WithMode(retryhub.Remote), retryhub.WithKey(key),
		retryhub.WithRemotePolicy(protocol.RemotePolicy{MaxAttempts: 1000,
			Backoff: &backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}}))
	notify = retryhub.Retryable("notify", func(_ context.Context, o Order) error {
		return fmt.Errorf("mail relay refused %s: 550 mailbox unavailable", o.Email)
	},
		retryhub.WithMode(retryhub.Remote), retryhub.WithKey(key),
		retryhub.WithRemotePolicy(protocol.RemotePolicy{MaxAttempts: 2,
			Backoff: &backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Second)}}))
)

func main() {
	server := flag.String("server", "http://localhost:8080", "retryhub server base URL")
	namespace := flag.String("namespace", "default", "retryhub namespace")
	group := flag.String("group", "default", "retryhub group (its token comes from RETRYHUB_TOKEN)")
	listen := flag.String("listen", "127.0.0.1:7071", "address of the executor endpoint")
	tasks := flag.Int("tasks", 20, "calls of each scene to report")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *server, *namespace, *group, *listen, *tasks); err != nil {
		log.Error("failing stopped with an error", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, server, namespace, group, listen string, tasks int) error {
	client, err := retryhub.Start(ctx, retryhub.Config{
		Servers: strings.Split(server, ","), Namespace: namespace, Group: group,
		Token: os.Getenv("RETRYHUB_TOKEN"), ListenAddr: listen, Logger: log,
		HeartbeatInterval: time.Second,
	})
	if err != nil {
		return fmt.Errorf("start the retryhub client: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.Shutdown(sctx); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}()
	for i := 1; i <= tasks; i++ {
		o := Order{OrderID: i, Email: fmt.Sprintf("customer%d@example.com", i)}
		for _, call := range []func(context.Context, Order) error{charge, notify} {
			if err := call(ctx, o); !errors.Is(err, retryhub.ErrReported) {
				return fmt.Errorf("order %d: want a reported failure, got %v", i, err)
			}
		}
	}
	fmt.Printf("reported %d\n", 2*tasks)
	<-ctx.Done()
	return nil
}
