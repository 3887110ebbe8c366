package spool

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// FuzzSpoolFile reads a journal whose file holds the fuzzer's bytes, as after a crash, a full
// disk or a stray edit. Reading must not panic nor hand back a report twice; the reports it
// hands back, written as Open rewrites the journal, read back the same. (FuzzSpoolRoundTrip
// goes through Open, Add, Done and Close; this one skips their fsyncs to try more files.)
func FuzzSpoolFile(f *testing.F) {
	rec := func(r journalRecord) []byte {
		line, err := encodeRecord(r)
		if err != nil {
			panic(err) // the records are the test's own, or ones it just read
		}
		return line
	}
	item := func(key string) *protocol.ReportItem {
		return &protocol.ReportItem{Scene: "send-email", IdempotencyKey: key,
			Args: json.RawMessage(`{"to":"ann@example.com","n":1}`), Error: "smtp: 451 try later",
			LocalAttempts: 3, FailedAt: 1767225600000}
	}
	hdr := rec(journalRecord{V: format})
	one := rec(journalRecord{Seq: 1, Item: item("o-1")})
	two := rec(journalRecord{Seq: 2, Item: item("o-2")})
	done := rec(journalRecord{Done: []uint64{1}})
	f.Add(hdr)
	f.Add(joined(hdr, one, two))
	f.Add(joined(hdr, one, two, done))
	f.Add(joined(hdr, one, two[:len(two)-5]))                                    // torn last line
	f.Add(joined(hdr, []byte("00000000 {\"seq\":3}\n"), two))                    // damaged line
	f.Add(joined(rec(journalRecord{V: format + 1}), one))                        // a newer format
	f.Add(joined(hdr, rec(journalRecord{Seq: 1, Item: &protocol.ReportItem{}}))) // an empty item
	f.Add([]byte("\n\n\n"))

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// One file, rewritten by each run: a directory per run costs more than the read.
	path := filepath.Join(f.TempDir(), "reports-ns.g.journal")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		items, err := (&Spool{path: path, log: log}).read()
		if err != nil {
			return // refused (a newer format): Open leaves such a file as it is
		}
		seen := map[uint64]bool{}
		for _, it := range items {
			if it.Seq == 0 || seen[it.Seq] {
				t.Fatalf("read handed back seq %d twice or zero: %+v", it.Seq, items)
			}
			seen[it.Seq] = true
		}
		// What Open writes back, the live reports after a header, reads back the same.
		again := joined(rec(journalRecord{V: format}))
		for _, it := range items {
			again = append(again, rec(journalRecord{Seq: it.Seq, Item: &it.Report})...)
		}
		if err := os.WriteFile(path, again, 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := (&Spool{path: path, log: log}).read()
		if err != nil {
			t.Fatalf("read the rewritten journal: %v", err)
		}
		if len(back) != len(items) {
			t.Fatalf("the rewritten journal holds %d reports, want %d", len(back), len(items))
		}
		for i := range items {
			if !sameItem(back[i], items[i]) {
				t.Fatalf("report %d read back as %+v, want %+v", i, back[i], items[i])
			}
		}
	})
}

// FuzzSpoolRoundTrip writes reports with fuzzed fields, settles some, and checks that the
// others are read back exactly, in order.
func FuzzSpoolRoundTrip(f *testing.F) {
	f.Add("send-email", "order-1", []byte(`{"to":"ann@example.com"}`), "timeout", 3, int64(1767225600000), uint8(0b0101))
	f.Add("notify-partner", "ключ\n\x00", []byte(`null`), "", 0, int64(0), uint8(0))
	f.Add("s", "k", []byte(`"\u2028"`), "\xff\xfe", -1, int64(-1), uint8(0xff))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, scene, key string, args []byte, errText string, local int, failedAt int64, settle uint8) {
		if !json.Valid(args) {
			return // the SDK sends arguments as JSON; anything else is not a report
		}
		dir := t.TempDir()
		s, items, err := Open(dir, scene, key, log)
		if err != nil {
			t.Fatalf("open a new journal: %v", err)
		}
		if len(items) != 0 {
			t.Fatalf("a new journal holds %d reports", len(items))
		}
		var want []Item
		for i := range 8 {
			it := protocol.ReportItem{Scene: scene, IdempotencyKey: key + string(rune('a'+i)), Args: args,
				Error: errText, LocalAttempts: local + i, FailedAt: failedAt}
			seq := uint64(i + 1)
			if err := s.Add(seq, it); err != nil {
				t.Fatalf("add: %v", err)
			}
			if settle&(1<<i) != 0 {
				if err := s.Done([]uint64{seq}); err != nil {
					t.Fatalf("done: %v", err)
				}
				continue
			}
			want = append(want, Item{Seq: seq, Report: it})
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, got, err := Open(dir, scene, key, log)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s2.Close()
		if len(got) != len(want) {
			t.Fatalf("read back %d reports, want %d", len(got), len(want))
		}
		for i := range want {
			// Text fields go through JSON, which makes invalid UTF-8 into U+FFFD: compare as
			// JSON would give them.
			w := want[i]
			w.Report.Scene, w.Report.IdempotencyKey, w.Report.Error = viaJSON(t, w.Report.Scene), viaJSON(t, w.Report.IdempotencyKey), viaJSON(t, w.Report.Error)
			if !sameItem(got[i], w) {
				t.Fatalf("report %d read back as %+v, want %+v", i, got[i], w)
			}
		}
	})
}

// sameItem compares two items, their arguments as the JSON values they hold (the encoder
// compacts them and escapes <, > and &).
func sameItem(a, b Item) bool {
	va, oka := jsonValue(a.Report.Args)
	vb, okb := jsonValue(b.Report.Args)
	a.Report.Args, b.Report.Args = nil, nil
	return oka && okb && reflect.DeepEqual(va, vb) && reflect.DeepEqual(a, b)
}

func jsonValue(raw json.RawMessage) (any, bool) {
	if len(raw) == 0 {
		return nil, true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err == nil
}

func viaJSON(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func joined(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
