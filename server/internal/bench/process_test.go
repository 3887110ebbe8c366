package bench

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// fillBacklog adds n waiting tasks of the bench's scene to rh_task, not due for a day to 30
// days, with argsBytes of arguments each, as multi-row INSERTs of 500 rows from 4 connections,
// printing its progress: the rows a report would store, without the report.
func fillBacklog(b *testing.B, db *sql.DB, w world, n int) {
	b.Helper()
	const cols = "group_id, scene_id, bucket, idem_key, active_key, args, state, local_attempts, next_at, " +
		"last_error, cb_error, created_at, updated_at"
	const row = "(?,?,?,?,?,?,?,3,?,'timeout','',?,?)"
	var done atomic.Int64
	stop := make(chan struct{})
	progressDone := make(chan struct{})
	began := time.Now()
	go func() {
		defer close(progressDone)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				fmt.Fprintf(os.Stderr, "loading the backlog: %d of %d rows (%.0f rows/s)\n", d, n, float64(d)/time.Since(began).Seconds())
			}
		}
	}()
	now := time.Now().UTC()
	first0 := backlogLoaded.Add(int64(n)) - int64(n)
	err := inBatches(first0, int64(n), func(first, last int64) error {
		var q strings.Builder
		q.WriteString("INSERT INTO rh_task (" + cols + ") VALUES ")
		args := make([]any, 0, (last-first)*10)
		for i := first; i < last; i++ {
			if i > first {
				q.WriteByte(',')
			}
			q.WriteString(row)
			key := "backlog-" + strconv.FormatInt(i, 10)
			due := now.Add(24*time.Hour + time.Duration(i%(29*24*3600))*time.Second)
			args = append(args, w.group.ID, w.scene.ID, retry.BucketOf(key, storagetest.Buckets), key, key,
				paddedArgs(due), int8(retry.Waiting), due, now, now)
		}
		if _, err := db.Exec(q.String(), args...); err != nil {
			return fmt.Errorf("insert the backlog: %w", err)
		}
		done.Add(last - first)
		return nil
	})
	close(stop)
	<-progressDone
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "loaded %d backlog rows in %s (%.0f rows/s)\n", n, time.Since(began).Round(time.Second),
		float64(n)/time.Since(began).Seconds())
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
