package cluster

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

const (
	tasks         = 20000
	rate          = 250 // calls a second: about 80 s of calls
	cutLength     = 20 * time.Second
	scene         = "cluster-job"
	groupToken    = "cluster-run-token-0123456789abcdef"
	adminPassword = "cluster-run-admin"
)

// The whole run, with its faults, in order:
//
//  1. three servers on defaults (leases, node TTL, claim timeout) start on a fresh database that
//     they reach through the proxy; the client starts calling at `rate`;
//  2. after 3,000 calls, node-2 is killed with SIGKILL: node-1 and node-3 must hold all 128
//     buckets within the documented bound;
//  3. then the proxy cuts every database connection and refuses new ones for 20 s;
//  4. once the survivors answer again, the client is killed with SIGKILL and restarted at once
//     on the same spool and execution log;
//  5. the client's calls end, the replays drain; every key must have a succeeded task, every
//     task must have succeeded, and the console's counts must agree with the database.
func TestClusterSurvivesKillsAndADatabaseCut(t *testing.T) {
	if os.Getenv("RETRYHUB_TEST_CLUSTER") != "1" {
		t.Skip("the cluster fault run takes minutes: `make test-cluster` runs it (RETRYHUB_TEST_CLUSTER=1)")
	}
	dir := t.TempDir()
	if keep := os.Getenv("RETRYHUB_TEST_CLUSTER_LOGS"); keep != "" {
		// The processes' logs, spool and execution log are kept in a new directory under it,
		// for a look afterwards.
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if dir, err = os.MkdirTemp(keep, "run-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("cluster: the processes' logs, spool and execution log are kept in %s", dir)
	}
	built := time.Now()
	serverBin, clientBin := build(t, dir)
	t.Logf("cluster: built the server and the client in %s", time.Since(built).Round(time.Second))
	begin := time.Now()

	target := storagetest.MySQL(t) // dropped when the test ends, after everything below stopped
	mc, err := mysql.ParseDSN(strings.TrimPrefix(target.DSN, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := testkit.NewProxy(t, mc.Addr)
	viaProxy := *mc
	viaProxy.Addr = proxy.Addr()
	mc.ParseTime = true
	db, err := sql.Open("mysql", mc.FormatDSN()) // the test's own view, never cut
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	defaults := config.Default().Scheduler
	// The bound the README states for a killed node's buckets to move.
	bound := max(defaults.NodeTTL, defaults.LeaseDuration) + defaults.HeartbeatInterval

	r := &run{t: t, dir: dir, db: db, proxy: proxy}
	names := []string{"node-1", "node-2", "node-3"}
	for i, name := range names {
		addr := testkit.FreeAddr(t)
		n := r.startServer(serverBin, name, addr, "mysql://"+viaProxy.FormatDSN())
		r.nodes = append(r.nodes, n)
		if i == 0 {
			// The first node makes the schema, the bootstrap group and the admin alone.
			r.waitHealthy(n, 2*time.Minute)
		}
	}
	for _, n := range r.nodes {
		r.waitHealthy(n, 2*time.Minute)
	}
	r.waitSplit(r.nodes, time.Minute)
	r.login(r.nodes[0])
	t.Logf("cluster: 3 nodes hold their shares of 128 buckets after %s", time.Since(begin).Round(time.Millisecond))

	clientAddr := testkit.FreeAddr(t)
	spool := filepath.Join(dir, "spool")
	execLog := filepath.Join(dir, "executions.log")
	var urls []string
	for _, n := range r.nodes {
		urls = append(urls, "http://"+n.addr)
	}
	clientArgs := []string{"-servers", strings.Join(urls, ","), "-listen", clientAddr, "-spool", spool,
		"-log", execLog, "-tasks", strconv.Itoa(tasks), "-rate", strconv.Itoa(rate)}
	client := r.start("client-1", clientBin, clientArgs, []string{"RETRYHUB_TOKEN=" + groupToken})
	callsFrom := time.Now()

	// 2. Kill node-2 once the calls are well under way.
	r.waitProgress(client, 3000, 3*time.Minute)
	victim, survivors := r.nodes[1], []*node{r.nodes[0], r.nodes[2]}
	killedAt := time.Now()
	victim.kill9(t)
	var orphaned int
	if err := db.QueryRow("SELECT COUNT(*) FROM rh_task WHERE state = ? AND claimed_by = ?", retry.Running, victim.id).Scan(&orphaned); err != nil {
		t.Fatal(err)
	}
	r.waitSplit(survivors, bound+time.Minute) // fails here only past a minute more; the bound is checked below
	moved := time.Since(killedAt)
	t.Logf("cluster: node-2 killed (SIGKILL) at %d calls with %d tasks claimed; node-1 and node-3 hold all 128 buckets %s later (documented bound %s)",
		client.lastProgress(), orphaned, moved.Round(time.Millisecond), bound)
	// A lease pass itself takes time on a loaded machine: allow one more heartbeat interval.
	if moved > bound+defaults.HeartbeatInterval {
		t.Errorf("node-2's buckets moved to the survivors %s after its kill, past the documented %s (and one heartbeat interval more)", moved, bound)
	}

	// 3. Cut the servers off the database.
	proxy.Down()
	cutAt := time.Now()
	r.waitDatabaseDown(survivors, 30*time.Second)
	t.Logf("cluster: database cut at %d calls; the survivors' /healthz answer 503 after %s",
		client.lastProgress(), time.Since(cutAt).Round(time.Millisecond))

	// 4. Halfway through the cut, kill the client, whose spool holds what the cut held back,
	// and restart it at once on the same spool and execution log.
	r.pause(client, cutAt.Add(cutLength/2))
	progressAtKill := client.lastProgress()
	client.kill9(t)
	client = r.start("client-2", clientBin, clientArgs, []string{"RETRYHUB_TOKEN=" + groupToken})
	r.waitLine(client, "ready", time.Minute)
	resent := client.grep(regexp.MustCompile(`re-sending reports found in the spool.* count=(\d+)`))
	t.Logf("cluster: client killed (SIGKILL) at %d calls, %s into the cut; restarted on its spool, it re-sends %s spooled reports",
		progressAtKill, cutLength/2, orNone(resent))
	if resent == "" {
		t.Errorf("the restarted client found no report in its spool, though the database was cut when it was killed")
	}

	r.pause(client, cutAt.Add(cutLength))
	proxy.Up()
	upAt := time.Now()
	for _, n := range survivors {
		r.waitHealthy(n, time.Minute)
	}
	t.Logf("cluster: database back after %s; the survivors answer again %s later",
		upAt.Sub(cutAt).Round(time.Millisecond), time.Since(upAt).Round(time.Millisecond))
	r.waitSplit(survivors, time.Minute)
	t.Logf("cluster: node-1 and node-3 split all 128 buckets again %s after the database came back",
		time.Since(upAt).Round(time.Millisecond))

	// 5. The calls end, and the replays drain.
	r.waitLine(client, "generated ", 4*time.Minute)
	t.Logf("cluster: all %d calls handed to the SDK %s after the first", tasks, time.Since(callsFrom).Round(time.Second))
	sceneID := r.sceneID()
	drainFrom := time.Now()
	r.waitDrained(sceneID, 5*time.Minute)
	t.Logf("cluster: every task ended %s after the last call", time.Since(drainFrom).Round(time.Second))
	r.logLastEnded(sceneID, 3)

	// Stop everything gracefully, then read what happened.
	client.stop(t, 30*time.Second)
	stats := client.grep(regexp.MustCompile(`stats (queued=\d+ delivered=\d+ merged=\d+ rejected=\d+)`))
	if m := regexp.MustCompile(`queued=(\d+) .* rejected=(\d+)`).FindStringSubmatch(stats); m == nil || m[1] != "0" || m[2] != "0" {
		t.Errorf("the client's last counters: %q; want nothing queued and nothing rejected", stats)
	}
	dash := r.dashboard(sceneID)
	for _, n := range survivors {
		n.stop(t, 45*time.Second)
	}

	r.checkTasks(sceneID, dash)
	r.checkExecutions(execLog)
	t.Logf("cluster: client counters at its graceful stop: %s; the whole run took %s", stats, time.Since(begin).Round(time.Second))
}

// build compiles the server and the client into dir.
func build(t *testing.T, dir string) (server, client string) {
	t.Helper()
	server, client = filepath.Join(dir, "retryhub-server"), filepath.Join(dir, "clusterclient")
	for bin, pkg := range map[string]string{
		server: "github.com/retryhub/retryhub/server/cmd/retryhub-server",
		client: "github.com/retryhub/retryhub/server/internal/cluster/clusterclient",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return server, client
}

// run is the test's handle on the processes and the database.
type run struct {
	t     *testing.T
	dir   string
	db    *sql.DB
	proxy *testkit.Proxy
	nodes []*node
	token string
}

// node is one server process.
type node struct {
	*proc
	id   string
	addr string
}

// proc is a process the test started, killed when the test ends if it still runs.
type proc struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{}
	stdout string
	stderr string
}

// start starts bin with args, the environment without any RETRYHUB_ variable plus env, and its
// output in files under the run's directory.
func (r *run) start(name, bin string, args, env []string) *proc {
	r.t.Helper()
	p := &proc{name: name, done: make(chan struct{}),
		stdout: filepath.Join(r.dir, name+".out"), stderr: filepath.Join(r.dir, name+".err")}
	stdout, err := os.Create(p.stdout)
	if err != nil {
		r.t.Fatal(err)
	}
	stderr, err := os.Create(p.stderr)
	if err != nil {
		r.t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.EnvPrefix) {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	if err := p.cmd.Start(); err != nil {
		r.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		stdout.Close()
		stderr.Close()
		close(p.done)
	}()
	r.t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
		if r.t.Failed() {
			r.t.Logf("--- last lines of %s (pid %d):\n%s", name, p.cmd.Process.Pid, p.tail(30))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill9 kills the process with SIGKILL and waits for it to be gone.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still runs 30 s after SIGKILL", p.name)
	}
}

// stop asks the process to stop with SIGTERM, and kills it past timeout.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		t.Fatalf("stop %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, timeout)
	}
}

// tail is the last n lines of the process's standard error and output.
func (p *proc) tail(n int) string {
	var b strings.Builder
	for _, f := range []string{p.stderr, p.stdout} {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "[%s]\n%s\n", filepath.Base(f), strings.Join(lines, "\n"))
	}
	return b.String()
}

// grep returns the first submatch of re in the process's standard output or error, or "".
func (p *proc) grep(re *regexp.Regexp) string {
	for _, f := range []string{p.stdout, p.stderr} {
		data, _ := os.ReadFile(f)
		if m := re.FindSubmatch(data); m != nil {
			return string(m[len(m)-1])
		}
	}
	return ""
}

// lastProgress is the client's last "progress N" line.
func (p *proc) lastProgress() int {
	data, _ := os.ReadFile(p.stdout)
	ms := regexp.MustCompile(`(?m)^(?:progress|generated) (\d+)$`).FindAllSubmatch(data, -1)
	if len(ms) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(string(ms[len(ms)-1][1]))
	return n
}

func (r *run) startServer(bin, id, addr, dsn string) *node {
	env := []string{
		"RETRYHUB_SERVER_LISTEN=" + addr,
		"RETRYHUB_SERVER_NODE_ID=" + id,
		"RETRYHUB_SERVER_SHUTDOWN_TIMEOUT=10s",
		"RETRYHUB_DATABASE_DSN=" + dsn,
		"RETRYHUB_BOOTSTRAP_GROUP_TOKEN=" + groupToken,
		"RETRYHUB_BOOTSTRAP_ADMIN_PASSWORD=" + adminPassword,
		"RETRYHUB_AUTH_BCRYPT_COST=10",
	}
	return &node{proc: r.start(id, bin, nil, env), id: id, addr: addr}
}

// poll calls cond every interval until it holds, failing after timeout with what and the
// description cond gave last; it fails at once when one of the processes that must run exited.
func (r *run) poll(interval, timeout time.Duration, what string, must []*proc, cond func() (bool, string)) time.Duration {
	r.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, desc := cond()
		if ok {
			return time.Since(start)
		}
		for _, p := range must {
			if p.exited() {
				r.t.Fatalf("%s exited while waiting for %s (%s):\n%s", p.name, what, desc, p.tail(40))
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, desc)
		}
		time.Sleep(interval)
	}
}

