package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// figures are the numbers the benchmarks of one run measured, by key; TestMain prints them as
// one table once every benchmark has run, each beside the limit measured in the same run.
var figures = struct {
	sync.Mutex
	m map[string]float64
}{m: map[string]float64{}}

// record keeps a figure for the table.
func record(key string, v float64) {
	figures.Lock()
	defer figures.Unlock()
	figures.m[key] = v
}

// figure returns a recorded figure.
func figure(key string) (float64, bool) {
	figures.Lock()
	defer figures.Unlock()
	v, ok := figures.m[key]
	return v, ok
}

func TestMain(m *testing.M) {
	code := m.Run()
	if rows := tableRows(); len(rows) > 0 {
		printTable(rows)
		if err := writeTable(rows); err != nil {
			fmt.Fprintln(os.Stderr, "bench table:", err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

// tableRow is one line of the table (and of its JSON).
type tableRow struct {
	// Key names the figure for programs: ingest.sdk.mysql, lag.p99.mysql.1000000, ….
	Key    string  `json:"key"`
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	// Limit is what the figure is measured against: a limit measured in the same run (raw
	// INSERT rate, loopback HTTP round trips) or, for lag, memory and storage, the target
	// itself. Zero when there is none.
	Limit     float64 `json:"limit,omitempty"`
	LimitName string  `json:"limit_name,omitempty"`
	// Ratio is Value / Limit; Target says which ratio is the goal and Met whether it holds.
	Ratio  float64 `json:"ratio,omitempty"`
	Target string  `json:"target,omitempty"`
	Met    *bool   `json:"met,omitempty"`
	// Peer is the peers' figure for the same measure, from RETRYHUB_BENCH_PEERS.
	Peer string `json:"peer,omitempty"`
}

// ratioRow makes a row measured against a limit: at least min of it (atLeast) or at most.
func ratioRow(name, valueKey, unit, limitName, limitKey string, goal float64, atLeast bool) (tableRow, bool) {
	v, ok := figure(valueKey)
	if !ok {
		return tableRow{}, false
	}
	r := tableRow{Key: valueKey, Figure: name, Value: v, Unit: unit}
	limit, ok := figure(limitKey)
	if limitKey == "" {
		limit, ok = goal, true
	}
	if ok && limit > 0 {
		r.Limit, r.LimitName, r.Ratio = limit, limitName, v/limit
		met := r.Ratio <= 1
		r.Target = "≤ 1.00"
		if limitKey != "" && goal == 0 {
			r.Target = ""
		} else if limitKey != "" {
			met = r.Ratio >= goal
			r.Target = fmt.Sprintf("≥ %.2f", goal)
			if !atLeast {
				met = r.Ratio <= goal
				r.Target = fmt.Sprintf("≤ %.2f", goal)
			}
		}
		if goal > 0 {
			r.Met = &met
		}
	}
	return r, true
}

// tableRows turns the figures into the table, the targets of the MariaDB figures first.
func tableRows() []tableRow {
	var rows []tableRow
	add := func(r tableRow, ok bool) {
		if ok {
			rows = append(rows, r)
		}
	}
	add(ratioRow("ingest, SDK batched reports (MariaDB)", "ingest.sdk.mysql", "rows/s", "raw INSERT beside it, same rows", "ingest.sdk.mysql.limit", 0.80, true))
	add(ratioRow("ingest, signed client API, 500/request (MariaDB)", "ingest.api.mysql", "rows/s", "raw INSERT beside it, same rows", "ingest.api.mysql.limit", 0.80, true))
	if r, ok := ratioRow("replay, SDK executor over loopback (MariaDB)", "replay.mysql", "attempts/s", "loopback HTTP beside it, 16 clients", "replay.mysql.limit", 0.50, true); ok {
		r.Peer = peerFigure("river", "retry path", "attempts", "attempts/s")
		add(r, true)
	}
	stages := lagStages("mysql")
	for _, n := range stages {
		add(ratioRow(fmt.Sprintf("due→dispatch lag p50, %s waiting (MariaDB)", count(n)), lagKey("p50", "mysql", n), "ms", "", "", 0, false))
		if r, ok := ratioRow(fmt.Sprintf("due→dispatch lag p99, %s waiting (MariaDB)", count(n)), lagKey("p99", "mysql", n), "ms", "target", "", 10, false); ok {
			if n == 1_000_000 {
				r.Peer = peerFigure("river", "schedule lag p99", "", "ms")
			}
			add(r, true)
		}
	}
	add(ratioRow("server RSS, peak (separate process, MariaDB)", "rss.peak", "MiB", "target", "", 64, false))
	add(ratioRow("server RSS at the end (separate process, MariaDB)", "rss.end", "MiB", "", "", 0, false))
	add(ratioRow("storage per waiting task, 200-byte arguments", "bytes_per_task", "B", "target", "", 720, false))
	add(ratioRow("raw multi-row INSERT, 500 rows × 4 conns (MariaDB)", "rawinsert.mysql", "rows/s", "", "", 0, false))
	add(ratioRow("loopback HTTP POST round trips, 16 clients", "http16", "req/s", "", "", 0, false))
	// SQLite, for reference.
	add(ratioRow("ingest, SDK batched reports (SQLite)", "ingest.sdk.sqlite", "rows/s", "", "", 0, false))
	add(ratioRow("ingest, signed client API (SQLite)", "ingest.api.sqlite", "rows/s", "", "", 0, false))
	add(ratioRow("replay, SDK executor over loopback (SQLite)", "replay.sqlite", "attempts/s", "loopback HTTP beside it, 16 clients", "replay.sqlite.limit", 0, true))
	for _, n := range lagStages("sqlite") {
		add(ratioRow(fmt.Sprintf("due→dispatch lag p50, %s waiting (SQLite)", count(n)), lagKey("p50", "sqlite", n), "ms", "", "", 0, false))
		add(ratioRow(fmt.Sprintf("due→dispatch lag p99, %s waiting (SQLite)", count(n)), lagKey("p99", "sqlite", n), "ms", "", "", 0, false))
	}
	return rows
}

// lagKey is the figure key of a lag percentile.
func lagKey(p, store string, backlog int) string {
	return "lag." + p + "." + store + "." + strconv.Itoa(backlog)
}

// lagStages are the backlog sizes a store's lag was measured at in this run, smallest first.
func lagStages(store string) []int {
	figures.Lock()
	defer figures.Unlock()
	var out []int
	prefix := "lag.p99." + store + "."
	for k := range figures.m {
		if n, err := strconv.Atoi(strings.TrimPrefix(k, prefix)); err == nil && strings.HasPrefix(k, prefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// count writes a task count short: 10k, 1M, 10M.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// printTable prints the table.
func printTable(rows []tableRow) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nretryhub bench, %s (limits measured in this run; targets are ratios to them)\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&sb, "%-52s %12s %-10s %-32s %12s %7s %-7s %-5s %s\n", "figure", "value", "unit", "limit", "limit value", "ratio", "target", "met", "peer (same window)")
	for _, r := range rows {
		limit, lv, ratio, met := "", "", "", ""
		if r.Limit > 0 {
			limit, lv, ratio = r.LimitName, num(r.Limit), fmt.Sprintf("%.2f", r.Ratio)
		}
		if r.Met != nil {
			met = "no"
			if *r.Met {
				met = "yes"
			}
		}
		fmt.Fprintf(&sb, "%-52s %12s %-10s %-32s %12s %7s %-7s %-5s %s\n", r.Figure, num(r.Value), r.Unit, limit, lv, ratio, r.Target, met, r.Peer)
	}
	fmt.Print(sb.String())
}

// num writes a figure with the precision it deserves.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// writeTable writes the table as JSON to RETRYHUB_BENCH_OUT, or bench-results.json at the
// repository's root.
func writeTable(rows []tableRow) error {
	path := os.Getenv("RETRYHUB_BENCH_OUT")
	if path == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		path = filepath.Join(root, "bench-results.json")
	}
	doc := struct {
		Finished time.Time  `json:"finished"`
		Peers    string     `json:"peers,omitempty"`
		Rows     []tableRow `json:"rows"`
	}{time.Now().UTC(), os.Getenv("RETRYHUB_BENCH_PEERS"), rows}
	raw, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the table: %w", err)
	}
	if err := os.WriteFile(path, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the table: %w", err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", path)
	return nil
}

// repoRoot is the nearest directory above the working directory holding go.work.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find the repository root: no go.work above the working directory")
		}
		dir = parent
	}
}

