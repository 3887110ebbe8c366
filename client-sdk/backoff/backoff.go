// Package backoff computes when a failed call is tried again. The same code runs in the SDK
// (local retries) and in the server (remote replays and callbacks), so a policy means the same
// thing on both sides.
//
// A Policy is plain data that travels as JSON; Compile checks it and turns it into a Backoff,
// which answers Next: given how many attempts have failed so far and when the last one ended,
// when the next one is due.
package backoff

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Strategy names a back-off strategy.
type Strategy string

// The strategies a policy may name.
const (
	// Fixed waits Interval between attempts.
	Fixed Strategy = "fixed"
	// Exponential waits Base, Base*Multiplier, Base*Multiplier², … up to Cap, with optional jitter.
	Exponential Strategy = "exponential"
	// Levels waits Levels[n-1] after the n-th failure; past the end of the table the last level
	// repeats.
	Levels Strategy = "levels"
	// Cron fires at the next time the Cron expression names after the failure.
	Cron Strategy = "cron"
	// Random waits a uniformly random time between Min and Max.
	Random Strategy = "random"
)

// Jitter spreads exponential delays so that failures at the same moment do not retry together.
type Jitter string

// The jitter modes of the exponential strategy.
const (
	// NoJitter uses the computed delay as it is. The zero value means the same.
	NoJitter Jitter = "none"
	// FullJitter picks uniformly in [0, d].
	FullJitter Jitter = "full"
	// EqualJitter picks uniformly in [d/2, d].
	EqualJitter Jitter = "equal"
)

// DefaultLevels is the delay-level ladder used when a Levels policy names no table of its own:
// 10s, 15s, 30s, 35s, 40s, 50s, 1m, 2m, 4m, 6m, 8m, 10m, 20m, 40m, then 1h to 12h hourly.
var DefaultLevels = []Duration{
	Duration(10 * time.Second), Duration(15 * time.Second), Duration(30 * time.Second),
	Duration(35 * time.Second), Duration(40 * time.Second), Duration(50 * time.Second),
	Duration(1 * time.Minute), Duration(2 * time.Minute), Duration(4 * time.Minute),
	Duration(6 * time.Minute), Duration(8 * time.Minute), Duration(10 * time.Minute),
	Duration(20 * time.Minute), Duration(40 * time.Minute),
	Duration(1 * time.Hour), Duration(2 * time.Hour), Duration(3 * time.Hour), Duration(4 * time.Hour),
	Duration(5 * time.Hour), Duration(6 * time.Hour), Duration(7 * time.Hour), Duration(8 * time.Hour),
	Duration(9 * time.Hour), Duration(10 * time.Hour), Duration(11 * time.Hour), Duration(12 * time.Hour),
}

// MaxDelay bounds every computed delay, so that an overflowing exponent or a typo never
// schedules a retry centuries away.
const MaxDelay = 366 * 24 * time.Hour

// Policy describes a back-off. Only the fields of its Strategy are read; the others are ignored.
type Policy struct {
	Strategy Strategy `json:"strategy"`

	// Interval is the fixed strategy's wait.
	Interval Duration `json:"interval,omitempty"`

	// Base is the exponential strategy's first wait.
	Base Duration `json:"base,omitempty"`
	// Multiplier is the exponential growth per failure; zero means 2.
	Multiplier float64 `json:"multiplier,omitempty"`
	// Cap bounds the exponential wait (before jitter); zero means no bound but MaxDelay.
	Cap Duration `json:"cap,omitempty"`
	// Jitter is the exponential strategy's jitter mode; empty means none.
	Jitter Jitter `json:"jitter,omitempty"`

	// Levels is the levels strategy's table; empty means DefaultLevels.
	Levels []Duration `json:"levels,omitempty"`

	// Cron is the cron strategy's expression: five fields (minute first), six fields (second
	// first), or a descriptor such as "@every 30s" or "@hourly". Times are UTC.
	Cron string `json:"cron,omitempty"`

	// Min and Max bound the random strategy's wait.
	Min Duration `json:"min,omitempty"`
	Max Duration `json:"max,omitempty"`
}

// Backoff is a checked Policy, ready to compute trigger times. It is immutable and safe for
// concurrent use.
type Backoff struct {
	p        Policy
	schedule cron.Schedule
}

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom |
	cron.Month | cron.Dow | cron.Descriptor)

