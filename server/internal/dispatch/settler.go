package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// SettlerParams configure a Settler.
type SettlerParams struct {
	Store *storage.Store
	// Batch bounds the settlements of one transaction.
	Batch int
	// Interval is how long a settlement waits for its batch to fill.
	Interval time.Duration
	// Writers is how many batches may be written at once; zero means 1.
	Writers int
	// OnSettled, when set, is called after each written batch with the batch and the number of
	// tasks it changed (settlements whose claim no longer held change nothing).
	OnSettled func(batch []retry.Settlement, changed int64)
	// Observer, when set, is told of every batch written or failed (metrics).
	Observer Observer
	Log      *slog.Logger
}

// Settler writes settlements in batches: it collects them for up to an interval or a batch
// size, then writes the batch with one statement per kind and one for the attempts, in one
// transaction. Collecting goes on while a batch is written, and Writers batches may be written
// at once (a database that commits in groups, as InnoDB does, takes more that way). When the
// database fails it keeps the batch and tries again; the callers wait (Add blocks once its
// buffer is full), so a database outage slows dispatch down instead of losing results. An
// outage is logged once as it starts and once when writes succeed again.
//
// Batches written at once may commit in any order. That is safe: settlements of one task are
// never in two batches at once, since a task is claimed again only after its last settlement
// was written.
type Settler struct {
	p   SettlerParams
	log *slog.Logger

	in          chan retry.Settlement
	batches     chan []retry.Settlement
	lastWritten atomic.Int64 // when a batch was last written, Unix nanoseconds
	// lost counts the settlements given up at a stop or a kill, or refused after the end.
	lost atomic.Int64

	// ctx is cancelled when the settler is abandoned: it ends a write under way.
	ctx         context.Context
	cancel      context.CancelFunc
	stopping    chan struct{}
	done        chan struct{}
	abandon     chan struct{}
	stopOnce    sync.Once
	abandonOnce sync.Once
	started     atomic.Bool

	mu     sync.Mutex
	outage outage
}

// outage is what the settler knows of a database outage under way.
type outage struct {
	since  time.Time // zero: writes succeed
	waited int       // settlements that failed at least once since
}

var _ service.Killer = (*Settler)(nil)

// NewSettler returns a settler; Start runs it.
func NewSettler(p SettlerParams) *Settler {
	p.Batch = max(p.Batch, 1)
	p.Writers = max(p.Writers, 1)
	p.Observer = observerOr(p.Observer)
	ctx, cancel := context.WithCancel(context.Background())
	return &Settler{p: p, log: p.Log, ctx: ctx, cancel: cancel,
		in: make(chan retry.Settlement, p.Batch*2), batches: make(chan []retry.Settlement, p.Writers),
		stopping: make(chan struct{}), done: make(chan struct{}), abandon: make(chan struct{})}
}

// Start runs the collector and the writers until Stop or Kill.
func (s *Settler) Start(context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return service.ErrStarted
	}
	var wg sync.WaitGroup
	for range s.p.Writers {
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
		// What a writer or the collector left is given up; count it.
		for buf := range s.batches {
			s.lost.Add(int64(len(buf)))
		}
		close(s.done)
	}()
	return nil
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

// Add queues a settlement; it blocks while the queue is full. After the settler has ended the
// settlement is dropped (and counted): its task returns after its claim's deadline.
func (s *Settler) Add(st retry.Settlement) { s.AddContext(context.Background(), st) }

// AddContext is Add giving up when ctx ends first (a settlement that finds room is queued even
// when ctx has ended). It reports whether the settlement was queued; one that was not is
// counted among those the settler's stop reports as not written.
func (s *Settler) AddContext(ctx context.Context, st retry.Settlement) bool {
	select {
	case <-s.done:
		s.lost.Add(1)
		return false
	case s.in <- st:
		return true
	default:
	}
	select {
	case s.in <- st:
		return true
	case <-s.done:
	case <-s.abandon:
	case <-ctx.Done():
	}
	s.lost.Add(1)
	return false
}

