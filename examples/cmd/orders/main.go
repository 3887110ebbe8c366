// Command orders runs the example order service against a retryhub server. It serves the order
// API, publishes each new order's message to an in-process broker and tells an in-process (or
// real, -partner-url) partner about it, both through retryhub; the broker and the partner fail
// the fraction -fail-rate of calls.
//
// With -demo-duration it also drives its own API with -demo-rate orders a second for that long,
// prints a progress line every -progress, waits up to -demo-drain for the server's replays,
// prints a summary and stops; it exits 1 when the summary shows retryhub did not do its part.
// Without it, it serves until SIGINT or SIGTERM.
//
// The group token comes from the environment variable RETRYHUB_TOKEN, never from a flag.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/examples/orders"
)

// errInterrupted says a signal stopped the demo before its end.
var errInterrupted = errors.New("interrupted")

// options are the command's flags.
type options struct {
	servers     string
	namespace   string
	group       string
	listen      string
	httpAddr    string
	spool       string
	caFile      string
	failRate    float64
	window      time.Duration
	partnerURL  string
	duration    time.Duration
	rate        float64
	drain       time.Duration
	progress    time.Duration
	logLevel    string
	shutdownFor time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.servers, "server", "http://localhost:8080", "retryhub server base URL; several separated by commas")
	flag.StringVar(&o.namespace, "namespace", "default", "retryhub namespace")
	flag.StringVar(&o.group, "group", "default", "retryhub group (its token comes from RETRYHUB_TOKEN)")
	flag.StringVar(&o.listen, "listen", ":7070", "address of the executor endpoint, where the server sends replays and callbacks")
	flag.StringVar(&o.httpAddr, "http", ":8000", "address of the order API")
	flag.StringVar(&o.spool, "spool", "", "directory that keeps undelivered reports across restarts (empty: memory only)")
	flag.StringVar(&o.caFile, "ca-file", "", "PEM file of the CA that signed an https server's certificate (empty: the system's roots)")
	flag.Float64Var(&o.failRate, "fail-rate", 0.3, "fraction of broker and partner calls that fail and may pass (0 to 1)")
	flag.DurationVar(&o.window, "partner-window", 15*time.Second, "the in-process partner refuses, for good, notifications of orders older than this (0: never)")
	flag.StringVar(&o.partnerURL, "partner-url", "", "base URL of a real partner API (empty: run the in-process partner)")
	flag.DurationVar(&o.duration, "demo-duration", 0, "drive the API with generated orders this long, print a summary and stop (0: serve until a signal)")
	flag.Float64Var(&o.rate, "demo-rate", 20, "generated orders per second")
	flag.DurationVar(&o.drain, "demo-drain", 15*time.Second, "after the traffic, wait at most this long for the server to end the reported tasks")
	flag.DurationVar(&o.progress, "progress", 5*time.Second, "interval of the progress lines")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.DurationVar(&o.shutdownFor, "shutdown-timeout", 10*time.Second, "bound of the graceful shutdown")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "orders: -log-level %q: want debug, info, warn or error\n", o.logLevel)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal stops gracefully; a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, o, log); err != nil {
		if errors.Is(err, errInterrupted) {
			log.Info("orders stopped before the demo ended")
			os.Exit(130)
		}
		log.Error("orders stopped with an error", "err", err)
		os.Exit(1)
	}
}

func (o *options) check() error {
	var errs []error
	if o.failRate < 0 || o.failRate > 1 {
		errs = append(errs, fmt.Errorf("-fail-rate %v: want 0 to 1", o.failRate))
	}
	if o.duration < 0 || o.drain < 0 || o.window < 0 {
		errs = append(errs, errors.New("-demo-duration, -demo-drain and -partner-window must not be negative"))
	}
	if o.duration > 0 && o.rate <= 0 {
		errs = append(errs, fmt.Errorf("-demo-rate %v: want more than 0 orders a second", o.rate))
	}
	if o.progress <= 0 {
		errs = append(errs, fmt.Errorf("-progress %s: want a positive interval", o.progress))
	}
	if os.Getenv("RETRYHUB_TOKEN") == "" {
		errs = append(errs, errors.New("RETRYHUB_TOKEN is empty: set it to the group's token (the server logs it on its first start)"))
	}
	return errors.Join(errs...)
}

