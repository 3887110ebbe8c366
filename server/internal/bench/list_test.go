package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/crypto/bcrypt"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// listTasks is the size of the table BenchmarkConsoleLists reads: RETRYHUB_BENCH_LIST_TASKS,
// a million by default.
func listTasks() int {
	if n, err := strconv.Atoi(os.Getenv("RETRYHUB_BENCH_LIST_TASKS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// listCalls is how many times each list is read; the first call before them is not timed.
const listCalls = 20

// BenchmarkConsoleLists fills a MariaDB database with listTasks() tasks over 30 days (3
// namespaces, 10 groups, 50 scenes, every state), then reads every list the console serves
// through the console API over HTTP, logged in with a token, and prints per list the p50 and
// p99 of listCalls calls and the rows the server read per call. The rows read come from the
// server's global handler counters: other clients of the same server add to them.
func BenchmarkConsoleLists(b *testing.B) {
	target := storagetest.MySQL(b)
	store := storagetest.Open(b, target)
	dsn, err := config.ParseDSN(target.DSN)
	if err != nil {
		b.Fatal(err)
	}
	db, err := sql.Open("mysql", dsn.MySQL.FormatDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	cat := makeCatalog(b, store)
	n := listTasks()
	filled := fillTasks(b, db, cat, n)
	fillConsole(b, store, db, cat)
	if _, err := db.ExecContext(ctx, "ANALYZE TABLE rh_task, rh_attempt, rh_audit, rh_summary_minute"); err != nil {
		b.Fatal(err)
	}
	base, bearer := consoleServer(b, store)
	shapes := listShapes(b, base, bearer, cat, n, filled)

	b.ResetTimer()
	for range b.N {
		fmt.Fprintf(os.Stderr, "\nconsole lists over %d tasks, %d calls each (rows: handler reads per call, server-wide)\n", n, listCalls)
		fmt.Fprintf(os.Stderr, "%-44s %9s %9s %10s %12s\n", "list", "p50 ms", "p99 ms", "rows", "items")
		var worst float64
		for _, sh := range shapes {
			p50, p99, rows, items := sh.measure(b, base, bearer, db)
			flag := ""
			if p99 > 100 {
				flag = "  over 100 ms"
			}
			fmt.Fprintf(os.Stderr, "%-44s %9.1f %9.1f %10d %12s%s\n", sh.name, p50, p99, rows, items, flag)
			worst = max(worst, p99)
		}
		b.ReportMetric(worst, "worst-p99-ms")
	}
}

// catalog is what the tasks belong to.
type catalog struct {
	namespaces []retry.Namespace
	groups     []retry.Group
	scenes     []retry.Scene
}

// makeCatalog makes 3 namespaces holding 5, 3 and 2 groups, each group with 5 scenes.
func makeCatalog(b *testing.B, s *storage.Store) catalog {
	b.Helper()
	ctx := context.Background()
	var c catalog
	for i, groups := range []int{5, 3, 2} {
		ns, err := s.CreateNamespace(ctx, retry.Namespace{Name: fmt.Sprintf("ns-%d", i), Enabled: true})
		if err != nil {
			b.Fatal(err)
		}
		c.namespaces = append(c.namespaces, ns)
		for g := range groups {
			grp, err := s.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: fmt.Sprintf("group-%d-%d", i, g),
				Token: token, Enabled: true})
			if err != nil {
				b.Fatal(err)
			}
			c.groups = append(c.groups, grp)
			for sc := range 5 {
				scene, err := s.CreateScene(ctx, retry.DefaultScene(grp.ID, fmt.Sprintf("scene-%d", sc)))
				if err != nil {
					b.Fatal(err)
				}
				c.scenes = append(c.scenes, scene)
			}
		}
	}
	return c
}

// listErrors are the last errors tasks carry: a few common ones, some with a varying part.
var listErrors = []string{
	"dial tcp 10.0.3.12:9092: i/o timeout",
	"kafka: client has run out of available brokers to talk to",
	"partner answered 503 Service Unavailable",
	"partner answered 429 Too Many Requests: retry after 30s",
	"context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
	"smtp: 451 4.7.1 temporarily rejected, try again later",
	"order %d not found in the ledger",
	"redis: connection pool timeout",
	"x509: certificate has expired or is not yet valid",
}

// taskState picks a state for a task created age ago: recent tasks are still being retried,
// old ones have mostly ended.
func taskState(r *rand.Rand, age time.Duration) retry.State {
	p := r.IntN(1000)
	if age < 48*time.Hour {
		switch {
		case p < 300:
			return retry.Waiting
		case p < 320:
			return retry.Running
		case p < 340:
			return retry.Held
		case p < 360:
			return retry.Paused
		case p < 800:
			return retry.Succeeded
		case p < 950:
			return retry.Exhausted
		default:
			return retry.Cancelled
		}
	}
	switch {
	case p < 20:
		return retry.Waiting // a long back-off
	case p < 30:
		return retry.Paused
	case p < 35:
		return retry.Held
	case p < 860:
		return retry.Succeeded
	case p < 960:
		return retry.Exhausted
	default:
		return retry.Cancelled
	}
}

// fillTasks inserts n tasks straight into rh_task, 500 rows per INSERT from 4 connections,
// created evenly over the 30 days before now (ids in creation order), on the scenes with some
// busier than others, printing its progress. It returns the time the 30 days end: task i was
// created i/n of them after their start.
func fillTasks(b *testing.B, db *sql.DB, c catalog, n int) time.Time {
	b.Helper()
	const cols = "group_id, scene_id, bucket, idem_key, active_key, args, state, attempts, local_attempts, next_at, " +
		"claim_token, run_deadline, claimed_by, last_error, cb_error, created_at, updated_at, ended_at"
	const row = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,'',?,?,?)"
	now := time.Now().UTC()
	start := now.Add(-30 * 24 * time.Hour)
	span := now.Sub(start)
	// Scene weights: scene i gets weight 1 + i%7, so some scenes hold several times the tasks
	// of others.
	var weights []int
	for i := range c.scenes {
		for range 1 + i%7 {
			weights = append(weights, i)
		}
	}
	var done atomic.Int64
	stop := make(chan struct{})
	began := time.Now()
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				fmt.Fprintf(os.Stderr, "filling rh_task: %d of %d rows (%.0f rows/s)\n", d, n, float64(d)/time.Since(began).Seconds())
			}
		}
	}()
	err := inBatches(0, int64(n), func(first, last int64) error {
		r := rand.New(rand.NewPCG(uint64(first), 7))
		var q strings.Builder
		q.WriteString("INSERT INTO rh_task (" + cols + ") VALUES ")
		args := make([]any, 0, (last-first)*17)
		for i := first; i < last; i++ {
			if i > first {
				q.WriteByte(',')
			}
			q.WriteString(row)
			created := start.Add(time.Duration(float64(span) * float64(i) / float64(n)))
			sc := c.scenes[weights[r.IntN(len(weights))]]
			st := taskState(r, now.Sub(created))
			key := "order-" + strconv.FormatInt(i, 10)
			var active any
			if st == retry.Waiting || st == retry.Running || st == retry.Held || st == retry.Paused {
				active = key
			}
			argsDoc := fmt.Sprintf(`{"orderId":"%d","customer":"c-%d","amount":%d,"currency":"EUR","items":[{"sku":"SKU-%d","qty":%d}]}`,
				i, r.IntN(50000), 100+r.IntN(100000), r.IntN(5000), 1+r.IntN(4))
			msg := listErrors[r.IntN(len(listErrors))]
			if strings.Contains(msg, "%d") {
				msg = fmt.Sprintf(msg, i)
			}
			if i%1000 == 1 { // the rare text the benchmark searches for
				msg = fmt.Sprintf("duplicate payment reference PAY-%d", i)
			}
			attempts, next := 1+r.IntN(5), created.Add(time.Duration(1+r.IntN(120))*time.Minute)
			var token int64
			var runDeadline, ended any
			claimedBy := "node-a"
			switch st {
			case retry.Waiting, retry.Held, retry.Paused:
				next = now.Add(time.Duration(r.IntN(4*3600)-3600) * time.Second)
				if st == retry.Waiting && r.IntN(10) == 0 {
					next = now.Add(time.Duration(r.IntN(7*24)) * time.Hour)
				}
			case retry.Running:
				token = 1 + r.Int64N(1<<40)
				next = now.Add(-time.Duration(r.IntN(60)) * time.Second)
				runDeadline = now.Add(time.Minute)
			default:
				ended = next
			}
			updated := next
			if updated.After(now) {
				updated = created
			}
			args = append(args, sc.GroupID, sc.ID, retry.BucketOf(key, storagetest.Buckets), key, active, argsDoc, int8(st),
				attempts, 3, next, token, runDeadline, claimedBy, msg, created, updated, ended)
		}
		if _, err := db.Exec(q.String(), args...); err != nil {
			return err
		}
		done.Add(last - first)
		return nil
	})
	close(stop)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "filled rh_task with %d rows in %s (%.0f rows/s)\n", n, time.Since(began).Round(time.Second),
		float64(n)/time.Since(began).Seconds())
	return now
}

