package backoff

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func d(s string) Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return Duration(v)
}

func TestDeterministicSequences(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		want   []string // delay after failure 1, 2, 3, …
	}{
		{"fixed", Policy{Strategy: Fixed, Interval: d("5s")}, []string{"5s", "5s", "5s", "5s"}},
		{"exponential doubles by default", Policy{Strategy: Exponential, Base: d("1s")},
			[]string{"1s", "2s", "4s", "8s", "16s"}},
		{"exponential with multiplier 3", Policy{Strategy: Exponential, Base: d("100ms"), Multiplier: 3},
			[]string{"100ms", "300ms", "900ms", "2.7s"}},
		{"exponential capped", Policy{Strategy: Exponential, Base: d("1s"), Cap: d("5s")},
			[]string{"1s", "2s", "4s", "5s", "5s", "5s"}},
		{"exponential overflow stops at MaxDelay", Policy{Strategy: Exponential, Base: d("1h"), Multiplier: 10},
			[]string{"1h", "10h", "100h", "1000h", MaxDelay.String(), MaxDelay.String()}},
		{"custom levels repeat the last past the end", Policy{Strategy: Levels, Levels: []Duration{d("1s"), d("3s"), d("7s")}},
			[]string{"1s", "3s", "7s", "7s", "7s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.policy.Compile()
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			for i, w := range tt.want {
				want, _ := time.ParseDuration(w)
				if got := b.Delay(i + 1); got != want {
					t.Errorf("delay after failure %d = %s, want %s", i+1, got, want)
				}
			}
		})
	}
}

func TestDefaultLevels(t *testing.T) {
	b := Policy{Strategy: Levels}.MustCompile()
	want := []string{"10s", "15s", "30s", "35s", "40s", "50s", "1m", "2m", "4m", "6m", "8m", "10m",
		"20m", "40m", "1h", "2h", "3h", "4h", "5h", "6h", "7h", "8h", "9h", "10h", "11h", "12h"}
	if len(DefaultLevels) != 26 {
		t.Fatalf("default ladder has %d steps, want 26", len(DefaultLevels))
	}
	for i, w := range want {
		wd, _ := time.ParseDuration(w)
		if got := b.Delay(i + 1); got != wd {
			t.Errorf("level %d = %s, want %s", i+1, got, wd)
		}
	}
	for _, n := range []int{27, 40, 1000} {
		if got := b.Delay(n); got != 12*time.Hour {
			t.Errorf("past the end (failure %d) = %s, want 12h", n, got)
		}
	}
	if got := b.Delay(0); got != 10*time.Second {
		t.Errorf("failures 0 is taken as 1: got %s", got)
	}
}

func TestJitterBounds(t *testing.T) {
	full := Policy{Strategy: Exponential, Base: d("1s"), Cap: d("8s"), Jitter: FullJitter}.MustCompile()
	equal := Policy{Strategy: Exponential, Base: d("1s"), Cap: d("8s"), Jitter: EqualJitter}.MustCompile()
	random := Policy{Strategy: Random, Min: d("2s"), Max: d("3s")}.MustCompile()
	for failures := 1; failures <= 6; failures++ {
		ceil := min(time.Second<<(failures-1), 8*time.Second)
		var sawLowHalf, sawHighHalf bool
		for range 2000 {
			f := full.Delay(failures)
			if f < 0 || f > ceil {
				t.Fatalf("full jitter after %d failures = %s, want within [0, %s]", failures, f, ceil)
			}
			if f < ceil/2 {
				sawLowHalf = true
			} else {
				sawHighHalf = true
			}
			e := equal.Delay(failures)
			if e < ceil/2 || e > ceil {
				t.Fatalf("equal jitter after %d failures = %s, want within [%s, %s]", failures, e, ceil/2, ceil)
			}
			r := random.Delay(failures)
			if r < 2*time.Second || r > 3*time.Second {
				t.Fatalf("random = %s, want within [2s, 3s]", r)
			}
		}
		if !sawLowHalf || !sawHighHalf {
			t.Errorf("full jitter after %d failures did not spread over [0, %s]", failures, ceil)
		}
	}
}