// health is a node's /healthz answer.
type health struct {
	Status      string `json:"status"`
	NodeID      string `json:"node_id"`
	Database    string `json:"database"`
	BucketsHeld int    `json:"buckets_held"`
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func (n *node) health() (int, health, error) {
	resp, err := httpClient.Get("http://" + n.addr + "/healthz")
	if err != nil {
		return 0, health{}, err
	}
	defer resp.Body.Close()
	var h health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return resp.StatusCode, h, fmt.Errorf("decode /healthz: %w", err)
	}
	return resp.StatusCode, h, nil
}

func (r *run) waitHealthy(n *node, timeout time.Duration) {
	r.t.Helper()
	r.poll(100*time.Millisecond, timeout, n.id+" to answer /healthz 200", []*proc{n.proc}, func() (bool, string) {
		status, h, err := n.health()
		return status == http.StatusOK, fmt.Sprintf("status %d %+v %v", status, h, err)
	})
}

func (r *run) waitDatabaseDown(nodes []*node, timeout time.Duration) {
	r.t.Helper()
	for _, n := range nodes {
		r.poll(100*time.Millisecond, timeout, n.id+" to see the database gone", []*proc{n.proc}, func() (bool, string) {
			status, h, err := n.health()
			return status == http.StatusServiceUnavailable, fmt.Sprintf("status %d %+v %v", status, h, err)
		})
	}
}

