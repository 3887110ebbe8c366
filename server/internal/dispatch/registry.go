// Package dispatch delivers claimed tasks to live client instances: the registry knows which
// instances are live and how loaded they are from this node's view, the dispatcher runs each
// claim at its time on a picked instance and turns the answer into a settlement, and the
// settler writes settlements to the database in batches.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Errors of Pick.
var (
	// ErrNoInstance: the group has no live instance with an executor.
	ErrNoInstance = errors.New("no live client instance")
	// ErrBusy: every live instance is at capacity or asked to be left alone for a while.
	ErrBusy = errors.New("every client instance is busy")
	// ErrFull is the ErrBusy of a group with an instance that is at capacity with this node's
	// own calls (not one that answered busy): a slot frees as one of them ends (see Freed).
	ErrFull = fmt.Errorf("%w: at capacity with this node's calls", ErrBusy)
)

// RegistryParams configure a Registry.
type RegistryParams struct {
	Store *storage.Store
	// TTL: an instance whose heartbeat is older does not count as live.
	TTL time.Duration
	// Interval is how often the instances are reloaded.
	Interval time.Duration
	// Place is this node's rank among the server nodes that dispatch, and how many they are:
	// they share every instance's capacity, since every group's tasks are spread over every
	// node's buckets, so each fills its part of an instance's slots (slots). Without it, each
	// node filled the whole capacity, so that two nodes pushed an instance to twice what it
	// takes and were answered busy. Nil means one node.
	Place func() (rank, nodes int)
	Log   *slog.Logger
}

// Registry is this node's list of live client instances, refreshed from the database (any node
// may receive an instance's heartbeat), with this node's in-flight count per instance and the
// instances that recently answered busy or could not be reached.
type Registry struct {
	store    *storage.Store
	ttl      time.Duration
	interval time.Duration
	place    func() (rank, nodes int)
	log      *slog.Logger

	mu     sync.Mutex
	groups map[int64]*groupInstances
	byID   map[string]*instance
	// freed is closed, and replaced, whenever a call ends and so frees a slot.
	freed chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

type groupInstances struct {
	list []*instance // by id
	next uint64      // round robin position
}

type instance struct {
	retry.Instance
	inflight  int
	busyUntil time.Time
	downUntil time.Time
	lastUsed  time.Time
	// singlesUntil: the instance refused a batch as too large; until then it gets single
	// calls only.
	singlesUntil time.Time
}

// NewRegistry returns a registry; Start loads it and keeps it fresh.
func NewRegistry(p RegistryParams) *Registry {
	return &Registry{store: p.Store, ttl: p.TTL, interval: p.Interval, place: p.Place, log: p.Log,
		groups: map[int64]*groupInstances{}, byID: map[string]*instance{}, freed: make(chan struct{})}
}

// refreshTimeout bounds one reload.
const refreshTimeout = 10 * time.Second

// Start loads the instances under ctx, and keeps reloading them until Stop (ctx ending does not
// stop the reloads).
func (r *Registry) Start(ctx context.Context) error {
	if r.done != nil {
		return service.ErrStarted
	}
	if err := r.Refresh(ctx); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				rctx, cancel := context.WithTimeout(lctx, refreshTimeout)
				if err := r.Refresh(rctx); err != nil && lctx.Err() == nil {
					r.log.Warn("refresh client instances", "err", err)
				}
				cancel()
			}
		}
	}()
	return nil
}

// Stop ends the reloading, cancelling a reload under way.
func (r *Registry) Stop(context.Context) {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
}

// Refresh reloads the live instances, keeping this node's view of those it knew.
func (r *Registry) Refresh(ctx context.Context) error {
	live, err := r.store.LiveInstances(ctx, time.Now().Add(-r.ttl))
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	groups := make(map[int64]*groupInstances)
	byID := make(map[string]*instance, len(live))
	for _, in := range live {
		inst, ok := r.byID[in.ID]
		if ok {
			inst.Instance = in
		} else {
			inst = &instance{Instance: in}
		}
		byID[in.ID] = inst
		g := groups[in.GroupID]
		if g == nil {
			g = &groupInstances{}
			if old := r.groups[in.GroupID]; old != nil {
				g.next = old.next
			}
			groups[in.GroupID] = g
		}
		g.list = append(g.list, inst)
	}
	r.groups, r.byID = groups, byID
	return nil
}

