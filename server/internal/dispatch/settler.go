package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Settler writes settlements in batches: it collects them for up to an interval or a batch
// size, then writes the batch with one statement per kind and one for the attempts, in one
// transaction. Collecting goes on while a batch is written, and Writers batches may be written
// at once (a database that commits in groups, as InnoDB does, takes more that way). When the
// database fails it keeps the batch and tries again; the callers wait (Add blocks once its
// buffer is full), so a database outage slows dispatch down instead of losing results.
//
// Batches written at once may commit in any order. That is safe: settlements of one task are
// never in two batches at once, since a task is claimed again only after its last settlement
// was written.
type Settler struct {
	store    *storage.Store
	batch    int
	interval time.Duration
	log      *slog.Logger
	// Writers is how many batches may be written at once; set it before Start. Zero means 1.
	Writers int
	// OnSettled, when set, is called after each written batch with the batch and the number of
	// tasks it changed (settlements whose claim no longer held change nothing).
	OnSettled func(batch []retry.Settlement, changed int64)

	in          chan retry.Settlement
	batches     chan []retry.Settlement
	lastWritten atomic.Int64 // when a batch was last written, Unix nanoseconds
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
		in: make(chan retry.Settlement, batch*2), stopping: make(chan struct{}), done: make(chan struct{}),
		abandon: make(chan struct{})}
}

// Start runs the writer until Stop.
func (s *Settler) Start() {
	writers := max(s.Writers, 1)
	s.batches = make(chan []retry.Settlement, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.write()
		}()
	}
	go func() {
		s.run()
		close(s.batches)
		wg.Wait()
		close(s.done)
	}()
}

// write writes the batches the collector hands over, until there are no more or the settler
// is abandoned.
func (s *Settler) write() {
	for {
		select {
		case buf, ok := <-s.batches:
			if !ok {
				return
			}
			s.flush(buf)
		case <-s.abandon:
			return
		}
	}
}

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

// run collects settlements into batches and hands them to the writers.
func (s *Settler) run() {
	buf := make([]retry.Settlement, 0, s.batch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// hand gives the batch to a writer, waiting for one to be free; false when abandoned.
	hand := func() bool {
		if len(buf) == 0 {
			return true
		}
		select {
		case s.batches <- buf:
			buf = make([]retry.Settlement, 0, s.batch)
			return true
		case <-s.abandon:
			return false
		}
	}
	add := func(st retry.Settlement) bool {
		if len(buf) == 0 {
			timer.Reset(s.interval)
		}
		buf = append(buf, st)
		if len(buf) >= s.batch {
			timer.Stop()
			return hand()
		}
		return true
	}
	for {
		select {
		case st := <-s.in:
			if !add(st) {
				return
			}
		case <-timer.C:
			if !hand() {
				return
			}
		case <-s.abandon:
			return
		case <-s.stopping:
			for {
				select {
				case st := <-s.in:
					if !add(st) {
						return
					}
					continue
				case <-s.abandon:
					return
				default:
				}
				break
			}
			hand()
			return
		}
	}
}

// splitAfter is how many failed tries of a batch make the settler split it in halves, so that
// one settlement the database keeps refusing cannot hold the others back.
const splitAfter = 3

// giveUpAfter is how many failed tries of a single settlement, while other batches are being
// written (so the database is up), make the settler give it up. Its task is not lost: its
// claim lapses and the sweeper takes it back.
const giveUpAfter = 5

// flush writes buf, trying again with growing pauses until it is written or abandoned. A batch
// that keeps failing is split, and a single settlement that keeps failing while others succeed
// is given up, with an error log naming its task.
func (s *Settler) flush(buf []retry.Settlement) { s.flushSince(buf, time.Time{}) }

// flushSince is flush for a part of a batch that first failed at failedAt (zero: not yet).
func (s *Settler) flushSince(buf []retry.Settlement, failedAt time.Time) {
	if len(buf) == 0 {
		return
	}
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		changed, err := s.store.Settle(ctx, buf)
		cancel()
		if err == nil {
			s.lastWritten.Store(time.Now().UnixNano())
			if s.OnSettled != nil {
				s.OnSettled(buf, changed)
			}
			return
		}
		s.log.Error("write settlements; trying again", "settlements", len(buf), "attempt", attempt, "err", err)
		if failedAt.IsZero() {
			failedAt = time.Now()
		}
		if attempt >= splitAfter && len(buf) > 1 {
			half := len(buf) / 2
			s.flushSince(buf[:half], failedAt)
			s.flushSince(buf[half:], failedAt)
			return
		}
		if len(buf) == 1 && attempt >= giveUpAfter && s.lastWritten.Load() > failedAt.UnixNano() {
			s.log.Error("giving up a settlement the database keeps refusing while it takes others; its task returns when its claim lapses",
				"task", buf[0].TaskID, "kind", buf[0].Kind, "err", err)
			return
		}
		select {
		case <-s.abandon:
			s.log.Warn("settlements not written; their tasks return after their claim deadline", "settlements", len(buf))
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}
