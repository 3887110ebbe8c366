package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The peers' results are read from their out/ directory: the tuned retry path is preferred,
// and another system's figures are never taken.
func TestPeerFigureReadsThePeersResults(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"river_run1.json": `{"system":"river","run":1,"finished":"2026-12-02T10:00:00Z","figures":[
			{"figure":"retry path 20k jobs x3 attempts: attempts","value":7000,"unit":"attempts/s"},
			{"figure":"retry path 20k jobs x3 attempts: attempts [tuned]","value":8300,"unit":"attempts/s"},
			{"figure":"schedule lag p99 (1M backlog)","value":3600,"unit":"ms"}]}`,
		"asynq_run1.json": `{"system":"asynq","run":1,"finished":"2026-12-02T11:00:00Z","figures":[
			{"figure":"retry path: attempts","value":99999,"unit":"attempts/s"}]}`,
		"notes.json": `not json`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("RETRYHUB_BENCH_PEERS", dir)
	if got := peerFigure("river", "retry path", "attempts", "attempts/s"); !strings.HasPrefix(got, "river 8300 attempts/s") {
		t.Fatalf("River's retry path: %q", got)
	}
	if got := peerFigure("river", "schedule lag p99", "", "ms"); !strings.HasPrefix(got, "river 3600 ms") {
		t.Fatalf("River's lag: %q", got)
	}
	if got := peerFigure("river", "no such figure", "", "ms"); got != "" {
		t.Fatalf("a missing figure: %q", got)
	}
	t.Setenv("RETRYHUB_BENCH_PEERS", "")
	if got := peerFigure("river", "retry path", "attempts", "attempts/s"); got != "" {
		t.Fatalf("without RETRYHUB_BENCH_PEERS: %q", got)
	}
}

// A ratio row says whether the target is met, against a limit measured in the run or against
// the target itself.
func TestRatioRows(t *testing.T) {
	record("t.value", 40)
	record("t.limit", 100)
	r, ok := ratioRow("x", "t.value", "rows/s", "limit", "t.limit", 0.5, true)
	if !ok || r.Ratio != 0.4 || r.Met == nil || *r.Met {
		t.Fatalf("40 of 100 against ≥ 0.5: %+v", r)
	}
	r, ok = ratioRow("x", "t.value", "ms", "target", "", 64, false)
	if !ok || r.Limit != 64 || r.Met == nil || !*r.Met {
		t.Fatalf("40 against at most 64: %+v", r)
	}
	if _, ok := ratioRow("x", "t.missing", "ms", "", "", 0, false); ok {
		t.Fatal("a row for a figure never measured")
	}
}