// run wires the service, serves it, and in demo mode drives it and prints the summary.
func run(ctx context.Context, o options, log *slog.Logger) error {
	// The dependencies: an in-process broker, and the partner's API.
	broker := orders.NewBroker(o.failRate)
	var partner *orders.PartnerServer
	partnerURL := o.partnerURL
	if partnerURL == "" {
		partner = orders.NewPartnerServer(o.failRate, o.window)
		url, stopPartner, err := serve("127.0.0.1:0", partner, log.With("server", "partner"))
		if err != nil {
			return fmt.Errorf("partner: %w", err)
		}
		defer stopPartner(context.Background())
		partnerURL = url
	}

	// retryhub: the client, then the scenes on it, then Start.
	client, err := retryhub.NewClient(retryhub.Config{
		Servers:    strings.Split(o.servers, ","),
		Namespace:  o.namespace,
		Group:      o.group,
		Token:      os.Getenv("RETRYHUB_TOKEN"),
		ListenAddr: o.listen,
		SpoolDir:   o.spool,
		CAFile:     o.caFile,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	svc := orders.New(client, broker, orders.NewPartnerClient(partnerURL), log)
	if err := client.Start(ctx); err != nil {
		return err
	}
	shutdown := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), o.shutdownFor)
		defer cancel()
		return client.Shutdown(sctx)
	}

	apiURL, stopAPI, err := serve(o.httpAddr, svc.Handler(), log.With("server", "orders-api"))
	if err != nil {
		return errors.Join(fmt.Errorf("order API: %w", err), shutdown())
	}
	log.Info("order service started", "api", apiURL, "partner", partnerURL, "fail_rate", o.failRate)

	var runErr error
	if o.duration > 0 {
		runErr = demo(ctx, o, svc, client, broker, partner, apiURL)
	} else {
		<-ctx.Done()
		log.Info("stopping")
	}
	// Stop taking orders, then let the client deliver what is queued and deregister.
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownFor)
	defer cancel()
	if err := stopAPI(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("stop the order API: %w", err))
	}
	if err := shutdown(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if o.duration == 0 {
		printSummary(os.Stdout, svc.Stats(), broker, partner)
	}
	return runErr
}

// serve serves h on addr until the returned stop is called; it returns the server's base URL.
func serve(addr string, h http.Handler, log *slog.Logger) (string, func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("server stopped", "err", err)
		}
	}()
	host := "127.0.0.1"
	if name, _, err := net.SplitHostPort(addr); err == nil && name != "" && !net.ParseIP(name).IsUnspecified() {
		host = name
	}
	url := fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)))
	stop := func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		<-done
		return err
	}
	return url, stop, nil
}

// demo drives the API for o.duration, waits for the replays, prints the summary and checks it.
func demo(ctx context.Context, o options, svc *orders.Service, client *retryhub.Client,
	broker *orders.Broker, partner *orders.PartnerServer, apiURL string) error {
	start := time.Now()
	last := -time.Second
	progress := func() {
		// At most one line a second: the drain's last tick and its end may coincide.
		if now := time.Since(start); now-last >= time.Second {
			last = now
			printProgress(os.Stdout, now, svc.Stats())
		}
	}
	fmt.Printf("orders: %s of traffic at %.0f orders/s, fail rate %.2f; a progress line every %s\n",
		o.duration, o.rate, o.failRate, o.progress)

	tctx, cancel := context.WithTimeout(ctx, o.duration)
	refused := drive(tctx, apiURL, o.rate, o.progress, progress)
	cancel()
	if ctx.Err() == nil {
		fmt.Printf("orders: traffic stopped; waiting up to %s for the server to end the reported tasks\n", o.drain)
		drain(ctx, svc, o.drain, o.progress, progress)
		progress()
	}
	st := svc.Stats()
	cs := client.Stats()
	printSummary(os.Stdout, st, broker, partner)
	fmt.Printf("retryhub client: %d reports delivered (%d merged), %d rejected, %d still queued\n",
		cs.Delivered, cs.Merged, cs.Rejected, cs.Queued)
	if ctx.Err() != nil {
		return errInterrupted
	}
	return verdict(st, cs, refused)
}

