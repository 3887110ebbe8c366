package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Settler writes settlements in batches: it collects them for up to an interval or a batch
// size, then writes the batch with one statement per kind and one for the attempts, in one
// transaction. When the database fails it keeps the batch and tries again; the callers wait
// (Add blocks once its buffer is full), so a database outage slows dispatch down instead of
// losing results.
type Settler struct {
	store    *storage.Store
	batch    int
	interval time.Duration
	log      *slog.Logger
	// OnSettled, when set, is called after each written batch with the batch and the number of
	// tasks it changed (settlements whose claim no longer held change nothing).
	OnSettled func(batch []retry.Settlement, changed int64)

	in          chan retry.Settlement
	stopping    chan struct{}
	done        chan struct{}
	abandon     chan struct{}
	stopOnce    sync.Once
	abandonOnce sync.Once
}

// NewSettler returns a settler writing up to batch settlements per transaction, each waiting
// at most interval.
func NewSettler(store *storage.Store, batch int, interval time.Duration, log *slog.Logger) *Settler {
	return &Settler{store: store, batch: batch, interval: interval, log: log,
		in: make(chan retry.Settlement, batch*4), stopping: make(chan struct{}), done: make(chan struct{}),
		abandon: make(chan struct{})}
}

// Start runs the writer until Stop.
func (s *Settler) Start() { go s.run() }

// Add queues a settlement; it blocks while the queue is full. After the writer has ended the
// settlement is dropped: its task returns after its claim's deadline.
func (s *Settler) Add(st retry.Settlement) {
	select {
	case s.in <- st:
	case <-s.done:
	}
}

// Stop writes what is queued and ends the writer. Settlements that cannot be written before ctx
// ends are given up: their tasks are taken back by the sweeper after their claim's deadline, so
// nothing is lost, and the attempts they carried are redone.
func (s *Settler) Stop(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.stopping) })
	select {
	case <-s.done:
	case <-ctx.Done():
		s.abandonOnce.Do(func() { close(s.abandon) })
		<-s.done
	}
}

// Abandon ends the writer without writing what is queued, as a crash would.
func (s *Settler) Abandon() {
	s.abandonOnce.Do(func() { close(s.abandon) })
	s.stopOnce.Do(func() { close(s.stopping) })
	<-s.done
}

func (s *Settler) run() {
	defer close(s.done)
	buf := make([]retry.Settlement, 0, s.batch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	add := func(st retry.Settlement) {
		if len(buf) == 0 {
			timer.Reset(s.interval)
		}
		buf = append(buf, st)
		if len(buf) >= s.batch {
			timer.Stop()
			s.flush(buf)
			buf = buf[:0]
		}
	}
	for {
		select {
		case st := <-s.in:
			add(st)
		case <-timer.C:
			s.flush(buf)
			buf = buf[:0]
		case <-s.abandon:
			return
		case <-s.stopping:
			for drained := false; !drained; {
				select {
				case st := <-s.in:
					add(st)
				case <-s.abandon:
					return
				default:
					drained = true
				}
			}
			s.flush(buf)
			return
		}
	}
}

// flush writes buf, trying again with growing pauses until it is written or abandoned.
func (s *Settler) flush(buf []retry.Settlement) {
	if len(buf) == 0 {
		return
	}
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		changed, err := s.store.Settle(ctx, buf)
		cancel()
		if err == nil {
			if s.OnSettled != nil {
				s.OnSettled(buf, changed)
			}
			return
		}
		s.log.Error("write settlements; trying again", "settlements", len(buf), "attempt", attempt, "err", err)
		select {
		case <-s.abandon:
			s.log.Warn("settlements not written; their tasks return after their claim deadline", "settlements", len(buf))
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}