// waitSplit waits until the nodes, and only they, hold all the buckets between them, each a
// share, as both their /healthz (what each claims in) and the console's node list (the leases
// in the database) say; it returns how long that took.
func (r *run) waitSplit(nodes []*node, timeout time.Duration) time.Duration {
	r.t.Helper()
	var must []*proc
	ids := map[string]bool{}
	for _, n := range nodes {
		must = append(must, n.proc)
		ids[n.id] = true
	}
	return r.poll(100*time.Millisecond, timeout, fmt.Sprintf("%d nodes to split the buckets", len(nodes)), must, func() (bool, string) {
		var held []string
		total := 0
		for _, n := range nodes {
			status, h, err := n.health()
			if status != http.StatusOK || h.BucketsHeld == 0 {
				return false, fmt.Sprintf("%s: status %d %+v %v", n.id, status, h, err)
			}
			total += h.BucketsHeld
			held = append(held, fmt.Sprintf("%s %d", n.id, h.BucketsHeld))
		}
		if total != config.Default().Scheduler.Buckets {
			return false, "/healthz: " + strings.Join(held, ", ")
		}
		if r.token == "" {
			return true, ""
		}
		list, err := r.nodesAPI(nodes[0])
		if err != nil {
			return false, err.Error()
		}
		owner := map[int]string{}
		for _, n := range list {
			for _, b := range n.Buckets {
				if other, dup := owner[b]; dup {
					return false, fmt.Sprintf("bucket %d listed for %s and %s", b, other, n.ID)
				}
				owner[b] = n.ID
				if !ids[n.ID] {
					return false, fmt.Sprintf("bucket %d still leased to %s", b, n.ID)
				}
			}
		}
		if len(owner) != config.Default().Scheduler.Buckets {
			return false, fmt.Sprintf("the console lists %d leased buckets", len(owner))
		}
		return true, ""
	})
}

