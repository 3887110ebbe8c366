// Command clusterclient is the business service of the cluster fault run (`make test-cluster`):
// an SDK client with a disk spool whose one scene, "cluster-job", fails on its first two
// executions for a key and succeeds from the third on. It makes -tasks calls, one per key
// (job-00000, job-00001, …), at -rate calls a second; each fails and is reported (REMOTE mode),
// and the server's replays run the same function until it succeeds.
//
// Every execution appends a line to the -log file, and every call handed to the SDK another, each
// with one write on a file opened with O_APPEND, so the record survives kill -9:
//
//	E <key> <n> ok|fail <pid>   the n-th execution of key, and its outcome
//	R <key> <pid>               the call of key returned: reported (its report is in the spool) or done
//
// A restarted process reads the log first: it goes on counting each key's executions from
// there, and calls only the keys that have no R line yet. It prints "ready" once started,
// "progress N" every second (keys handed over, counting those of earlier processes), and
// "generated N" once every key has been; on SIGTERM it shuts the client down and prints
// "stats queued=… delivered=… merged=… rejected=…". The group token comes from RETRYHUB_TOKEN.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

// Scene is the scene's name.
const Scene = "cluster-job"

// Job is the scene's arguments.
type Job struct {
	Key string `json:"key"`
}

// Key formats the i-th call's key.
func Key(i int) string { return fmt.Sprintf("job-%05d", i) }

// journal is the execution log and what it holds.
type journal struct {
	f   *os.File
	pid string

	mu       sync.Mutex
	runs     map[string]int  // executions per key
	reported map[string]bool // keys whose call returned
}

// openJournal reads the log at path (a torn last line, if any, is ignored) and opens it for
// appending.
func openJournal(path string) (*journal, error) {
	j := &journal{pid: strconv.Itoa(os.Getpid()), runs: map[string]int{}, reported: map[string]bool{}}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			switch {
			case len(fields) == 5 && fields[0] == "E":
				if n, err := strconv.Atoi(fields[2]); err == nil && n > j.runs[fields[1]] {
					j.runs[fields[1]] = n
				}
			case len(fields) == 3 && fields[0] == "R":
				j.reported[fields[1]] = true
			}
		}
		err := sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read the execution log %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open the execution log %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the execution log %s for appending: %w", path, err)
	}
	j.f = f
	return j, nil
}

// write appends one line with a single write.
func (j *journal) write(line string) error {
	if _, err := j.f.Write([]byte(line)); err != nil {
		return fmt.Errorf("append to the execution log: %w", err)
	}
	return nil
}

// errTransient is what the first two executions of a key answer.
var errTransient = errors.New("downstream unavailable")

// run is the scene's function: the key's n-th execution fails while n <= 2.
func (j *journal) run(_ context.Context, job Job) error {
	j.mu.Lock()
	j.runs[job.Key]++
	n := j.runs[job.Key]
	j.mu.Unlock()
	outcome := "ok"
	if n <= 2 {
		outcome = "fail"
	}
	if err := j.write(fmt.Sprintf("E %s %d %s %s\n", job.Key, n, outcome, j.pid)); err != nil {
		return err
	}
	if n <= 2 {
		return fmt.Errorf("execution %d of %s: %w", n, job.Key, errTransient)
	}
	return nil
}