// Observe adds or refreshes an instance at once, without waiting for the next reload: the
// client API calls it when an instance registers on this node.
func (r *Registry) Observe(in retry.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byID[in.ID]; ok {
		if old.GroupID == in.GroupID {
			old.Instance = in
			old.downUntil = time.Time{}
			return
		}
		r.removeLocked(in.ID)
	}
	inst := &instance{Instance: in}
	r.byID[in.ID] = inst
	g := r.groups[in.GroupID]
	if g == nil {
		g = &groupInstances{}
		r.groups[in.GroupID] = g
	}
	g.list = append(g.list, inst)
	sort.Slice(g.list, func(i, j int) bool { return g.list[i].ID < g.list[j].ID })
}

// Forget removes an instance that deregistered.
func (r *Registry) Forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(id)
}

func (r *Registry) removeLocked(id string) {
	inst, ok := r.byID[id]
	if !ok {
		return
	}
	delete(r.byID, id)
	g := r.groups[inst.GroupID]
	if g == nil {
		return
	}
	for i, x := range g.list {
		if x.ID == id {
			g.list = append(g.list[:i:i], g.list[i+1:]...)
			break
		}
	}
}

// Live returns how many live instances with an executor a group has.
func (r *Registry) Live(groupID int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	if g := r.groups[groupID]; g != nil {
		for _, in := range g.list {
			if in.ExecutorURL != "" {
				n++
			}
		}
	}
	return n
}

// BatchSize is how many tasks one call may carry to any live instance of the group: the
// smallest MaxBatch among its instances with an executor, so that whichever is picked takes
// it; 1 (single calls) while any of them takes no batches, or none is live.
func (r *Registry) BatchSize(groupID int64) int {
	now := time.Now()
	rank, nodes := r.where()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	if g := r.groups[groupID]; g != nil {
		for _, in := range g.list {
			if in.ExecutorURL == "" {
				continue
			}
			m := in.maxBatch(now)
			if in.Capacity > 0 {
				// A batch takes a slot per task: no more than this node's part at once.
				m = min(m, slots(in.Capacity, rank, nodes))
			}
			if n == 0 || m < n {
				n = m
			}
		}
	}
	return max(n, 1)
}

// maxBatch is the tasks one call may carry to the instance now.
func (in *instance) maxBatch(now time.Time) int {
	if now.Before(in.singlesUntil) {
		return 1
	}
	return in.MaxBatch
}

// singlesFor is how long an instance that refused a batch as too large gets single calls only,
// before a batch is tried again.
const singlesFor = time.Minute

// RefusedBatch notes that the instance refused a batch as too large: it gets single calls
// only for a while (singlesFor). It reports whether it had not been noted already, so that the
// refusal is logged once per while.
func (r *Registry) RefusedBatch(id string) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	in, ok := r.byID[id]
	if !ok {
		return false
	}
	first := !now.Before(in.singlesUntil)
	in.singlesUntil = now.Add(singlesFor)
	return first
}

// where is this node's rank among the nodes and how many they are.
func (r *Registry) where() (rank, nodes int) {
	if r.place == nil {
		return 0, 1
	}
	rank, nodes = r.place()
	return rank, max(nodes, 1)
}

// Lease is an instance picked for one call. Its holder must call Done.
type Lease struct {
	r    *Registry
	inst *instance
	// Instance is the picked instance.
	Instance retry.Instance
}