// pause lets the fault under way last until end, failing at once if p exits meanwhile.
func (r *run) pause(p *proc, end time.Time) {
	r.t.Helper()
	select {
	case <-time.After(time.Until(end)): // the fault's length, not a wait for a condition
	case <-p.done:
		r.t.Fatalf("%s exited during the fault:\n%s", p.name, p.tail(40))
	}
}

// waitProgress waits until the client has handed over n calls.
func (r *run) waitProgress(p *proc, n int, timeout time.Duration) {
	r.t.Helper()
	r.poll(200*time.Millisecond, timeout, fmt.Sprintf("the client to make %d calls", n), []*proc{p}, func() (bool, string) {
		got := p.lastProgress()
		return got >= n, fmt.Sprintf("%d calls", got)
	})
}

// waitLine waits until the process's standard output has a line starting with prefix.
func (r *run) waitLine(p *proc, prefix string, timeout time.Duration) {
	r.t.Helper()
	r.poll(200*time.Millisecond, timeout, fmt.Sprintf("%s to print %q", p.name, prefix), []*proc{p}, func() (bool, string) {
		data, _ := os.ReadFile(p.stdout)
		for line := range strings.Lines(string(data)) {
			if strings.HasPrefix(line, prefix) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d calls so far", p.lastProgress())
	})
}

// console calls the console API on n with the session.
func (r *run) console(n *node, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.addr+"/api/v1/console/"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode: %w", method, path, err)
	}
	return nil
}