func TestCron(t *testing.T) {
	from := time.Date(2026, 3, 1, 10, 7, 30, 0, time.UTC)
	tests := []struct {
		expr string
		want time.Time
	}{
		{"*/15 * * * *", time.Date(2026, 3, 1, 10, 15, 0, 0, time.UTC)},
		{"0 0 * * * *", time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)},
		{"@every 45s", from.Add(45 * time.Second)},
		{"@daily", time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)},
		{"30 2 * * MON", time.Date(2026, 3, 2, 2, 30, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		b, err := Policy{Strategy: Cron, Cron: tt.expr}.Compile()
		if err != nil {
			t.Fatalf("%q: %v", tt.expr, err)
		}
		if got := b.Next(3, from); !got.Equal(tt.want) {
			t.Errorf("%q: next after %s = %s, want %s", tt.expr, from, got, tt.want)
		}
	}
	// A sequence: each trigger follows the previous one.
	b := Policy{Strategy: Cron, Cron: "0 */10 * * * *"}.MustCompile()
	at := from
	for i, want := range []string{"10:10:00", "10:20:00", "10:30:00"} {
		at = b.Next(i+1, at)
		if got := at.Format("15:04:05"); got != want {
			t.Errorf("cron step %d = %s, want %s", i+1, got, want)
		}
	}
	// An expression that never fires again is bounded, not zero.
	never := Policy{Strategy: Cron, Cron: "0 0 30 2 *"}.MustCompile()
	if got := never.Next(1, from); got.Sub(from) != MaxDelay {
		t.Errorf("never-firing cron: next = %s, want from + MaxDelay", got)
	}
}

func TestCompileRejects(t *testing.T) {
	tests := []struct {
		policy Policy
		want   string
	}{
		{Policy{}, "strategy is required"},
		{Policy{Strategy: "linear"}, `unknown strategy "linear"`},
		{Policy{Strategy: Fixed}, "interval > 0"},
		{Policy{Strategy: Exponential}, "base > 0"},
		{Policy{Strategy: Exponential, Base: d("1s"), Multiplier: 0.5}, "at least 1"},
		{Policy{Strategy: Exponential, Base: d("10s"), Cap: d("1s")}, "below base"},
		{Policy{Strategy: Exponential, Base: d("1s"), Jitter: "half"}, "unknown jitter"},
		{Policy{Strategy: Levels, Levels: []Duration{d("1s"), 0}}, "level 2"},
		{Policy{Strategy: Cron}, "needs a cron expression"},
		{Policy{Strategy: Cron, Cron: "every minute"}, "cron expression"},
		{Policy{Strategy: Random, Min: d("5s"), Max: d("1s")}, "min <= max"},
	}
	for _, tt := range tests {
		_, err := tt.policy.Compile()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: error %v, want it to mention %q", tt.policy, err, tt.want)
		}
	}
}

func TestPolicyJSON(t *testing.T) {
	var p Policy
	in := `{"strategy":"exponential","base":"250ms","multiplier":1.5,"cap":60000,"jitter":"equal"}`
	if err := json.Unmarshal([]byte(in), &p); err != nil {
		t.Fatal(err)
	}
	if p.Base != d("250ms") || p.Cap != d("1m") || p.Multiplier != 1.5 || p.Jitter != EqualJitter {
		t.Fatalf("decoded %+v", p)
	}
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"strategy":"exponential","base":"250ms","multiplier":1.5,"cap":"1m0s","jitter":"equal"}`; string(out) != want {
		t.Fatalf("encoded %s, want %s", out, want)
	}
	if err := json.Unmarshal([]byte(`{"strategy":"fixed","interval":"soon"}`), &p); err == nil {
		t.Fatal("a bad duration string was accepted")
	}
}
