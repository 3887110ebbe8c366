package auth

import (
	"sync"
	"time"
)

// Limiter slows down repeated login failures per key (a user name, a client address). Its
// state is in memory, per node, and bounded: at most maxEntries keys, the stalest dropped
// first when it is full. After free failures within window, each further failure blocks the
// key for a delay that doubles from baseDelay up to maxDelay; a success clears the user's key.
type Limiter struct {
	free       int
	window     time.Duration
	baseDelay  time.Duration
	maxDelay   time.Duration
	maxEntries int
	now        func() time.Time

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	count int
	first time.Time // of the failures counted
	last  time.Time
	until time.Time // blocked until
}

// NewLimiter returns a limiter: after 5 failures in 15 minutes a key waits 5 s, then 10 s,
// 20 s, … up to 15 minutes, for at most maxEntries keys.
func NewLimiter(maxEntries int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{free: 5, window: 15 * time.Minute, baseDelay: 5 * time.Second, maxDelay: 15 * time.Minute,
		maxEntries: maxEntries, now: now, entries: make(map[string]*failures)}
}

// Wait returns how long the most blocked of the keys must still wait (0: none is blocked).
func (l *Limiter) Wait(keys ...string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var wait time.Duration
	for _, k := range keys {
		if f := l.entries[k]; f != nil && f.until.After(now) {
			wait = max(wait, f.until.Sub(now))
		}
	}
	return wait
}

// Fail counts a failure against each key.
func (l *Limiter) Fail(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		f := l.entries[k]
		if f == nil {
			l.makeRoom(now)
			f = &failures{first: now}
			l.entries[k] = f
		}
		if now.Sub(f.first) > l.window && !f.until.After(now) {
			*f = failures{first: now}
		}
		f.count++
		f.last = now
		if f.count >= l.free {
			d := l.baseDelay << min(f.count-l.free, 20)
			f.until = now.Add(min(d, l.maxDelay))
		}
	}
}

// Reset forgets a key's failures.
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	delete(l.entries, key)
	l.mu.Unlock()
}

// Len is the number of keys held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// makeRoom drops the keys whose failures no longer count, and when none does, the one that
// failed least recently. It is called with l.mu held.
func (l *Limiter) makeRoom(now time.Time) {
	if len(l.entries) < l.maxEntries {
		return
	}
	var stalest string
	var stalestAt time.Time
	for k, f := range l.entries {
		if now.Sub(f.last) > l.window && !f.until.After(now) {
			delete(l.entries, k)
			continue
		}
		if stalest == "" || f.last.Before(stalestAt) {
			stalest, stalestAt = k, f.last
		}
	}
	if len(l.entries) >= l.maxEntries {
		delete(l.entries, stalest)
	}
}
