package bench

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// serverProcess is a retryhub server built from this tree and run as a process of its own, so
// that its memory is measured apart from the bench's load generators.
type serverProcess struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
}

// startServer builds ./server/cmd/retryhub-server and runs it on target's database with the
// default configuration (a new user's), listening on loopback; it stops when the benchmark
// ends.
func startServer(b *testing.B, target storagetest.Target) *serverProcess {
	b.Helper()
	gobin := os.Getenv("GO")
	if gobin == "" {
		gobin = "go"
	}
	bin := filepath.Join(b.TempDir(), "retryhub-server")
	build := exec.Command(gobin, "build", "-o", bin, "github.com/retryhub/retryhub/server/cmd/retryhub-server")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the server: %v\n%s", err, out)
	}
	addr := testkit.FreeAddr(b)
	p := &serverProcess{url: "http://" + addr, logs: &bytes.Buffer{}}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"RETRYHUB_DATABASE_DSN=" + target.DSN, "RETRYHUB_SERVER_LISTEN=" + addr,
		"RETRYHUB_SCHEDULER_BUCKETS=" + strconv.Itoa(storagetest.Buckets), "RETRYHUB_LOG_LEVEL=warn"}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	// Killed with the bench, should the bench be killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("start the server: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	b.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(45 * time.Second):
			_ = p.cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-exited:
			b.Fatalf("the server exited: %v\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("the server did not answer /healthz within 60 s\n%s", p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memory returns the server's resident set now and at its peak, in MiB (from /proc).
func (p *serverProcess) memory(b *testing.B) (now, peak float64) {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Logf("read the server's memory: %v", err)
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			now = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return now, peak
}

// argsBytes is the size of the backlog tasks' arguments.
const argsBytes = 200

// paddedArgs returns arguments of exactly argsBytes bytes carrying a due time.
func paddedArgs(due time.Time) string {
	head := fmt.Sprintf(`{"due":%d,"pad":"`, due.UnixMilli())
	return head + strings.Repeat("x", argsBytes-len(head)-2) + `"}`
}

// backlogLoaded counts the backlog rows loaded, for their keys.
var backlogLoaded atomic.Int64

// backlogChunk is the rows of one backlog INSERT … SELECT.
const backlogChunk = 50_000

// fillBacklog adds n waiting tasks of the bench's scene to rh_task, due in a day to 30 days,
// with argsBytes of arguments each: the rows a report would store, without the report. MariaDB
// makes them itself (INSERT … SELECT from its SEQUENCE engine, backlogChunk rows a statement
// from 4 connections), so that 10M rows load in minutes; it prints its progress. Their buckets
// are spread evenly rather than hashed from their keys: none of them falls due in the run.
func fillBacklog(b *testing.B, db *sql.DB, w world, n int) {
	b.Helper()
	if n <= 0 {
		return
	}
	const spread = 29 * 24 * 3600 // seconds the due times spread over
	q := fmt.Sprintf("INSERT INTO rh_task (group_id, scene_id, bucket, idem_key, active_key, args, state, local_attempts, "+
		"next_at, last_error, cb_error, created_at, updated_at) "+
		"SELECT ?, ?, MOD(seq, %d), CONCAT('backlog-', seq), CONCAT('backlog-', seq), "+
		"CONCAT(RPAD(CONCAT('{\"due\":', ? + MOD(seq, %d) * 1000, ',\"pad\":\"'), %d, 'x'), '\"}'), %d, 3, "+
		"DATE_ADD(?, INTERVAL MOD(seq, %d) SECOND), 'timeout', '', ?, ? FROM ",
		storagetest.Buckets, spread, argsBytes-2, int8(retry.Waiting), spread)
	now := time.Now().UTC().Truncate(time.Millisecond)
	base := now.Add(24 * time.Hour)
	var done atomic.Int64
	began := time.Now()
	last := began
	var mu sync.Mutex
	first0 := backlogLoaded.Add(int64(n)) - int64(n)
	err := inChunks(first0, int64(n), backlogChunk, func(first, end int64) error {
		if _, err := db.Exec(q+fmt.Sprintf("seq_%d_to_%d", first+1, end), w.group.ID, w.scene.ID, base.UnixMilli(), base, now, now); err != nil {
			return fmt.Errorf("insert the backlog: %w", err)
		}
		d := done.Add(end - first)
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "loading the backlog: %d of %d rows (%.0f rows/s)\n", d, n, float64(d)/time.Since(began).Seconds())
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "loaded %d backlog rows in %s (%.0f rows/s)\n", n, time.Since(began).Round(time.Second),
		float64(n)/time.Since(began).Seconds())
}

// settleInnoDB waits (at most settleWait) until MariaDB has written most of what a load left
// in its buffer pool (dirty pages under a tenth of the pool), so that the lag is measured
// beside a backlog that has been there a while, as in production, not beside the flush of one
// loaded a second ago. The pool is shared with whatever else uses the server.
func settleInnoDB(b *testing.B, db *sql.DB) {
	b.Helper()
	began := time.Now()
	for {
		dirty, total := innoDBStatus(b, db, "Innodb_buffer_pool_pages_dirty"), innoDBStatus(b, db, "Innodb_buffer_pool_pages_total")
		if total == 0 || dirty*10 < total {
			fmt.Fprintf(os.Stderr, "MariaDB's buffer pool settled in %s (%d of %d pages dirty)\n", time.Since(began).Round(time.Second), dirty, total)
			return
		}
		if time.Since(began) > settleWait {
			fmt.Fprintf(os.Stderr, "MariaDB's buffer pool still has %d of %d pages dirty after %s; measuring anyway\n", dirty, total, settleWait)
			return
		}
		time.Sleep(time.Second)
	}
}

// settleWait bounds settleInnoDB.
const settleWait = 3 * time.Minute

// innoDBStatus reads one of MariaDB's global status counters.
func innoDBStatus(b *testing.B, db *sql.DB, name string) int64 {
	b.Helper()
	var k, v string
	if err := db.QueryRow("SHOW GLOBAL STATUS LIKE '"+name+"'").Scan(&k, &v); err != nil {
		b.Fatalf("read %s: %v", name, err)
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// inChunks is inBatches with chunks of size rows: send gets [first, end).
func inChunks(from, n, size int64, send func(first, end int64) error) error {
	var (
		seq  atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	seq.Store(from)
	for range ingestSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				first := seq.Add(size) - size
				if first >= from+n {
					return
				}
				if err := send(first, min(first+size, from+n)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// mysqlDB opens target's database straight through database/sql, closed when the benchmark ends.
func mysqlDB(b *testing.B, target storagetest.Target) *sql.DB {
	b.Helper()
	dsn, err := config.ParseDSN(target.DSN)
	if err != nil {
		b.Fatal(err)
	}
	if dsn.Driver != config.MySQL {
		b.Fatalf("%s is not a MySQL database", target.Name)
	}
	db, err := sql.Open("mysql", dsn.MySQL.FormatDSN())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// bytesPerTask is rh_task's data and index length over its rows, after ANALYZE TABLE.
func bytesPerTask(b *testing.B, db *sql.DB) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := db.ExecContext(ctx, "ANALYZE TABLE rh_task"); err != nil {
		b.Fatalf("analyze rh_task: %v", err)
	}
	var size, rows int64
	if err := db.QueryRowContext(ctx, "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "+
		"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rh_task'").Scan(&size); err != nil {
		b.Fatalf("rh_task's size: %v", err)
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM rh_task").Scan(&rows); err != nil {
		b.Fatalf("count rh_task: %v", err)
	}
	if rows == 0 {
		return 0
	}
	fmt.Fprintf(os.Stderr, "rh_task: %d bytes (data and indexes) over %d rows\n", size, rows)
	return float64(size) / float64(rows)
}
