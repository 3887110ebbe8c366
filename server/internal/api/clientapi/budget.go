package clientapi

import (
	"context"
	"sync"
)

// budget bounds the bytes of request bodies the API reads and holds at once, across all
// requests: a request takes room for its body (its Content-Length, or the body limit when it
// does not say) before the body is read, and gives it back when its answer is written. Waiters
// are served in arrival order, so a large body is not starved by small ones.
type budget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	high    int64
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{}
}

func newBudget(limit int64) *budget { return &budget{limit: limit} }

// acquire waits until n bytes are free (n is capped at the whole budget) or ctx ends, and
// returns the function that gives them back.
func (b *budget) acquire(ctx context.Context, n int64) (release func(), err error) {
	n = min(max(n, 0), b.limit)
	release = func() { b.release(n) }
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.limit {
		b.take(n)
		b.mu.Unlock()
		return release, nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return release, nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Served while giving up: give the room back.
		b.used -= n
	default:
		for i, o := range b.waiters {
			if o == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
	}
	b.serve()
	return nil, ctx.Err()
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.serve()
	b.mu.Unlock()
}

// take counts n bytes as used; b.mu is held.
func (b *budget) take(n int64) {
	b.used += n
	b.high = max(b.high, b.used)
}

// serve gives room to the waiters in order while it lasts; b.mu is held.
func (b *budget) serve() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if b.used+w.n > b.limit {
			return
		}
		b.take(w.n)
		close(w.ready)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
	}
}

// stats returns the bytes in use and the most ever in use at once.
func (b *budget) stats() (used, high int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.high
}