// Pick chooses an instance of the group by the routing strategy, skipping the excluded ids,
// the instances at capacity, and those that recently answered busy or could not be reached.
func (r *Registry) Pick(groupID int64, routing retry.Routing, key string, exclude map[string]bool) (*Lease, error) {
	now := time.Now()
	rank, nodes := r.where()
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.groups[groupID]
	if g == nil {
		return nil, ErrNoInstance
	}
	var cands []*instance
	reachable, full := 0, false
	for _, in := range g.list {
		if in.ExecutorURL == "" || exclude[in.ID] || now.Before(in.downUntil) {
			continue
		}
		reachable++
		if now.Before(in.busyUntil) {
			continue
		}
		if in.Capacity > 0 && in.inflight >= slots(in.Capacity, rank, nodes) {
			full = true
			continue
		}
		cands = append(cands, in)
	}
	if reachable == 0 {
		return nil, ErrNoInstance
	}
	if len(cands) == 0 {
		if full {
			return nil, ErrFull
		}
		return nil, ErrBusy
	}
	var pick *instance
	switch routing {
	case retry.Random:
		pick = cands[rand.IntN(len(cands))]
	case retry.ConsistentHash:
		// Rendezvous hashing: the key goes to the instance that scores highest with it, so
		// instances joining or leaving move only their own share of keys.
		var best uint64
		for _, in := range cands {
			h := fnv.New64a()
			h.Write([]byte(in.ID))
			h.Write([]byte{0})
			h.Write([]byte(key))
			if s := mix(h.Sum64()); pick == nil || s > best {
				pick, best = in, s
			}
		}
	case retry.LeastRecentlyUsed:
		for _, in := range cands {
			if pick == nil || in.lastUsed.Before(pick.lastUsed) {
				pick = in
			}
		}
	default:
		pick = cands[g.next%uint64(len(cands))]
		g.next++
	}
	pick.inflight++
	pick.lastUsed = now
	lease := &Lease{r: r, inst: pick, Instance: pick.Instance}
	lease.Instance.MaxBatch = pick.maxBatch(now)
	return lease, nil
}

// slots is the part of an instance's capacity the node of that rank among nodes fills: the
// capacity split evenly, the first capacity % nodes ranks taking one more, so that the parts
// add up to the capacity; but at least one slot, so that every node makes progress (with fewer
// slots than nodes, the instance may then get a call more than it takes per extra node).
func slots(capacity, rank, nodes int) int {
	n := capacity / nodes
	if rank < capacity%nodes {
		n++
	}
	return max(n, 1)
}

// Freed returns a channel closed when a call next ends (a lease is done), freeing a slot: a
// caller that got ErrFull takes it before its Pick and waits on it.
func (r *Registry) Freed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.freed
}

// Done ends the call. busyFor and downFor, when positive, keep the instance out of picks for
// that long: after a "busy" answer, and after the instance could not be reached.
func (l *Lease) Done(busyFor, downFor time.Duration) {
	l.r.mu.Lock()
	defer l.r.mu.Unlock()
	l.doneLocked(time.Now(), busyFor, downFor)
	l.r.wakeLocked()
}

// DoneAll ends the calls of leases (of one registry) at once, as Done each, waking those
// waiting for a slot once.
func DoneAll(leases []*Lease, busyFor, downFor time.Duration) {
	if len(leases) == 0 {
		return
	}
	r := leases[0].r
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for _, l := range leases {
		l.doneLocked(now, busyFor, downFor)
	}
	r.wakeLocked()
}

func (l *Lease) doneLocked(now time.Time, busyFor, downFor time.Duration) {
	l.inst.inflight--
	if busyFor > 0 {
		l.inst.busyUntil = now.Add(busyFor)
	}
	if downFor > 0 {
		l.inst.downUntil = now.Add(downFor)
	}
}

// wakeLocked wakes those waiting for a slot (Freed).
func (r *Registry) wakeLocked() {
	close(r.freed)
	r.freed = make(chan struct{})
}

// mix spreads FNV's output over all 64 bits (the splitmix64 finalizer). FNV-1a alone leaves
// the high bits to the instance id and the low bits to the key's last bytes, so comparing raw
// sums sent most keys to one instance.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
