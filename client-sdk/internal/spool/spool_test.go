package spool

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.DiscardHandler)

// logBuffer collects log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustOpen(t *testing.T, dir, ns, group string, log *slog.Logger) (*Spool, []Item) {
	t.Helper()
	sp, items, err := Open(dir, ns, group, log)
	if err != nil {
		t.Fatal(err)
	}
	return sp, items
}

func mustClose(t *testing.T, sp *Spool) {
	t.Helper()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
}

func seqsOf(items []Item) []uint64 {
	out := make([]uint64, len(items))
	for i, it := range items {
		out[i] = it.Seq
	}
	return out
}

func TestReadsBackWhatItWrote(t *testing.T) {
	dir := t.TempDir()
	sp, items := mustOpen(t, dir, "ns", "g/1", discard)
	if len(items) != 0 {
		t.Fatalf("a fresh spool holds %d items", len(items))
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if err := sp.Add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: []byte(`{"n":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Done([]uint64{2, 4}); err != nil {
		t.Fatal(err)
	}
	mustClose(t, sp)
	path := filepath.Join(dir, "reports-ns.g%2F1.journal")
	if sp.Path() != path {
		t.Fatalf("journal at %s, want %s", sp.Path(), path)
	}
	// A crash mid-write leaves a torn last line.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`1234abcd {"seq":9,"item":{"sce`); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	sp, items = mustOpen(t, dir, "ns", "g/1", discard)
	defer mustClose(t, sp)
	if got := fmt.Sprint(seqsOf(items)); got != "[1 3 5]" {
		t.Fatalf("read back %s, want [1 3 5]", got)
	}
	for _, it := range items {
		if string(it.Report.Args) != `{"n":1}` {
			t.Errorf("item %d args %s", it.Seq, it.Report.Args)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "sce\n") || strings.Count(string(b), "\n") != 4 {
		t.Fatalf("the reopened journal is not compacted to header + 3 records:\n%s", b)
	}
}

// A report read back after a restart is the report as it was written, its failure time
// included: the server schedules it from when the call failed, not from when it is re-sent.
func TestKeepsEveryFieldOfAReport(t *testing.T) {
	dir := t.TempDir()
	sp, _ := mustOpen(t, dir, "ns", "g", discard)
	want := protocol.ReportItem{Scene: "send-email", IdempotencyKey: "order-7", Args: []byte(`{"to":"a@example.com"}`),
		Error: "smtp: 451 try later", LocalAttempts: 3, FailedAt: 1_780_000_000_123}
	if err := sp.Add(1, want); err != nil {
		t.Fatal(err)
	}
	mustClose(t, sp)
	sp, items := mustOpen(t, dir, "ns", "g", discard)
	defer mustClose(t, sp)
	if len(items) != 1 {
		t.Fatalf("read back %d items, want 1", len(items))
	}
	got := items[0].Report
	if got.Scene != want.Scene || got.IdempotencyKey != want.IdempotencyKey || string(got.Args) != string(want.Args) ||
		got.Error != want.Error || got.LocalAttempts != want.LocalAttempts || got.FailedAt != want.FailedAt {
		t.Fatalf("read back %+v, want %+v", got, want)
	}
}

func TestIsHeldByOneSpool(t *testing.T) {
	dir := t.TempDir()
	sp, _ := mustOpen(t, dir, "ns", "g", discard)
	defer mustClose(t, sp)
	if _, _, err := Open(dir, "ns", "g", discard); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second spool on the same journal opened: %v", err)
	}
	// Another group in the same directory has a journal of its own.
	other, _ := mustOpen(t, dir, "ns", "other", discard)
	mustClose(t, other)
}

func TestWritesAfterCloseFail(t *testing.T) {
	sp, _ := mustOpen(t, t.TempDir(), "ns", "g", discard)
	mustClose(t, sp)
	if err := sp.Add(1, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: []byte(`1`)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
	if err := sp.Done([]uint64{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Done after Close: %v, want ErrClosed", err)
	}
}

// Concurrent writers share fsyncs; each still finds its report in the journal.
func TestConcurrentAddsAreAllKept(t *testing.T) {
	dir := t.TempDir()
	sp, _ := mustOpen(t, dir, "ns", "g", discard)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			seq := uint64(i + 1)
			if err := sp.Add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: fmt.Sprint(seq), Args: []byte(`1`)}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := sp.Done([]uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	mustClose(t, sp)
	sp, items := mustOpen(t, dir, "ns", "g", discard)
	defer mustClose(t, sp)
	if len(items) != n-3 {
		t.Fatalf("read back %d items, want %d", len(items), n-3)
	}
	for _, it := range items {
		if it.Seq <= 3 || it.Report.IdempotencyKey != fmt.Sprint(it.Seq) {
			t.Fatalf("read back %+v", it)
		}
	}
}

func TestSkipsDamagedRecordsLoudly(t *testing.T) {
	dir := t.TempDir()
	var logs logBuffer
	sp, _ := mustOpen(t, dir, "ns", "g", logs.logger())
	for seq := uint64(1); seq <= 3; seq++ {
		if err := sp.Add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: []byte(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, sp)
	path := filepath.Join(dir, "reports-ns.g.journal")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines[2] = strings.Replace(lines[2], `"k"`, `"K"`, 1) // the record of seq 2, bit rot
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}

	sp, items := mustOpen(t, dir, "ns", "g", logs.logger())
	defer mustClose(t, sp)
	if got := fmt.Sprint(seqsOf(items)); got != "[1 3]" {
		t.Fatalf("read back %s, want [1 3]", got)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "checksum mismatch") {
		t.Fatalf("the damaged record was not logged:\n%s", logs.String())
	}
}

func TestCompactsWhileBusy(t *testing.T) {
	dir := t.TempDir()
	sp, _ := mustOpen(t, dir, "ns", "g", discard)
	sp.compactAt = 2000
	args := []byte(`"` + strings.Repeat("a", 100) + `"`)
	// Keep one report live throughout, so the journal never empties on its own.
	if err := sp.Add(1, protocol.ReportItem{Scene: "s", IdempotencyKey: "live", Args: args}); err != nil {
		t.Fatal(err)
	}
	var peak int64
	for seq := uint64(2); seq < 200; seq++ {
		if err := sp.Add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: args}); err != nil {
			t.Fatal(err)
		}
		if err := sp.Done([]uint64{seq}); err != nil {
			t.Fatal(err)
		}
		peak = max(peak, sp.fileSize())
	}
	if peak > 8000 {
		t.Fatalf("the journal grew to %d bytes; compaction should keep it near 3×2000", peak)
	}
	mustClose(t, sp)
	sp2, items := mustOpen(t, dir, "ns", "g", discard)
	defer mustClose(t, sp2)
	if len(items) != 1 || items[0].Seq != 1 || items[0].Report.IdempotencyKey != "live" {
		t.Fatalf("after compactions read back %+v, want the one live report", items)
	}
}

// When every report is settled the journal goes back to its header alone.
func TestEmptiesWhenAllIsSettled(t *testing.T) {
	sp, _ := mustOpen(t, t.TempDir(), "ns", "g", discard)
	defer mustClose(t, sp)
	for seq := uint64(1); seq <= 3; seq++ {
		if err := sp.Add(seq, protocol.ReportItem{Scene: "s", IdempotencyKey: "k", Args: []byte(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Done([]uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	hdr, err := encodeRecord(journalRecord{V: format})
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.fileSize(); got != int64(len(hdr)) {
		t.Fatalf("the settled journal has %d bytes, want the %d of its header", got, len(hdr))
	}
}

func TestRefusesANewerFormat(t *testing.T) {
	dir := t.TempDir()
	line, err := encodeRecord(journalRecord{V: format + 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "reports-ns.g.journal"), line, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(dir, "ns", "g", discard); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a journal of a newer format was opened: %v", err)
	}
}

// Names whose escaped form would make too long a file name still get a journal of their own,
// which keeps its reports across a reopen (before, Open failed with "file name too long").
func TestLongNamesGetAJournalOfTheirOwn(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("ключ", 40) // 320 bytes, 960 escaped
	for _, group := range []string{long + "a", long + "b"} {
		sp, _ := mustOpen(t, dir, "ns", group, discard)
		if n := len(filepath.Base(sp.Path())) + len(".tmp"); n > 255 {
			t.Fatalf("journal name of %d bytes with its rewrite's suffix", n)
		}
		if err := sp.Add(1, protocol.ReportItem{Scene: "s", IdempotencyKey: group, Args: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		mustClose(t, sp)
	}
	for _, group := range []string{long + "a", long + "b"} {
		sp, items := mustOpen(t, dir, "ns", group, discard)
		if len(items) != 1 || items[0].Report.IdempotencyKey != group {
			t.Fatalf("the journal of a long group name holds %+v, want its one report", items)
		}
		mustClose(t, sp)
	}
}