// Compile checks the policy and returns its Backoff. The error names the field at fault.
func (p Policy) Compile() (*Backoff, error) {
	b := &Backoff{p: p}
	switch p.Strategy {
	case Fixed:
		if p.Interval <= 0 {
			return nil, errors.New("backoff: fixed strategy needs interval > 0")
		}
	case Exponential:
		if p.Base <= 0 {
			return nil, errors.New("backoff: exponential strategy needs base > 0")
		}
		if p.Multiplier != 0 && (p.Multiplier < 1 || math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0)) {
			return nil, fmt.Errorf("backoff: exponential multiplier %v must be at least 1", p.Multiplier)
		}
		if p.Cap < 0 {
			return nil, errors.New("backoff: exponential cap must not be negative")
		}
		if p.Cap > 0 && p.Cap < p.Base {
			return nil, fmt.Errorf("backoff: exponential cap %s is below base %s", p.Cap, p.Base)
		}
		switch p.Jitter {
		case "", NoJitter, FullJitter, EqualJitter:
		default:
			return nil, fmt.Errorf("backoff: unknown jitter %q (want none, full or equal)", p.Jitter)
		}
	case Levels:
		for i, l := range p.Levels {
			if l <= 0 {
				return nil, fmt.Errorf("backoff: level %d is %s; levels must be > 0", i+1, l)
			}
		}
	case Cron:
		if strings.TrimSpace(p.Cron) == "" {
			return nil, errors.New("backoff: cron strategy needs a cron expression")
		}
		s, err := cronParser.Parse(p.Cron)
		if err != nil {
			return nil, fmt.Errorf("backoff: cron expression %q: %w", p.Cron, err)
		}
		b.schedule = s
	case Random:
		if p.Min < 0 || p.Max <= 0 || p.Max < p.Min {
			return nil, fmt.Errorf("backoff: random strategy needs 0 <= min <= max and max > 0 (got min %s, max %s)", p.Min, p.Max)
		}
	case "":
		return nil, errors.New("backoff: strategy is required (fixed, exponential, levels, cron or random)")
	default:
		return nil, fmt.Errorf("backoff: unknown strategy %q (want fixed, exponential, levels, cron or random)", p.Strategy)
	}
	return b, nil
}

// MustCompile is Compile for policies written in code; it panics on an invalid policy.
func (p Policy) MustCompile() *Backoff {
	b, err := p.Compile()
	if err != nil {
		panic(err)
	}
	return b
}

// Policy returns the policy the Backoff was compiled from.
func (b *Backoff) Policy() Policy { return b.p }

// Next returns when the next attempt is due, after failures attempts have failed and the last
// one ended at from. failures counts from 1; smaller values are taken as 1.
func (b *Backoff) Next(failures int, from time.Time) time.Time {
	if b.p.Strategy == Cron {
		t := b.schedule.Next(from.UTC())
		if t.IsZero() || t.Sub(from) > MaxDelay {
			return from.Add(MaxDelay)
		}
		return t
	}
	return from.Add(b.Delay(failures))
}

// Delay returns the wait after failures attempts have failed. For the cron strategy it is the
// wait from now to the next time the expression names.
func (b *Backoff) Delay(failures int) time.Duration {
	if failures < 1 {
		failures = 1
	}
	var d time.Duration
	switch b.p.Strategy {
	case Fixed:
		d = time.Duration(b.p.Interval)
	case Exponential:
		d = b.exponential(failures)
	case Levels:
		levels := b.p.Levels
		if len(levels) == 0 {
			levels = DefaultLevels
		}
		d = time.Duration(levels[min(failures, len(levels))-1])
	case Cron:
		now := time.Now()
		d = b.Next(failures, now).Sub(now)
	case Random:
		// Bounded first: hi-lo+1 of a max near the largest Duration would overflow.
		hi := min(int64(b.p.Max), int64(MaxDelay))
		lo := min(int64(b.p.Min), hi)
		d = time.Duration(lo + rand.Int64N(hi-lo+1))
	}
	return min(max(d, 0), MaxDelay)
}

func (b *Backoff) exponential(failures int) time.Duration {
	m := b.p.Multiplier
	if m == 0 {
		m = 2
	}
	// The limit is at most MaxDelay, so that the float below converts back to a Duration
	// without overflow (a cap near the largest Duration would round up past it).
	limit := float64(MaxDelay)
	if b.p.Cap > 0 && time.Duration(b.p.Cap) < MaxDelay {
		limit = float64(b.p.Cap)
	}
	f := float64(b.p.Base) * math.Pow(m, float64(failures-1))
	if math.IsInf(f, 0) || math.IsNaN(f) || f > limit {
		f = limit
	}
	d := time.Duration(f)
	switch b.p.Jitter {
	case FullJitter:
		d = time.Duration(rand.Int64N(int64(d) + 1))
	case EqualJitter:
		half := d / 2
		d = half + time.Duration(rand.Int64N(int64(d-half)+1))
	}
	return d
}

// Duration is a time.Duration that reads and writes JSON as a Go duration string such as
// "1m30s". Reading also accepts a number of milliseconds.
type Duration time.Duration

// String formats the duration as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads a duration string ("250ms", "1h") or a number of milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		v, err := time.ParseDuration(s[1 : len(s)-1])
		if err != nil {
			return fmt.Errorf("duration %s: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var ms float64
	if _, err := fmt.Sscan(s, &ms); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"30s\" or a number of milliseconds", s)
	}
	ns := ms * float64(time.Millisecond)
	if math.IsNaN(ns) || ns >= math.MaxInt64 || ns < math.MinInt64 {
		return fmt.Errorf("duration %s: out of range (at most about 292 years)", s)
	}
	*d = Duration(time.Duration(ns))
	return nil
}
