package scheduler

import (
	"context"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// LeaserParams configure a Leaser.
type LeaserParams struct {
	Store   *storage.Store
	Log     *slog.Logger
	NodeID  string
	Buckets int
	// Interval is how often leases are renewed and the share recomputed.
	Interval time.Duration
	// NodeTTL is how long a node without a heartbeat counts as live.
	NodeTTL time.Duration
	// LeaseDuration is how long a lease lasts unrenewed.
	LeaseDuration time.Duration
}

// Leaser takes this node's share of the buckets through leases in the database. Each node
// computes the same assignment from the list of live nodes (rendezvous hashing: a bucket goes to
// the node that scores highest with it, so a node joining or leaving moves only its own share),
// releases the buckets that are no longer its own, and takes or renews those that are, where
// the lease is free, expired, or its own. A node that stops renewing loses its buckets when its
// leases expire; a node leaving releases them at once.
type Leaser struct {
	p     LeaserParams
	store *storage.Store
	log   *slog.Logger
	loop  loop

	held  atomic.Pointer[heldSet]
	place atomic.Pointer[place]
	// took is set once a pass has taken leases, so that Stop releases them.
	took atomic.Bool
}

var _ service.Killer = (*Leaser)(nil)

// heldSet is the buckets a pass leased, and until when those leases last at the least: the
// time the pass began plus the lease duration.
type heldSet struct {
	buckets []int
	until   time.Time
}

var noBuckets = &heldSet{}

// place is where this node stands among the live nodes: its rank in their ids' order, and how
// many there are.
type place struct{ rank, nodes int }

// NewLeaser returns a leaser; Start runs it.
func NewLeaser(p LeaserParams) *Leaser {
	l := &Leaser{p: p, store: p.Store, log: p.Log}
	l.loop = loop{interval: p.Interval, exec: l.exec, log: p.Log, finish: passTimeout}
	l.held.Store(noBuckets)
	l.place.Store(&place{rank: 0, nodes: 1})
	return l
}

// Held returns the buckets this node holds now, in order. The slice must not be changed.
// Leases that a pass could not renew in time count as lost once they would have expired,
// so that a node slowed down past its leases stops claiming in buckets that another node may
// have taken by then (claims would stay safe, being conditional on the task's state, but two
// nodes would compete for the same tasks).
func (l *Leaser) Held() []int {
	h := l.held.Load()
	if len(h.buckets) == 0 || time.Now().After(h.until) {
		return nil
	}
	return h.buckets
}

// Nodes returns how many nodes were live at the last pass.
func (l *Leaser) Nodes() int { return l.place.Load().nodes }

// Place returns this node's rank among the nodes live at the last pass (in the order of their
// ids, from 0) and how many they were: what splits a shared budget without a remainder lost.
func (l *Leaser) Place() (rank, nodes int) {
	p := l.place.Load()
	return p.rank, p.nodes
}

// Start takes this node's share under ctx, then renews it every interval until Stop.
func (l *Leaser) Start(ctx context.Context) error {
	if err := l.Exec(ctx); err != nil {
		return err
	}
	return l.loop.start()
}

// Exec runs one pass: read the live nodes, release what is no longer ours, take what is.
func (l *Leaser) Exec(ctx context.Context) error {
	now := time.Now()
	nodes, err := l.store.LiveNodes(ctx, now.Add(-l.p.NodeTTL))
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(nodes)+1)
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	if !slices.Contains(ids, l.p.NodeID) {
		ids = append(ids, l.p.NodeID)
	}
	slices.Sort(ids)
	l.place.Store(&place{rank: slices.Index(ids, l.p.NodeID), nodes: len(ids)})
	mine := Share(ids, l.p.NodeID, l.p.Buckets)
	var drop []int
	prev := l.held.Load()
	for _, b := range prev.buckets {
		if _, ok := slices.BinarySearch(mine, b); !ok {
			drop = append(drop, b)
		}
	}
	if len(drop) > 0 {
		// Stop claiming them first, then let them go.
		kept := slices.DeleteFunc(slices.Clone(prev.buckets), func(b int) bool { return slices.Contains(drop, b) })
		l.held.Store(&heldSet{buckets: kept, until: prev.until})
		if err := l.store.ReleaseBuckets(ctx, l.p.NodeID, drop); err != nil {
			return err
		}
	}
	held, err := l.store.AcquireBuckets(ctx, l.p.NodeID, mine, now, now.Add(l.p.LeaseDuration))
	if err != nil {
		return err
	}
	held = slices.DeleteFunc(held, func(b int) bool { _, ok := slices.BinarySearch(mine, b); return !ok })
	if len(held) != len(prev.buckets) {
		l.log.Info("bucket leases changed", "held", len(held), "share", len(mine), "nodes", len(ids))
	}
	l.held.Store(&heldSet{buckets: held, until: now.Add(l.p.LeaseDuration)})
	l.took.Store(true)
	return nil
}

func (l *Leaser) exec(ctx context.Context) {
	if err := l.Exec(ctx); err != nil { // stop never cancels a pass: an error is real
		l.log.Warn("renew bucket leases", "err", err)
		// Leases we could not renew count as lost once they would have expired (Held), and
		// may pass to other nodes. Claims, settlements and sweeps are conditional on the
		// task's state and claim token, never on the lease, so nothing is done twice either way.
	}
}

// Stop ends leasing (letting a renewal under way land first) and releases every bucket, so
// other nodes take them at once.
func (l *Leaser) Stop(ctx context.Context) {
	running, ended := l.loop.stop(ctx)
	if !running && !l.took.Swap(false) {
		return
	}
	l.took.Store(false)
	l.held.Store(noBuckets)
	if !ended {
		l.log.Warn("shutdown: a lease renewal still under way at the deadline; the leases are left to expire")
		return
	}
	if err := l.store.ReleaseBuckets(ctx, l.p.NodeID, nil); err != nil {
		l.log.Warn("release bucket leases", "err", err)
	}
}

// Kill ends leasing and leaves the leases to expire, as a crash would.
func (l *Leaser) Kill() {
	l.loop.stop(context.Background())
	l.took.Store(false)
	l.held.Store(noBuckets)
}

// Share returns, in order, the buckets that node owns among nodes by rendezvous hashing.
func Share(nodes []string, node string, buckets int) []int {
	var mine []int
	for b := range buckets {
		var (
			best  string
			score uint64
		)
		for _, n := range nodes {
			h := fnv.New64a()
			h.Write([]byte(n))
			h.Write([]byte{byte(b), byte(b >> 8), byte(b >> 16)})
			s := mix(h.Sum64())
			if best == "" || s > score || (s == score && n < best) {
				best, score = n, s
			}
		}
		if best == node {
			mine = append(mine, b)
		}
	}
	return mine
}

// mix spreads FNV's output (a finalizer from splitmix64), so similar node names and bucket
// numbers do not score alike.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