// Stop writes what is queued and ends the writer. Settlements that cannot be written before ctx
// ends are given up and their number logged: their tasks are taken back by the sweeper after
// their claim's deadline, so nothing is lost, and the attempts they carried are redone.
func (s *Settler) Stop(ctx context.Context) {
	if !s.started.Load() {
		return
	}
	s.stopOnce.Do(func() { close(s.stopping) })
	select {
	case <-s.done:
		s.dropQueued()
	case <-ctx.Done():
		s.stopNow()
	}
	if n := s.lost.Swap(0); n > 0 {
		s.log.Error("shutdown: results not written; their tasks return through the sweeper after the claim deadline",
			"results", n)
	}
}

// Kill ends the writer without writing what is queued, as a crash would.
func (s *Settler) Kill() {
	if !s.started.Load() {
		return
	}
	s.stopOnce.Do(func() { close(s.stopping) })
	s.stopNow()
	s.lost.Store(0)
}

// stopNow abandons the writes under way and what is queued, and waits for the goroutines.
func (s *Settler) stopNow() {
	s.abandonOnce.Do(func() {
		close(s.abandon)
		s.cancel()
	})
	<-s.done
	s.dropQueued()
}

// dropQueued counts and drops what was queued after the collector ended.
func (s *Settler) dropQueued() {
	for {
		select {
		case <-s.in:
			s.lost.Add(1)
			continue
		default:
		}
		return
	}
}

// run collects settlements into batches and hands them to the writers.
func (s *Settler) run() {
	buf := make([]retry.Settlement, 0, s.p.Batch)
	defer func() { s.lost.Add(int64(len(buf))) }()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// hand gives the batch to a writer, waiting for one to be free; false when abandoned.
	hand := func() bool {
		if len(buf) == 0 {
			return true
		}
		select {
		case s.batches <- buf:
			buf = make([]retry.Settlement, 0, s.p.Batch)
			return true
		case <-s.abandon:
			return false
		}
	}
	add := func(st retry.Settlement) bool {
		if len(buf) == 0 {
			timer.Reset(s.p.Interval)
		}
		buf = append(buf, st)
		if len(buf) >= s.p.Batch {
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

// writeTimeout bounds one write of a batch.
const writeTimeout = 30 * time.Second

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
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		start := time.Now()
		changed, err := s.p.Store.Settle(ctx, buf)
		cancel()
		s.p.Observer.SettleBatch(len(buf), time.Since(start), err)
		if err == nil {
			s.lastWritten.Store(time.Now().UnixNano())
			s.recovered()
			if s.p.OnSettled != nil {
				s.p.OnSettled(buf, changed)
			}
			return
		}
		if s.ctx.Err() != nil { // abandoned: the write was cancelled
			s.lost.Add(int64(len(buf)))
			return
		}
		if failedAt.IsZero() {
			failedAt = time.Now()
			s.failed(len(buf), err)
		}
		s.log.Debug("write settlements; trying again", "settlements", len(buf), "attempt", attempt, "err", err)
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
		t := time.NewTimer(wait)
		select {
		case <-s.abandon:
			t.Stop()
			s.lost.Add(int64(len(buf)))
			return
		case <-t.C:
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// failed notes that n settlements failed their first write; the first failure of an outage
// is logged.
func (s *Settler) failed(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outage.since.IsZero() {
		s.outage.since = time.Now()
		s.log.Error("write settlements: the database refuses them; trying again until it takes them",
			"settlements", n, "err", err)
	}
	s.outage.waited += n
}

// recovered notes a written batch; the first after an outage is logged with what waited.
func (s *Settler) recovered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outage.since.IsZero() {
		return
	}
	s.log.Info("write settlements: the database takes them again", "waited", s.outage.waited,
		"for", time.Since(s.outage.since).Round(time.Millisecond))
	s.outage = outage{}
}