// drive posts generated orders to the API at rate a second until ctx ends, calling progress
// every interval; it returns how many orders the API refused.
func drive(ctx context.Context, apiURL string, rate float64, interval time.Duration, progress func()) int {
	httpClient := &http.Client{Timeout: 30 * time.Second}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	report := time.NewTicker(interval)
	defer report.Stop()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		rejected int
	)
	// Orders run side by side, as a service's requests do; at most 256 at once.
	sem := make(chan struct{}, 256)
	customers := []string{"ada", "grace", "edsger", "barbara", "ken", "margaret", "donald", "frances"}
	currencies := []string{"EUR", "USD", "GBP", "JPY"}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-report.C:
			progress()
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				break loop
			}
			wg.Go(func() {
				defer func() { <-sem }()
				in := orders.NewOrder{Customer: customers[rand.IntN(len(customers))],
					AmountCents: 100 + rand.Int64N(100_000), Currency: currencies[rand.IntN(len(currencies))]}
				if err := postOrder(context.WithoutCancel(ctx), httpClient, apiURL, in); err != nil {
					slog.Error("order refused", "err", err)
					mu.Lock()
					rejected++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return rejected
}

func postOrder(ctx context.Context, c *http.Client, apiURL string, in orders.NewOrder) error {
	body, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/orders", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST /orders answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// drain waits until no reported task is open, ctx ends or limit passes.
func drain(ctx context.Context, svc *orders.Service, limit, interval time.Duration, progress func()) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	report := time.NewTicker(interval)
	defer report.Stop()
	for {
		open := int64(0)
		for _, sc := range svc.Stats().Scenes {
			open += sc.Open()
		}
		if open <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-report.C:
			progress()
		case <-poll.C:
		}
	}
}

// total adds up the scenes' counters.
func total(st orders.Stats) orders.SceneCounts {
	var t orders.SceneCounts
	for _, c := range st.Scenes {
		t.Calls += c.Calls
		t.LocalRetries += c.LocalRetries
		t.Reported += c.Reported
		t.Failed += c.Failed
		t.Replays += c.Replays
		t.ReplaysFailed += c.ReplaysFailed
		t.Succeeded += c.Succeeded
		t.Exhausted += c.Exhausted
		t.CallbacksSucceeded += c.CallbacksSucceeded
		t.CallbacksExhausted += c.CallbacksExhausted
	}
	return t
}

func printProgress(w io.Writer, elapsed time.Duration, st orders.Stats) {
	t := total(st)
	fmt.Fprintf(w, "[%3.0fs] orders %d | calls %d | retried locally %d | reported %d | replayed %d | succeeded %d | exhausted %d | open %d\n",
		elapsed.Seconds(), st.Orders, t.Calls, t.LocalRetries, t.Reported, t.Replays, t.Succeeded, t.Exhausted, t.Open())
}

// printSummary prints the counters per scene and what each column means.
func printSummary(w io.Writer, st orders.Stats, broker *orders.Broker, partner *orders.PartnerServer) {
	fmt.Fprintf(w, "\nsummary: %d orders\n\n", st.Orders)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scene\tcalls\tretried locally\treported\tnot reported\treplayed\treplays failed\tsucceeded\texhausted\topen\tcallbacks\t")
	for _, c := range append(st.Scenes, withName(total(st), "total")) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", c.Scene, c.Calls, c.LocalRetries, c.Reported,
			c.Failed, c.Replays, c.ReplaysFailed, c.Succeeded, c.Exhausted, c.Open(), c.CallbacksSucceeded+c.CallbacksExhausted)
	}
	tw.Flush()
	fmt.Fprint(w, `
  calls            calls the service made, one per order and scene
  retried locally  attempts the SDK made in-process after a call's first one (the scene function
                   ran inside the call's retry flow: retryhub.InFlow)
  reported         calls that still failed after their local attempts and went to the server,
                   one task each (errors.Is(err, retryhub.ErrReported))
  not reported     calls that failed without a report (a permanent error, a full queue)
  replayed         attempts the server sent through the executor endpoint (retryhub.ReplayOf)
  replays failed   replays that failed with an error that may pass; the server tries again later
  succeeded        replays that succeeded: each ended its task as succeeded
  exhausted        replays that failed with a retryhub.Permanent error: each ended its task at
                   once as exhausted, a dead letter for an operator
  open             reported tasks no replay has ended yet (still waiting on the server)
  callbacks        task outcomes the scene's callback was told of (notify-partner declares one;
                   callbacks run after their task ends, so they may trail its outcome)
`)
	b := broker.Stats()
	fmt.Fprintf(w, "\nbroker: %d messages stored, %d repeated copies dropped by message id\n", b.Messages, b.Duplicates)
	if partner != nil {
		p := partner.Stats()
		fmt.Fprintf(w, "partner: notified of %d orders, %d repeated notifications\n", p.Orders, p.Duplicates)
	}
}

func withName(c orders.SceneCounts, name string) orders.SceneCounts {
	c.Scene = name
	return c
}

// verdict says whether the run showed retryhub doing its part: the API took every order, the
// instance stayed registered, the server took every report, and reported calls came back as
// replays.
func verdict(st orders.Stats, cs retryhub.Stats, refused int) error {
	t := total(st)
	var problems []string
	if refused > 0 {
		problems = append(problems, fmt.Sprintf("the order API refused %d generated orders", refused))
	}
	if !cs.Registered {
		problems = append(problems, "the instance is not registered with the server")
	}
	if cs.Rejected > 0 {
		problems = append(problems, fmt.Sprintf("the server rejected %d reports", cs.Rejected))
	}
	if t.Reported > 0 && t.Replays == 0 {
		problems = append(problems, fmt.Sprintf("%d calls were reported but the server replayed none", t.Reported))
	}
	if t.Calls == 0 {
		problems = append(problems, "no calls were made")
	}
	if len(problems) > 0 {
		return fmt.Errorf("the demo did not show retryhub at work: %s", strings.Join(problems, "; "))
	}
	fmt.Println("\norders: demo OK")
	return nil
}
