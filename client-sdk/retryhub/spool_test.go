package retryhub

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

func TestSpoolSurvivesARestart(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.down = true })
	dir := t.TempDir()
	cfg := testConfig(fs.URL())
	cfg.SpoolDir = dir

	// First life: the server is down; every report goes to the spool.
	c1, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f1 := RetryableOn(c1, "spooled", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	if err := c1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := range n {
		if err := f1(context.Background(), i); !errors.Is(err, ErrReported) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := c1.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a spool must keep what it cannot deliver, not fail: %v", err)
	}
	if got := fs.committedCount(); got != 0 {
		t.Fatalf("%d reports committed while the server was down", got)
	}

	// Second life on the same directory: the server is back; the spool is re-sent.
	fs.set(func(fs *fakeServer) { fs.down = false })
	c2 := startClient(t, cfg, func(c *Client) {
		RetryableOn(c, "spooled", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	})
	eventually(t, "the spool re-sent", func() bool { return c2.Stats().Queued == 0 })
	fs.get(func(fs *fakeServer) {
		if len(fs.committed) != n {
			t.Fatalf("%d keys committed after the restart, want %d", len(fs.committed), n)
		}
		for k, times := range fs.committed {
			if times != 1 {
				t.Errorf("key %q committed %d times", k, times)
			}
		}
	})
	// Fully delivered: the journal is back to its header.
	hdr, _ := encodeRecord(journalRecord{V: spoolFormat})
	eventually(t, "the journal compacted", func() bool { return c2.spool.fileSize() == int64(len(hdr)) })
}

func TestSpoolIsHeldByOneClient(t *testing.T) {
	fs := newFakeServer(t, "secret")
	cfg := testConfig(fs.URL())
	cfg.SpoolDir = t.TempDir()
	startClient(t, cfg, nil)
	c2, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c2.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second client on the same spool started: %v", err)
	}
	// Another group in the same directory has a journal of its own.
	cfg.Group = "other"
	startClient(t, cfg, nil)
}

func TestSpoolReadsBackWhatItWrote(t *testing.T) {
	dir := t.TempDir()
	log := testConfig().Logger
	sp, items, err := openSpool(dir, "ns", "g/1", log)
	if err != nil || len(items) != 0 {
		t.Fatalf("fresh spool: %v, %d items", err, len(items))
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if err := sp.add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: []byte(`{"n":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.done([]uint64{2, 4}); err != nil {
		t.Fatal(err)
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "reports-ns.g%2F1.journal")
	// A crash mid-write leaves a torn last line.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`1234abcd {"seq":9,"item":{"sce`)
	f.Close()

	sp, items, err = openSpool(dir, "ns", "g/1", log)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	var seqs []uint64
	for _, it := range items {
		seqs = append(seqs, it.seq)
		if string(it.item.Args) != `{"n":1}` {
			t.Errorf("item %d args %s", it.seq, it.item.Args)
		}
	}
	if len(seqs) != 3 || seqs[0] != 1 || seqs[1] != 3 || seqs[2] != 5 {
		t.Fatalf("read back %v, want [1 3 5]", seqs)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "sce\n") || strings.Count(string(b), "\n") != 4 {
		t.Fatalf("the reopened journal is not compacted to header + 3 records:\n%s", b)
	}
}

func TestSpoolSkipsDamagedRecordsLoudly(t *testing.T) {
	dir := t.TempDir()
	var logs logBuffer
	sp, _, err := openSpool(dir, "ns", "g", logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		sp.add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: []byte(`1`)})
	}
	sp.close()
	path := filepath.Join(dir, "reports-ns.g.journal")
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	lines[2] = strings.Replace(lines[2], `"k"`, `"K"`, 1) // record of seq 2, bit rot
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600)

	sp, items, err := openSpool(dir, "ns", "g", logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if len(items) != 2 || items[0].seq != 1 || items[1].seq != 3 {
		t.Fatalf("read back %+v, want seqs 1 and 3", items)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "checksum mismatch") {
		t.Fatalf("the damaged record was not logged:\n%s", logs.String())
	}
}

func TestSpoolCompactsWhileBusy(t *testing.T) {
	dir := t.TempDir()
	sp, _, err := openSpool(dir, "ns", "g", testConfig().Logger)
	if err != nil {
		t.Fatal(err)
	}
	sp.compactAt = 2000
	args := []byte(`"` + strings.Repeat("a", 100) + `"`)
	// Keep one report live throughout, so the journal never empties on its own.
	sp.add(1, protocol.ReportItem{Scene: "s", IdempotencyKey: "live", Args: args})
	var peak int64
	for seq := uint64(2); seq < 200; seq++ {
		if err := sp.add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: args}); err != nil {
			t.Fatal(err)
		}
		if err := sp.done([]uint64{seq}); err != nil {
			t.Fatal(err)
		}
		peak = max(peak, sp.fileSize())
	}
	if peak > 8000 {
		t.Fatalf("the journal grew to %d bytes; compaction should keep it near 3×2000", peak)
	}
	sp.close()
	sp2, items, err := openSpool(dir, "ns", "g", testConfig().Logger)
	if err != nil {
		t.Fatal(err)
	}
	defer sp2.close()
	if len(items) != 1 || items[0].seq != 1 || items[0].item.IdempotencyKey != "live" {
		t.Fatalf("after compactions read back %+v, want the one live report", items)
	}
}

func TestSpoolRefusesANewerFormat(t *testing.T) {
	dir := t.TempDir()
	line, _ := encodeRecord(journalRecord{V: spoolFormat + 1})
	os.WriteFile(filepath.Join(dir, "reports-ns.g.journal"), line, 0o600)
	if _, _, err := openSpool(dir, "ns", "g", testConfig().Logger); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a journal of a newer format was opened: %v", err)
	}
}
