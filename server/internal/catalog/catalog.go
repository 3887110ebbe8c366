// Package catalog caches groups and scenes for the hot paths: every client request needs its
// group's token, every report and every replay its scene's policy.
//
// No lookup answers from an entry read from the database longer ago than the TTL: past it, the
// entry is read again before the lookup answers, one read shared by every lookup of the same key
// that comes meanwhile. So an edit made on any node (a back-off, a disabled group or namespace,
// a paused scene, a rotated token) is obeyed by every node within the TTL. While the catalog's
// service runs, an entry looked up after half its TTL is read again in the background, so
// lookups of the entries in use seldom wait for the database.
//
// Only what exists is cached: a name that is not found is looked up again next time (lookups
// at the same moment still share one read), so requests naming made-up groups leave nothing
// behind. Each of the catalog's maps holds at most MaxEntries entries; a full map drops the
// least recently used of a few entries it samples.
package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Scene is a cached scene with its compiled back-offs.
type Scene struct {
	retry.Scene
	Policies retry.Policies
}

// GroupScenes is a group's scenes as clients fetch them, with an ETag that changes whenever
// any of them does.
type GroupScenes struct {
	Scenes []retry.Scene
	ETag   string
}

// DefaultMaxEntries is the entries each map holds when Params.MaxEntries is zero.
const DefaultMaxEntries = 10000

// Params configure a Catalog.
type Params struct {
	Store *storage.Store
	// TTL is the most time between reading an entry from the database and answering a lookup
	// from it. Zero reads the database for every lookup (lookups at the same moment share one
	// read).
	TTL time.Duration
	// MaxEntries bounds each of the catalog's maps; zero means DefaultMaxEntries.
	MaxEntries int
	Log        *slog.Logger
}

const (
	// loadTimeout bounds one read of an entry.
	loadTimeout = 10 * time.Second
	// refreshQueue bounds the background refreshes waiting; past it, entries are read when a
	// lookup finds them expired.
	refreshQueue = 1024
	// evictSample is how many entries a full map looks at to pick the one it drops.
	evictSample = 8
)

type entry[V any] struct {
	val V
	// loaded is when the read that gave val started: the view is no older than that.
	loaded time.Time
	// used is the last lookup that answered from the entry.
	used time.Time
	// queued says a background refresh of the entry is queued or running.
	queued bool
}

// call is one read of a key; the lookups that come while it runs wait for it.
type call[V any] struct {
	done chan struct{}
	val  V
	err  error
}

type table[K comparable, V any] struct {
	entries map[K]*entry[V]
	calls   map[K]*call[V]
	load    func(context.Context, K) (V, error)
}

func newTable[K comparable, V any](load func(context.Context, K) (V, error)) *table[K, V] {
	return &table[K, V]{entries: map[K]*entry[V]{}, calls: map[K]*call[V]{}, load: load}
}

func (t *table[K, V]) reset() {
	t.entries = map[K]*entry[V]{}
	t.calls = map[K]*call[V]{}
}

// Catalog is the cache. It is safe for concurrent use. Its Start and Stop run the background
// refresh; without them it works the same, reading expired entries when they are looked up.
type Catalog struct {
	p   Params
	now func() time.Time

	mu sync.Mutex
	// gen counts Invalidate calls: a read that started before one is not kept.
	gen          uint64
	groupsByName *table[[2]string, retry.Group]
	groupsByID   *table[int64, retry.Group]
	scenesByID   *table[int64, *Scene]
	scenesByName *table[sceneKey, *Scene]
	groupScenes  *table[int64, *GroupScenes]

	// The background refresh, while the service runs.
	jobs   chan func(context.Context)
	cancel context.CancelFunc
	done   chan struct{}
}

var _ service.Service = (*Catalog)(nil)

type sceneKey struct {
	group int64
	name  string
}