func main() {
	servers := flag.String("servers", "http://127.0.0.1:8080", "retryhub server base URLs, comma separated")
	listen := flag.String("listen", "127.0.0.1:7070", "address of the executor endpoint")
	spool := flag.String("spool", "", "spool directory (required)")
	logPath := flag.String("log", "", "execution log file (required)")
	tasks := flag.Int("tasks", 20000, "calls to make, one per key")
	rate := flag.Int("rate", 250, "calls per second")
	workers := flag.Int("workers", 16, "calls made at once")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if *spool == "" || *logPath == "" || *tasks < 1 || *rate < 1 || *workers < 1 {
		fmt.Fprintln(os.Stderr, "clusterclient: -spool and -log are required; -tasks, -rate and -workers must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, log, strings.Split(*servers, ","), *listen, *spool, *logPath, *tasks, *rate, *workers); err != nil {
		log.Error("clusterclient stopped with an error", "err", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, log *slog.Logger, servers []string, listen, spool, logPath string, tasks, rate, workers int) error {
	j, err := openJournal(logPath)
	if err != nil {
		return err
	}
	defer j.f.Close()
	call := retryhub.Retryable(Scene, j.run, retryhub.WithMode(retryhub.Remote),
		retryhub.WithKey(func(job Job) string { return job.Key }),
		retryhub.WithTimeout(5*time.Second),
		retryhub.WithRemotePolicy(protocol.RemotePolicy{MaxAttempts: 25,
			Backoff: &backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Second)}}))
	client, err := retryhub.Start(ctx, retryhub.Config{
		Servers: servers, Group: "default", Token: os.Getenv("RETRYHUB_TOKEN"),
		ListenAddr: listen, SpoolDir: spool, Capacity: 64, Logger: log,
		HeartbeatInterval: time.Second, PolicyRefreshInterval: time.Second,
		RetryMinDelay: 100 * time.Millisecond, RetryMaxDelay: 2 * time.Second,
		MaxQueuedReports: 2 * tasks,
	})
	if err != nil {
		return fmt.Errorf("start the retryhub client: %w", err)
	}
	fmt.Println("ready")

	var handed atomic.Int64
	keys := make(chan string)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range keys {
				if err := handOver(ctx, j, call, key); err != nil {
					errc <- err
					return
				}
				handed.Add(1)
			}
		}()
	}
	j.mu.Lock()
	var todo []string
	for i := range tasks {
		if k := Key(i); !j.reported[k] {
			todo = append(todo, k)
		}
	}
	j.mu.Unlock()
	handed.Store(int64(tasks - len(todo)))
	log.Info("clusterclient: calling", "keys", len(todo), "already_handed", tasks-len(todo))

	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	genDone := make(chan error, 1)
	go func() {
		defer close(keys)
		start := time.Now()
		every := time.Second / time.Duration(rate)
		for i, k := range todo {
			// Pace the calls: the i-th goes no sooner than i intervals after the start.
			if d := time.Until(start.Add(time.Duration(i) * every)); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			select {
			case keys <- k:
			case err := <-errc:
				genDone <- err
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		select {
		case err := <-errc:
			genDone <- err
		default:
			genDone <- nil
		}
	}()
	generated := false
	for !generated {
		select {
		case <-progress.C:
			fmt.Printf("progress %d\n", handed.Load())
		case err := <-genDone:
			if err != nil {
				shutdown(client, log)
				return err
			}
			if ctx.Err() == nil {
				fmt.Printf("generated %d\n", handed.Load())
			}
			generated = true
		}
	}
	<-ctx.Done()
	shutdown(client, log)
	return nil
}

// handOver calls key until the call returns reported (its report is in the spool) or done, then
// records it. A full report queue, or any other error, is tried again for a while.
func handOver(ctx context.Context, j *journal, call func(context.Context, Job) error, key string) error {
	for try := 0; ; try++ {
		err := call(ctx, Job{Key: key})
		if err == nil || errors.Is(err, retryhub.ErrReported) {
			return j.write(fmt.Sprintf("R %s %s\n", key, j.pid))
		}
		if ctx.Err() != nil {
			return nil
		}
		if try == 100 {
			return fmt.Errorf("call %s: still not reported after %d tries: %w", key, try+1, err)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil
		}
	}
}

// shutdown stops the client and prints its counters.
func shutdown(client *retryhub.Client, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := client.Shutdown(ctx); err != nil {
		log.Warn("clusterclient: shutdown", "err", err)
	}
	st := client.Stats()
	fmt.Printf("stats queued=%d delivered=%d merged=%d rejected=%d\n", st.Queued, st.Delivered, st.Merged, st.Rejected)
}