func (r *run) login(n *node) {
	r.t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	if err := r.console(n, http.MethodPost, "auth/login", map[string]string{"username": "admin", "password": adminPassword}, &out); err != nil {
		r.t.Fatalf("login: %v", err)
	}
	r.token = out.Token
}

// serverNode is an item of the console's node list.
type serverNode struct {
	ID      string `json:"id"`
	Live    bool   `json:"live"`
	Buckets []int  `json:"buckets"`
}

func (r *run) nodesAPI(n *node) ([]serverNode, error) {
	var out struct {
		Items []serverNode `json:"items"`
	}
	err := r.console(n, http.MethodGet, "nodes", nil, &out)
	return out.Items, err
}

// dashboardView is what the test reads of the console's dashboard.
type dashboardView struct {
	Series []struct {
		SceneID int64 `json:"scene_id"`
		Totals  struct {
			Reported  int64 `json:"reported"`
			Merged    int64 `json:"merged"`
			Replayed  int64 `json:"replayed"`
			Succeeded int64 `json:"succeeded"`
			Failed    int64 `json:"failed"`
			Exhausted int64 `json:"exhausted"`
		} `json:"totals"`
	} `json:"series"`
	SceneStates []struct {
		SceneID int64            `json:"scene_id"`
		States  map[string]int64 `json:"states"`
	} `json:"scene_states"`
}

// dashboard reads the scene's figures from a survivor's console, over the last hour.
func (r *run) dashboard(sceneID int64) dashboardView {
	r.t.Helper()
	var d dashboardView
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if err := r.console(r.nodes[0], http.MethodGet, fmt.Sprintf("dashboard?scene_id=%d&from=%s", sceneID, from), nil, &d); err != nil {
		r.t.Fatalf("dashboard: %v", err)
	}
	return d
}

func (r *run) sceneID() int64 {
	r.t.Helper()
	var id int64
	if err := r.db.QueryRow("SELECT id FROM rh_scene WHERE name = ?", scene).Scan(&id); err != nil {
		r.t.Fatalf("the scene %s: %v", scene, err)
	}
	return id
}

// waitDrained waits until no task of the scene is active and every key has a succeeded task.
func (r *run) waitDrained(sceneID int64, timeout time.Duration) {
	r.t.Helper()
	r.poll(time.Second, timeout, "every task to end", []*proc{r.nodes[0].proc, r.nodes[2].proc}, func() (bool, string) {
		var active, keys int
		err := r.db.QueryRow("SELECT COUNT(*) FROM rh_task WHERE scene_id = ? AND state IN (?, ?, ?, ?)",
			sceneID, retry.Waiting, retry.Running, retry.Held, retry.Paused).Scan(&active)
		if err == nil {
			err = r.db.QueryRow("SELECT COUNT(DISTINCT idem_key) FROM rh_task WHERE scene_id = ? AND state = ?",
				sceneID, retry.Succeeded).Scan(&keys)
		}
		if err != nil {
			return false, err.Error()
		}
		return active == 0 && keys >= tasks, fmt.Sprintf("%d tasks active, %d keys succeeded", active, keys)
	})
}

// logLastEnded prints the n tasks that ended last, with their attempts: what held the run up.
func (r *run) logLastEnded(sceneID int64, n int) {
	t := r.t
	t.Helper()
	rows, err := r.db.Query("SELECT id, idem_key, created_at, ended_at FROM rh_task WHERE scene_id = ? ORDER BY ended_at DESC LIMIT ?", sceneID, n)
	if err != nil {
		t.Fatal(err)
	}
	type ended struct {
		id             int64
		key            string
		created, ended time.Time
	}
	var last []ended
	for rows.Next() {
		var e ended
		if err := rows.Scan(&e.id, &e.key, &e.created, &e.ended); err != nil {
			t.Fatal(err)
		}
		last = append(last, e)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	for _, e := range last {
		var b strings.Builder
		arows, err := r.db.Query("SELECT number, node_id, instance_id, started_at, outcome, LEFT(error, 80) FROM rh_attempt WHERE task_id = ? ORDER BY id", e.id)
		if err != nil {
			t.Fatal(err)
		}
		for arows.Next() {
			var (
				number          int
				node, inst, msg string
				started         time.Time
				outcome         retry.Outcome
			)
			if err := arows.Scan(&number, &node, &inst, &started, &outcome, &msg); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "\n      #%d %s on %s/%s at %s %s", number, outcome, node, inst, started.Format("15:04:05.000"), msg)
		}
		if err := errors.Join(arows.Err(), arows.Close()); err != nil {
			t.Fatal(err)
		}
		t.Logf("cluster: a task that ended last: %s, reported %s, ended %s:%s", e.key,
			e.created.Format("15:04:05.000"), e.ended.Format("15:04:05.000"), b.String())
	}
}