// New returns a catalog over p.Store.
func New(p Params) *Catalog {
	if p.MaxEntries <= 0 {
		p.MaxEntries = DefaultMaxEntries
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	c := &Catalog{p: p, now: time.Now}
	s := p.Store
	c.groupsByName = newTable(func(ctx context.Context, k [2]string) (retry.Group, error) {
		return s.GroupByName(ctx, k[0], k[1])
	})
	c.groupsByID = newTable(s.Group)
	c.scenesByID = newTable(func(ctx context.Context, id int64) (*Scene, error) { return compiled(s.Scene(ctx, id)) })
	c.scenesByName = newTable(func(ctx context.Context, k sceneKey) (*Scene, error) {
		return compiled(s.SceneByName(ctx, k.group, k.name))
	})
	c.groupScenes = newTable(func(ctx context.Context, groupID int64) (*GroupScenes, error) {
		scenes, err := s.ListScenes(ctx, groupID)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		for _, sc := range scenes {
			h.Write([]byte(strconv.FormatInt(sc.ID, 10) + ":" + strconv.FormatInt(sc.Version, 10) + ";"))
		}
		return &GroupScenes{Scenes: scenes, ETag: `"` + hex.EncodeToString(h.Sum(nil)[:12]) + `"`}, nil
	})
	return c
}

// Start runs the background refresh until Stop.
func (c *Catalog) Start(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return service.ErrStarted
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.jobs, c.cancel, c.done = make(chan func(context.Context), refreshQueue), cancel, make(chan struct{})
	go c.refresher(ctx, c.jobs, c.done)
	return nil
}

// Stop ends the background refresh, cancelling a read in progress, and waits within ctx for its
// goroutine to return. Lookups go on working, each reading what has expired.
func (c *Catalog) Stop(ctx context.Context) {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.jobs, c.cancel, c.done = nil, nil, nil
	c.mu.Unlock()
	if done == nil {
		return
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		c.p.Log.Warn("catalog: stop timed out waiting for a refresh to end")
	}
}

func (c *Catalog) refresher(ctx context.Context, jobs <-chan func(context.Context), done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-jobs:
			job(ctx)
		}
	}
}

// Invalidate forgets every entry, and the reads in progress; a node calls it after changing
// the catalog itself.
func (c *Catalog) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.groupsByName.reset()
	c.groupsByID.reset()
	c.scenesByID.reset()
	c.scenesByName.reset()
	c.groupScenes.reset()
}

// Len is the number of entries cached, in all maps.
func (c *Catalog) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.groupsByName.entries) + len(c.groupsByID.entries) + len(c.scenesByID.entries) +
		len(c.scenesByName.entries) + len(c.groupScenes.entries)
}

