package retryhub

import (
	"errors"
	"fmt"
	"sync"

	"github.com/retryhub/retryhub/client-sdk/internal/spool"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// entry is one queued report.
type entry struct {
	seq  uint64
	item protocol.ReportItem
}

// size estimates the entry's share of a request body.
func (e *entry) size() int64 {
	return int64(len(e.item.Args)+len(e.item.Error)+len(e.item.IdempotencyKey)+len(e.item.Scene)) + 96
}

// queue holds reports until the server settles them: in memory, bounded, and mirrored to the
// spool when there is one.
type queue struct {
	max   int
	batch int
	spool *spool.Spool // nil without a spool directory

	mu      sync.Mutex
	pending []*entry // waiting to be sent, oldest first
	held    int      // pending + being sent
	nextSeq uint64
	closed  bool

	// wake is signalled when a full batch is pending.
	wake chan struct{}
}

// newQueue returns a queue that holds at most maxHeld reports and wakes the sender when batch
// are pending. loaded are the reports read back from sp, queued first as they were written.
func newQueue(maxHeld, batch int, sp *spool.Spool, loaded []spool.Item) *queue {
	q := &queue{max: maxHeld, batch: batch, spool: sp, nextSeq: 1, wake: make(chan struct{}, 1)}
	for _, it := range loaded {
		q.pending = append(q.pending, &entry{seq: it.Seq, item: it.Report})
		q.nextSeq = max(q.nextSeq, it.Seq+1)
	}
	q.held = len(q.pending)
	return q
}

// push queues item. It returns once the item is held in memory and, with a spool, written to
// disk; or an error wrapping ErrQueueFull or ErrClosed, or the spool's write error.
func (q *queue) push(item protocol.ReportItem) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if q.held >= q.max {
		n := q.held
		q.mu.Unlock()
		return fmt.Errorf("%w: %d reports wait for delivery (Config.MaxQueuedReports)", ErrQueueFull, n)
	}
	q.held++
	seq := q.nextSeq
	q.nextSeq++
	q.mu.Unlock()

	if q.spool != nil {
		if err := q.spool.Add(seq, item); err != nil {
			q.mu.Lock()
			q.held--
			q.mu.Unlock()
			if errors.Is(err, spool.ErrClosed) {
				return fmt.Errorf("%w: %w", ErrClosed, err)
			}
			return err
		}
	}
	q.mu.Lock()
	q.pending = append(q.pending, &entry{seq: seq, item: item})
	full := len(q.pending) >= q.batch
	q.mu.Unlock()
	if full {
		q.signal()
	}
	return nil
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take removes up to n pending entries, oldest first, whose sizes add up to at most maxBytes
// (the first is taken whatever its size). With onlyFull it takes nothing unless n are pending.
func (q *queue) take(n int, maxBytes int64, onlyFull bool) []*entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 || (onlyFull && len(q.pending) < n) {
		return nil
	}
	k := 0
	var bytes int64
	for k < len(q.pending) && k < n {
		sz := q.pending[k].size()
		if k > 0 && maxBytes > 0 && bytes+sz > maxBytes {
			break
		}
		bytes += sz
		k++
	}
	out := make([]*entry, k)
	copy(out, q.pending)
	clear(q.pending[:k])
	q.pending = q.pending[k:]
	return out
}

// putBack returns entries that could not be sent to the front of the queue.
func (q *queue) putBack(es []*entry) {
	if len(es) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(es[:len(es):len(es)], q.pending...)
}

// settle forgets entries the server committed or rejected, and records that in the spool.
func (q *queue) settle(es []*entry) error {
	if len(es) == 0 {
		return nil
	}
	var err error
	if q.spool != nil {
		seqs := make([]uint64, len(es))
		for i, e := range es {
			seqs[i] = e.seq
		}
		err = q.spool.Done(seqs)
	}
	q.mu.Lock()
	q.held -= len(es)
	q.mu.Unlock()
	return err
}

// len returns how many reports are held, pending or being sent.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held
}

// pendingLen returns how many reports wait to be sent.
func (q *queue) pendingLen() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// close refuses further pushes.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}