// checkTasks checks that every key has a task, that every task succeeded, and that the console
// counts what the database holds; it prints the attempts by outcome.
func (r *run) checkTasks(sceneID int64, dash dashboardView) {
	t := r.t
	t.Helper()
	rows, err := r.db.Query("SELECT idem_key, state, attempts, merges FROM rh_task WHERE scene_id = ?", sceneID)
	if err != nil {
		t.Fatal(err)
	}
	perKey := map[string]int{}
	states := map[retry.State]int64{}
	var merges, maxAttempts, nTasks int64
	for rows.Next() {
		var (
			key              string
			state            retry.State
			attempts, merged int64
		)
		if err := rows.Scan(&key, &state, &attempts, &merged); err != nil {
			t.Fatal(err)
		}
		perKey[key]++
		states[state]++
		merges += merged
		maxAttempts = max(maxAttempts, attempts)
		nTasks++
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	var missing []string
	for i := range tasks {
		if perKey[keyOf(i)] == 0 {
			missing = append(missing, keyOf(i))
		}
	}
	duplicateTasks := 0
	for k, n := range perKey {
		if !strings.HasPrefix(k, "job-") {
			t.Errorf("a task of an unknown key %q", k)
		}
		duplicateTasks += n - 1
	}
	t.Logf("cluster: %d tasks for %d keys (%d keys with more than one task), states %v, %d reports merged, at most %d replays per task",
		nTasks, len(perKey), duplicateTasks, stateNames(states), merges, maxAttempts)
	if len(missing) > 0 {
		t.Errorf("%d keys have no task (lost): %v", len(missing), first(missing, 20))
	}
	if states[retry.Succeeded] != nTasks {
		t.Errorf("every task should have succeeded: %v", stateNames(states))
	}

	// Attempts by outcome, and the errors of the failed ones that were not the function's.
	type outcomeCount struct {
		outcome retry.Outcome
		n       int64
	}
	var outcomes []outcomeCount
	var replays int64
	orows, err := r.db.Query("SELECT a.outcome, COUNT(*) FROM rh_attempt a JOIN rh_task t ON t.id = a.task_id "+
		"WHERE t.scene_id = ? AND a.kind = ? GROUP BY a.outcome ORDER BY a.outcome", sceneID, retry.KindReplay)
	if err != nil {
		t.Fatal(err)
	}
	for orows.Next() {
		var oc outcomeCount
		if err := orows.Scan(&oc.outcome, &oc.n); err != nil {
			t.Fatal(err)
		}
		outcomes = append(outcomes, oc)
		replays += oc.n
	}
	if err := errors.Join(orows.Err(), orows.Close()); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, oc := range outcomes {
		fmt.Fprintf(&b, " %s %d", oc.outcome, oc.n)
	}
	t.Logf("cluster: %d replay attempts recorded:%s", replays, b.String())
	erows, err := r.db.Query("SELECT LEFT(a.error, 60), COUNT(*) FROM rh_attempt a JOIN rh_task t ON t.id = a.task_id "+
		"WHERE t.scene_id = ? AND a.kind = ? AND a.outcome <> ? AND a.error NOT LIKE ? GROUP BY LEFT(a.error, 60) ORDER BY 2 DESC LIMIT 10",
		sceneID, retry.KindReplay, retry.OutcomeSucceeded, "%"+"downstream unavailable"+"%")
	if err != nil {
		t.Fatal(err)
	}
	for erows.Next() {
		var msg string
		var n int64
		if err := erows.Scan(&msg, &n); err != nil {
			t.Fatal(err)
		}
		t.Logf("cluster:   %6d attempts failed without running the function's failure: %s", n, msg)
		// The restarted client has a new instance id at the old one's address: calls sent to
		// the old id are refused unrun, and must not use attempts.
		if strings.Contains(msg, "wrong_instance") {
			t.Errorf("%d replay attempts were used up by calls the restarted client refused unrun: %s", n, msg)
		}
	}
	if err := errors.Join(erows.Err(), erows.Close()); err != nil {
		t.Fatal(err)
	}

	// How late the first replays ran: their due time is a second after the failure the report
	// carried, which the task's creation time records.
	lrows, err := r.db.Query("SELECT t.created_at, a.started_at FROM rh_task t JOIN rh_attempt a ON a.task_id = t.id "+
		"WHERE t.scene_id = ? AND a.kind = ? AND a.number = 1", sceneID, retry.KindReplay)
	if err != nil {
		t.Fatal(err)
	}
	var lags []time.Duration
	for lrows.Next() {
		var created, started time.Time
		if err := lrows.Scan(&created, &started); err != nil {
			t.Fatal(err)
		}
		lags = append(lags, started.Sub(created.Add(time.Second)))
	}
	if err := errors.Join(lrows.Err(), lrows.Close()); err != nil {
		t.Fatal(err)
	}
	if len(lags) > 0 {
		slices.Sort(lags)
		at := func(q float64) time.Duration { return lags[int(q*float64(len(lags)-1))].Round(time.Millisecond) }
		t.Logf("cluster: first replays ran after their due time by p50 %s, p99 %s, max %s (the backlog the cut and the kills left)",
			at(0.5), at(0.99), at(1))
	}

	// The console's counts: the tasks by state exactly, and the attempts from the summaries.
	var sceneStates map[string]int64
	for _, s := range dash.SceneStates {
		if s.SceneID == sceneID {
			sceneStates = s.States
		}
	}
	for _, st := range retry.States() {
		if sceneStates[st.String()] != states[st] {
			t.Errorf("the console's tasks by state %v differ from the database's %v", sceneStates, stateNames(states))
			break
		}
	}
	for _, s := range dash.Series {
		if s.SceneID != sceneID {
			continue
		}
		tot := s.Totals
		t.Logf("cluster: the console's summaries: reported %d, merged %d, replayed %d, succeeded %d, failed %d, exhausted %d",
			tot.Reported, tot.Merged, tot.Replayed, tot.Succeeded, tot.Failed, tot.Exhausted)
		if tot.Replayed != replays || tot.Exhausted != 0 || tot.Merged != merges || tot.Reported != nTasks+merges {
			t.Errorf("the console's summaries disagree with the database: %d replays, %d tasks, %d merges recorded", replays, nTasks, merges)
		}
	}
}

// checkExecutions reads the execution log and checks that every key ran to a success; it
// prints the executions and the duplicates (at least once is the promise).
func (r *run) checkExecutions(path string) {
	t := r.t
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type keyRuns struct{ runs, ok int }
	per := map[string]*keyRuns{}
	pids := map[string]bool{}
	var executions, handed int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 5 && fields[0] == "E":
			k := per[fields[1]]
			if k == nil {
				k = &keyRuns{}
				per[fields[1]] = k
			}
			k.runs++
			if fields[3] == "ok" {
				k.ok++
			}
			pids[fields[4]] = true
			executions++
		case len(fields) == 3 && fields[0] == "R":
			handed++
		default:
			t.Errorf("execution log: malformed line %q", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var never []string
	var extraRuns, dupSuccesses, keysWithDup, maxRuns int
	for i := range tasks {
		k := per[keyOf(i)]
		if k == nil || k.ok == 0 {
			never = append(never, keyOf(i))
			continue
		}
		extraRuns += k.runs - 3
		if k.ok > 1 {
			dupSuccesses += k.ok - 1
			keysWithDup++
		}
		maxRuns = max(maxRuns, k.runs)
	}
	t.Logf("cluster: %d executions by %d processes for %d keys (%d calls handed over): %d beyond the 3 each key needs; "+
		"%d duplicate successful executions on %d keys; at most %d executions of one key",
		executions, len(pids), len(per), handed, extraRuns, dupSuccesses, keysWithDup, maxRuns)
	if len(never) > 0 {
		t.Errorf("%d keys never ran to a success: %v", len(never), first(never, 20))
	}
}

func keyOf(i int) string { return fmt.Sprintf("job-%05d", i) }

func stateNames(m map[retry.State]int64) string {
	var parts []string
	for _, st := range retry.States() {
		if m[st] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, m[st]))
		}
	}
	return strings.Join(parts, ", ")
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func orNone(s string) string {
	if s == "" {
		return "no"
	}
	return s
}