// lookup answers key from t: from its entry while the entry is younger than the TTL (queueing a
// background refresh once it is past half of it), otherwise from a read of the database that
// concurrent lookups of the key share. Only a value that was found is kept.
func lookup[K comparable, V any](ctx context.Context, c *Catalog, t *table[K, V], key K) (V, error) {
	c.mu.Lock()
	now := c.now()
	if e := t.entries[key]; e != nil && now.Sub(e.loaded) < c.p.TTL {
		e.used = now
		if c.jobs != nil && !e.queued && now.Sub(e.loaded) >= c.p.TTL/2 {
			select {
			case c.jobs <- func(ctx context.Context) { refresh(ctx, c, t, key) }:
				e.queued = true
			default: // the queue is full: a lookup reads the entry once it expires
			}
		}
		v := e.val
		c.mu.Unlock()
		return v, nil
	}
	cl, leader := t.calls[key], false
	if cl == nil {
		cl, leader = &call[V]{done: make(chan struct{})}, true
		t.calls[key] = cl
	}
	gen := c.gen
	c.mu.Unlock()
	if leader {
		// Others may wait on this read: the caller giving up must not fail them too.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		read(lctx, c, t, key, cl, gen)
		cancel()
		return cl.val, cl.err
	}
	select {
	case <-cl.done:
		return cl.val, cl.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// refresh reads key again in the background, unless a read of it runs already.
func refresh[K comparable, V any](ctx context.Context, c *Catalog, t *table[K, V], key K) {
	c.mu.Lock()
	if _, running := t.calls[key]; running {
		c.mu.Unlock()
		return
	}
	cl := &call[V]{done: make(chan struct{})}
	t.calls[key] = cl
	gen := c.gen
	c.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	read(lctx, c, t, key, cl, gen)
}

// read runs cl, the read of key, and keeps what it found unless Invalidate came meanwhile.
func read[K comparable, V any](ctx context.Context, c *Catalog, t *table[K, V], key K, cl *call[V], gen uint64) {
	started := c.now()
	v, err := t.load(ctx, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.calls[key] == cl {
		delete(t.calls, key)
	}
	cl.val, cl.err = v, err
	close(cl.done)
	if gen != c.gen {
		return
	}
	switch e := t.entries[key]; {
	case err == nil:
		put(c, t, key, v, started)
	case errors.Is(err, storage.ErrNotFound):
		delete(t.entries, key)
	case e != nil:
		// A failed read leaves the entry to expire; a later lookup tries again.
		e.queued = false
	}
}

// put keeps v for key, read at loaded; c.mu is held.
func put[K comparable, V any](c *Catalog, t *table[K, V], key K, v V, loaded time.Time) {
	if e := t.entries[key]; e != nil {
		if !loaded.Before(e.loaded) { // never replace a view with an older one
			e.val, e.loaded = v, loaded
		}
		e.queued = false
		return
	}
	if len(t.entries) >= c.p.MaxEntries {
		var victim K
		var oldest *entry[V]
		n := 0
		for k, e := range t.entries { // a map's iteration starts at a random entry
			if oldest == nil || e.used.Before(oldest.used) {
				victim, oldest = k, e
			}
			if n++; n == evictSample {
				break
			}
		}
		delete(t.entries, victim)
	}
	t.entries[key] = &entry[V]{val: v, loaded: loaded, used: loaded}
}

// GroupByName returns the group of that namespace and name.
func (c *Catalog) GroupByName(ctx context.Context, namespace, name string) (retry.Group, error) {
	return lookup(ctx, c, c.groupsByName, [2]string{namespace, name})
}

// Group returns the group with that id.
func (c *Catalog) Group(ctx context.Context, id int64) (retry.Group, error) {
	return lookup(ctx, c, c.groupsByID, id)
}

func compiled(sc retry.Scene, err error) (*Scene, error) {
	if err != nil {
		return nil, err
	}
	p, err := sc.Compile()
	if err != nil {
		return nil, err
	}
	return &Scene{Scene: sc, Policies: p}, nil
}

// Scene returns the scene with that id.
func (c *Catalog) Scene(ctx context.Context, id int64) (*Scene, error) {
	return lookup(ctx, c, c.scenesByID, id)
}

// SceneByName returns the group's scene of that name.
func (c *Catalog) SceneByName(ctx context.Context, groupID int64, name string) (*Scene, error) {
	return lookup(ctx, c, c.scenesByName, sceneKey{groupID, name})
}

// EnsureScene returns the group's scene of that name, creating it with the default policy
// when it does not exist.
func (c *Catalog) EnsureScene(ctx context.Context, groupID int64, name string) (*Scene, error) {
	return c.EnsureSceneFrom(ctx, retry.DefaultScene(groupID, name))
}

// EnsureSceneFrom returns def's group's scene of def's name, creating it as def when it does
// not exist. An existing scene is returned as it is. A created scene is visible at once on this
// node.
func (c *Catalog) EnsureSceneFrom(ctx context.Context, def retry.Scene) (*Scene, error) {
	groupID, name := def.GroupID, def.Name
	sc, err := c.SceneByName(ctx, groupID, name)
	if !errors.Is(err, storage.ErrNotFound) {
		return sc, err
	}
	started := c.now()
	created, err := compiled(c.p.Store.EnsureScene(ctx, def))
	if err != nil {
		return nil, fmt.Errorf("create scene %q: %w", name, err)
	}
	c.mu.Lock()
	put(c, c.scenesByName, sceneKey{groupID, name}, created, started)
	put(c, c.scenesByID, created.ID, created, started)
	delete(c.groupScenes.entries, groupID)
	c.mu.Unlock()
	return created, nil
}

// GroupScenes returns the group's scenes and their ETag.
func (c *Catalog) GroupScenes(ctx context.Context, groupID int64) (*GroupScenes, error) {
	return lookup(ctx, c, c.groupScenes, groupID)
}
