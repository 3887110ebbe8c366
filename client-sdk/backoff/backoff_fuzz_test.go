package backoff

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

// FuzzPolicy reads a policy from JSON as the server and the SDK do (a scene's policy, a
// declaration's remote back-off) and checks that a policy Compile accepts never panics and
// only yields delays within [0, MaxDelay], and that it survives a JSON round trip unchanged.
func FuzzPolicy(f *testing.F) {
	for _, seed := range []string{
		`{"strategy":"fixed","interval":"5s"}`,
		`{"strategy":"exponential","base":"100ms","cap":"2s","jitter":"equal"}`,
		`{"strategy":"exponential","base":"5s","multiplier":1.5,"cap":"10m","jitter":"full"}`,
		`{"strategy":"levels"}`,
		`{"strategy":"levels","levels":["1s","10s",60000]}`,
		`{"strategy":"cron","cron":"*/10 * * * * *"}`,
		`{"strategy":"cron","cron":"@every 30s"}`,
		`{"strategy":"cron","cron":"0 0 30 2 *"}`,
		`{"strategy":"random","min":"1s","max":"5s"}`,
		`{"strategy":"nope"}`,
	} {
		f.Add([]byte(seed))
	}
	from := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Policy
		if json.Unmarshal(data, &p) != nil {
			return
		}
		b, err := p.Compile()
		if err != nil {
			return
		}
		for _, n := range []int{math.MinInt, 0, 1, 2, 3, 10, 64, 1000, 1 << 40, math.MaxInt} {
			d := b.Delay(n)
			if d < 0 || d > MaxDelay {
				t.Fatalf("%s: Delay(%d) = %s, outside [0, %s]", data, n, d, MaxDelay)
			}
			next := b.Next(n, from)
			if next.Before(from) || next.Sub(from) > MaxDelay {
				t.Fatalf("%s: Next(%d, %s) = %s, not within MaxDelay after it", data, n, from, next)
			}
		}
		js, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("%s: marshal an accepted policy: %v", data, err)
		}
		var back Policy
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatalf("%s: read back %s: %v", data, js, err)
		}
		if _, err := back.Compile(); err != nil {
			t.Fatalf("%s: read back as %s, which Compile refuses: %v", data, js, err)
		}
		if len(p.Levels) == 0 {
			p.Levels = nil
		}
		if !reflect.DeepEqual(back, p) {
			t.Fatalf("%s: round trip through %s gives %+v, want %+v", data, js, back, p)
		}
	})
}
