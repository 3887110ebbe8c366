package recovery

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a time that moves only when told.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTracker(buf *bytes.Buffer, c *clock) *Tracker {
	return New(Params{
		Log:       slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Failing:   "cannot deliver",
		Recovered: "delivers again",
		MinDelay:  100 * time.Millisecond,
		MaxDelay:  time.Second,
		FixDelay:  30 * time.Second,
		Now:       c.now,
	})
}

// records returns the log's records at level, one line each.
func records(buf *bytes.Buffer, level string) []string {
	var out []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, "level="+level+" ") {
			out = append(out, l)
		}
	}
	return out
}

var errDown = errors.New("connection refused")

func TestAnOutageLogsTwoLines(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	tr := newTracker(&buf, c)
	tr.Succeeded()
	if buf.Len() != 0 || tr.Failing() {
		t.Fatalf("a success without failures logged %q", buf.String())
	}
	for range 5 {
		tr.Failed(errDown, Transient, "", "held", 7)
		c.advance(2 * time.Second)
	}
	if !tr.Failing() {
		t.Fatal("not failing after failures")
	}
	warns := records(&buf, "WARN")
	if len(warns) != 1 || !strings.Contains(warns[0], "cannot deliver") || !strings.Contains(warns[0], "connection refused") ||
		!strings.Contains(warns[0], "held=7") {
		t.Fatalf("want one warning naming the error and the attributes, got %q", warns)
	}
	if n := len(records(&buf, "DEBUG")); n != 4 {
		t.Fatalf("%d debug records for the 4 later failures", n)
	}
	tr.Succeeded("server", "a")
	infos := records(&buf, "INFO")
	if len(infos) != 1 || !strings.Contains(infos[0], "delivers again") || !strings.Contains(infos[0], "failed_for=10s") ||
		!strings.Contains(infos[0], "failed_tries=5") || !strings.Contains(infos[0], "server=a") {
		t.Fatalf("want one recovery record with the outage's length and count, got %q", infos)
	}
	tr.Succeeded()
	if n := len(records(&buf, "INFO")); n != 1 || tr.Failing() {
		t.Fatalf("a second success logged again (%d records)", n)
	}
	// The next outage is logged again, and counted from its own start.
	tr.Failed(errDown, Transient, "")
	c.advance(time.Second)
	tr.Succeeded()
	if warns, infos := records(&buf, "WARN"), records(&buf, "INFO"); len(warns) != 2 || len(infos) != 2 ||
		!strings.Contains(infos[1], "failed_for=1s") || !strings.Contains(infos[1], "failed_tries=1") {
		t.Fatalf("second outage: warnings %q, recoveries %q", warns, infos)
	}
}

func TestFailuresThatNeedAFix(t *testing.T) {
	var buf bytes.Buffer
	tr := newTracker(&buf, &clock{t: time.Unix(1_800_000_000, 0)})
	if d := tr.Failed(errDown, Transient, ""); d > 100*time.Millisecond {
		t.Fatalf("first transient delay %s, want at most MinDelay", d)
	}
	// The kind changes: logged again, at error level with the fix; the wait is FixDelay.
	if d := tr.Failed(errors.New("HTTP 401 bad_signature"), NeedsFix, "check the token"); d != 30*time.Second {
		t.Fatalf("delay %s after a failure that needs a fix, want FixDelay", d)
	}
	tr.Failed(errors.New("HTTP 401 bad_signature"), NeedsFix, "check the token")
	errs := records(&buf, "ERROR")
	if len(errs) != 1 || !strings.Contains(errs[0], `fix="check the token"`) || !strings.Contains(errs[0], "bad_signature") {
		t.Fatalf("want one error record with the fix, got %q", errs)
	}
	if n := len(records(&buf, "WARN")); n != 1 {
		t.Fatalf("%d warnings, want the first transient failure's", n)
	}
}

func TestDelayDoublesUpToTheCap(t *testing.T) {
	min, max := 100*time.Millisecond, time.Second
	for failures, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 40: time.Second} {
		for range 50 {
			if d := delay(min, max, failures); d < base/2 || d > base {
				t.Fatalf("after %d failures waited %s, want between %s and %s", failures, d, base/2, base)
			}
		}
	}
	if d := delay(0, 0, 3); d != 0 {
		t.Fatalf("zero bounds gave %s", d)
	}
}
