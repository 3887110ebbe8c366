package clientapi

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/testkit"
)

// The budget serves waiters in arrival order, a waiter that gives up takes nothing and holds
// no one back, and a request larger than the whole budget waits for all of it.
func TestBudgetServesInOrderAndGivesUpCleanly(t *testing.T) {
	ctx := context.Background()
	b := newBudget(100)
	r60, err := b.acquire(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	// 50 does not fit; 30 would, but arrives after 50 and waits its turn.
	got50 := make(chan func(), 1)
	go func() {
		r, err := b.acquire(ctx, 50)
		if err != nil {
			t.Error(err)
		}
		got50 <- r
	}()
	waitWaiters(t, b, 1)
	got30 := make(chan func(), 1)
	go func() {
		r, err := b.acquire(ctx, 30)
		if err != nil {
			t.Error(err)
		}
		got30 <- r
	}()
	waitWaiters(t, b, 2)
	// A waiter that gives up leaves the queue as it was.
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := b.acquire(short, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter that gave up: %v", err)
	}
	waitWaiters(t, b, 2)
	r60()
	r50 := <-got50
	r30 := <-got30
	if used, high := b.stats(); used != 80 || high != 80 {
		t.Fatalf("used %d, most %d; want 80 (50 and 30)", used, high)
	}
	r50()
	r30()
	// More than the whole budget is capped to it.
	all, err := b.acquire(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if used, high := b.stats(); used != 100 || high != 100 {
		t.Fatalf("used %d, most %d; want the whole 100", used, high)
	}
	all()
	if used, _ := b.stats(); used != 0 {
		t.Fatalf("used %d after every release", used)
	}
}

func waitWaiters(t *testing.T, b *budget, n int) {
	t.Helper()
	testkit.WaitUntil(t, 5*time.Second, "the waiters to queue", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.waiters) == n
	})
}