// peerFile is what the peers' programs write to out/<system>_run<N>.json.
type peerFile struct {
	System   string    `json:"system"`
	Run      int       `json:"run"`
	Finished time.Time `json:"finished"`
	Figures  []struct {
		Figure string  `json:"figure"`
		Value  float64 `json:"value"`
		Unit   string  `json:"unit"`
	} `json:"figures"`
}

// peerFigure finds, in the peers' results named by RETRYHUB_BENCH_PEERS (a directory of
// <system>_run<N>.json files, or one such file), the newest figure of system whose name holds
// both parts and whose unit is unit, preferring a tuned run; "" when there is none.
func peerFigure(system, part1, part2, unit string) string {
	where := os.Getenv("RETRYHUB_BENCH_PEERS")
	if where == "" {
		return ""
	}
	files := []string{where}
	if st, err := os.Stat(where); err == nil && st.IsDir() {
		files, _ = filepath.Glob(filepath.Join(where, "*.json"))
	}
	var best string
	var bestAt time.Time
	bestTuned := false
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pf peerFile
		if json.Unmarshal(raw, &pf) != nil || !strings.EqualFold(pf.System, system) {
			continue
		}
		for _, fg := range pf.Figures {
			if !strings.Contains(fg.Figure, part1) || !strings.Contains(fg.Figure, part2) || fg.Unit != unit {
				continue
			}
			tuned := strings.Contains(fg.Figure, "tuned")
			if best == "" || (tuned && !bestTuned) || (tuned == bestTuned && pf.Finished.After(bestAt)) {
				best = fmt.Sprintf("%s %s %s (%s)", system, num(fg.Value), fg.Unit, fg.Figure)
				bestAt, bestTuned = pf.Finished, tuned
			}
		}
	}
	return best
}