// fillConsole adds what the other console lists read: instances and nodes, 20,000 audit
// entries, a day of per-minute summaries for every scene, and attempts for one task.
func fillConsole(b *testing.B, s *storage.Store, db *sql.DB, c catalog) {
	b.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	for i := range 40 {
		g := c.groups[i%len(c.groups)]
		if err := s.UpsertInstance(ctx, retry.Instance{ID: fmt.Sprintf("inst-%02d", i), GroupID: g.ID,
			ExecutorURL: fmt.Sprintf("http://10.0.1.%d:8080/retryhub", i), Capacity: 64, SDKVersion: "v1.0.0",
			Host: fmt.Sprintf("host-%d", i), StartedAt: now}, now.Add(-time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 3 {
		if err := s.HeartbeatNode(ctx, retry.Node{ID: fmt.Sprintf("node-%d", i), Address: fmt.Sprintf("10.0.0.%d:8080", i),
			Version: "bench", StartedAt: now}); err != nil {
			b.Fatal(err)
		}
	}
	insert := func(head, row string, rows int, vals func(i int) []any) {
		for first := 0; first < rows; first += 500 {
			var q strings.Builder
			q.WriteString(head)
			var args []any
			for i := first; i < min(first+500, rows); i++ {
				if i > first {
					q.WriteByte(',')
				}
				q.WriteString(row)
				args = append(args, vals(i)...)
			}
			if _, err := db.ExecContext(ctx, q.String(), args...); err != nil {
				b.Fatal(err)
			}
		}
	}
	insert("INSERT INTO rh_audit (at, actor, actor_kind, action, target, namespace_id, detail, outcome, status, remote) VALUES ",
		"(?,?,'user',?,?,?,'',?,200,'127.0.0.1')", 20000, func(i int) []any {
			return []any{now.Add(-time.Duration(20000-i) * time.Minute), fmt.Sprintf("user-%d", i%20),
				[]string{"tasks-act", "scenes-update", "auth-login"}[i%3], fmt.Sprintf("task %d", i),
				c.namespaces[i%3].ID, "ok"}
		})
	minute := now.Truncate(time.Minute)
	insert("INSERT INTO rh_summary_minute (minute, scene_id, reported, replayed, succeeded, failed, exhausted) VALUES ",
		"(?,?,?,?,?,?,?)", 1440*len(c.scenes), func(i int) []any {
			return []any{minute.Add(-time.Duration(i/len(c.scenes)) * time.Minute), c.scenes[i%len(c.scenes)].ID, 30, 40, 25, 15, 1}
		})
	insert("INSERT INTO rh_attempt (task_id, kind, number, node_id, instance_id, started_at, duration_ms, outcome, error) VALUES ",
		"(?,1,?,'node-0','inst-00',?,12,2,'partner answered 503 Service Unavailable')", 8, func(i int) []any {
			return []any{detailTask, i + 1, now.Add(-time.Duration(8-i) * time.Minute)}
		})
}

// detailTask is the task whose detail page is read.
const detailTask = 12345

// consoleServer serves the console API over HTTP on the store and returns its URL and the
// Authorization header of a global admin logged in with a password.
func consoleServer(b *testing.B, s *storage.Store) (string, string) {
	b.Helper()
	ctx := context.Background()
	svc, err := auth.New(ctx, auth.Params{Store: s, TokenTTL: time.Hour, BcryptCost: bcrypt.MinCost, Log: testkit.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	hash, err := svc.HashPassword("bench-password")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, storage.User{Username: "bench", PasswordHash: hash,
		Grants: []storage.Grant{{NamespaceID: storage.AllNamespaces, Role: "admin"}}}); err != nil {
		b.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	engine := gin.New()
	consoleapi.New(consoleapi.Params{Store: s, Auth: svc, Version: "bench", Log: testkit.Logger(b)}).Mount(engine)
	srv := httptest.NewServer(engine)
	b.Cleanup(srv.Close)
	var session struct {
		Token string `json:"token"`
	}
	status, err := call(srv.URL+consoleapi.Prefix+"/auth/login", "", `{"username":"bench","password":"bench-password"}`, &session)
	if err != nil || status != http.StatusOK || session.Token == "" {
		b.Fatalf("login: %d %v", status, err)
	}
	return srv.URL, "Bearer " + session.Token
}

// call sends a request (a POST when body is not empty) and decodes the JSON answer into out.
func call(u, bearer, body string, out any) (int, error) {
	method, r := http.MethodGet, io.Reader(nil)
	if body != "" {
		method, r = http.MethodPost, strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		return 0, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s answered %d: %s", u, resp.StatusCode, raw)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(raw, out)
	}
	return resp.StatusCode, nil
}

// listShape is one list the console reads.
type listShape struct {
	name string
	path string // below the console prefix, with its query
}

// listShapes are the lists measured; the paged ones get their cursors from a first read. The
// tasks were created over the 30 days before filled: task n/2 at mid.
func listShapes(b *testing.B, base, bearer string, c catalog, n int, filled time.Time) []listShape {
	b.Helper()
	ns, grp, sc := c.namespaces[0], c.groups[1], c.scenes[13]
	mid := filled.Add(-15 * 24 * time.Hour).Truncate(time.Millisecond)
	q := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return "/tasks?" + v.Encode()
	}
	id := func(x int64) string { return strconv.FormatInt(x, 10) }
	next := func(path string) string {
		var page struct {
			NextCursor string `json:"next_cursor"`
		}
		if _, err := call(base+consoleapi.Prefix+path, bearer, "", &page); err != nil {
			b.Fatal(err)
		}
		if page.NextCursor == "" {
			b.Fatalf("%s has a single page", path)
		}
		return path + "&cursor=" + url.QueryEscape(page.NextCursor)
	}
	deep := storage.TaskCursor{ID: int64(n / 3)}.String()
	shapes := []listShape{
		{"tasks, newest first", q("limit", "50")},
		{"tasks, second page", next(q("limit", "50"))},
		{"tasks, deep page (cursor at a third)", q("limit", "50", "cursor", deep)},
		{"tasks of a namespace", q("namespace", ns.Name)},
		{"tasks of a group", q("group_id", id(grp.ID))},
		{"tasks of a scene", q("scene_id", id(sc.ID))},
		{"tasks of a scene, second page", next(q("scene_id", id(sc.ID)))},
		{"tasks of a scene in a state (paused)", q("scene_id", id(sc.ID), "state", "paused")},
		{"tasks in a state (waiting)", q("state", "waiting")},
		{"tasks in a state (held)", q("state", "held")},
		{"dead letters (exhausted)", q("state", "exhausted")},
		{"dead letters of a group", q("group_id", id(grp.ID), "state", "exhausted")},
		{"tasks by key", q("key", "order-"+id(int64(n/2)))},
		{"tasks created in an hour, 15 days ago", q("created_from", mid.Format(time.RFC3339), "created_to", mid.Add(time.Hour).Format(time.RFC3339))},
		{"tasks created in a day, 15 days ago", q("created_from", mid.Format(time.RFC3339), "created_to", mid.Add(24*time.Hour).Format(time.RFC3339))},
		{"tasks by error text (common)", q("error", "run out of available brokers")},
		{"tasks by error text (a rare one)", q("error", "PAY-"+id(int64(n/2+1)))},
		{"tasks by error text, of a scene", q("scene_id", id(sc.ID), "error", "certificate has expired")},
		{"tasks by argument (args.orderId)", q("arg", "args.orderId="+id(int64(n/2+3)))},
		{"tasks by argument, of a scene", q("scene_id", id(sc.ID), "arg", "currency=USD")},
		{"tasks by error text, created in a day", q("error", "PAY-"+id(int64(n/2+1)), "created_from", mid.Format(time.RFC3339),
			"created_to", mid.Add(24*time.Hour).Format(time.RFC3339))},
		{"tasks by argument, created in an hour", q("arg", "orderId="+id(int64(n/2+3)), "created_from", mid.Format(time.RFC3339),
			"created_to", mid.Add(time.Hour).Format(time.RFC3339))},
		{"tasks by due time", q("order", "due")},
		{"tasks by due time, second page", next(q("order", "due"))},
		{"tasks of a scene by due time", q("order", "due", "scene_id", id(sc.ID))},
		{"tasks of a group by due time", q("order", "due", "group_id", id(grp.ID))},
		{"count: a scene in a state (exhausted)", "/tasks/count?scene_id=" + id(sc.ID) + "&state=exhausted"},
		{"task detail", "/tasks/" + id(detailTask)},
		{"instances", "/instances"},
		{"nodes", "/nodes"},
		{"audit log", "/audit"},
		{"groups of a namespace", "/namespaces/" + id(ns.ID) + "/groups"},
		{"scenes of a group", "/groups/" + id(grp.ID) + "/scenes"},
		{"dashboard (last hour)", "/dashboard"},
		{"dashboard (a day, per minute)", "/dashboard?from=" + url.QueryEscape(time.Now().Add(-24*time.Hour).UTC().Format(time.RFC3339))},
	}
	return shapes
}

// measure reads the list listCalls times after one untimed call and returns the p50 and p99 in
// ms, the rows the server read per call and the items of the answer (marked when partial).
func (sh listShape) measure(b *testing.B, base, bearer string, db *sql.DB) (float64, float64, int64, string) {
	b.Helper()
	var page struct {
		Items   []struct{} `json:"items"`
		Partial bool       `json:"partial"`
	}
	u := base + consoleapi.Prefix + sh.path
	if _, err := call(u, bearer, "", &page); err != nil {
		b.Fatalf("%s: %v", sh.name, err)
	}
	before := handlerReads(b, db)
	var ms []float64
	for range listCalls {
		start := time.Now()
		if _, err := call(u, bearer, "", nil); err != nil {
			b.Fatalf("%s: %v", sh.name, err)
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
	}
	rows := (handlerReads(b, db) - before) / listCalls
	slices.Sort(ms)
	items := strconv.Itoa(len(page.Items))
	if page.Partial {
		items += " partial"
	}
	return ms[len(ms)/2], ms[(len(ms)*99+99)/100-1], rows, items
}

// handlerReads is the server's count of rows read through its handlers (every table, every
// client).
func handlerReads(b *testing.B, db *sql.DB) int64 {
	b.Helper()
	rows, err := db.Query("SHOW GLOBAL STATUS LIKE 'Handler_read%'")
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var sum int64
	for rows.Next() {
		var name, v string
		if err := rows.Scan(&name, &v); err != nil {
			b.Fatal(err)
		}
		if x, err := strconv.ParseInt(v, 10, 64); err == nil {
			sum += x
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return sum
}
