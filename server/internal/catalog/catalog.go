// Package catalog caches groups and scenes for the hot paths: every client request needs its
// group's token, every report and every replay its scene's policy. Entries live for a short
// time-to-live and are then refreshed in the background, so an edit made on any node reaches
// every node within about that time, and unknown names are cached too, so a flood of requests
// for a group that does not exist never reaches the database.
package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
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

type entry[T any] struct {
	val     T
	err     error
	expires time.Time
	// loading is open while the entry's first load runs; callers wait on it.
	loading chan struct{}
	// refreshing says a background load of an expired entry runs.
	refreshing bool
}

// Catalog is the cache. It is safe for concurrent use.
type Catalog struct {
	store *storage.Store
	ttl   time.Duration
	now   func() time.Time

	mu           sync.Mutex
	groupsByName map[[2]string]*entry[retry.Group]
	groupsByID   map[int64]*entry[retry.Group]
	scenesByID   map[int64]*entry[*Scene]
	scenesByName map[sceneKey]*entry[*Scene]
	groupScenes  map[int64]*entry[*GroupScenes]
}

type sceneKey struct {
	group int64
	name  string
}

// New returns a catalog whose entries live for ttl.
func New(store *storage.Store, ttl time.Duration) *Catalog {
	c := &Catalog{store: store, ttl: ttl, now: time.Now}
	c.Invalidate()
	return c
}

// Invalidate forgets every entry; a node calls it after changing the catalog itself.
func (c *Catalog) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groupsByName = map[[2]string]*entry[retry.Group]{}
	c.groupsByID = map[int64]*entry[retry.Group]{}
	c.scenesByID = map[int64]*entry[*Scene]{}
	c.scenesByName = map[sceneKey]*entry[*Scene]{}
	c.groupScenes = map[int64]*entry[*GroupScenes]{}
}

// refreshTimeout bounds a background refresh.
const refreshTimeout = 10 * time.Second

// cached looks key up in m. The first lookup loads it, and concurrent lookups wait for that
// one load. Once the entry has expired, lookups go on getting it while one load in the
// background refreshes it: hundreds of dispatch workers never query the database for the same
// scene at once. A load that failed for a reason other than "not found" is not kept.
func cached[K comparable, V any](ctx context.Context, c *Catalog, m map[K]*entry[V], key K, load func(context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	e := m[key]
	switch {
	case e == nil:
		e = &entry[V]{loading: make(chan struct{})}
		m[key] = e
		c.mu.Unlock()
		// Others wait on this load: the caller giving up must not fail them too.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		v, err := load(lctx)
		cancel()
		c.mu.Lock()
		e.val, e.err, e.expires = v, err, c.now().Add(c.ttl)
		if err != nil && !errors.Is(err, storage.ErrNotFound) && m[key] == e {
			delete(m, key)
		}
		close(e.loading)
		e.loading = nil
		c.mu.Unlock()
		return v, err
	case e.loading != nil:
		wait := e.loading
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return e.val, e.err
	}
	defer c.mu.Unlock()
	if !c.now().Before(e.expires) && !e.refreshing {
		e.refreshing = true
		go func() {
			rctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
			defer cancel()
			v, err := load(rctx)
			c.mu.Lock()
			defer c.mu.Unlock()
			e.refreshing = false
			if err == nil || errors.Is(err, storage.ErrNotFound) {
				e.val, e.err, e.expires = v, err, c.now().Add(c.ttl)
			}
		}()
	}
	return e.val, e.err
}

// fresh is cached, except that an expired entry is loaded again before it is returned (one
// load at a time; the others wait for it) instead of being served while it refreshes. If that
// load fails, the expired entry is returned.
func fresh[K comparable, V any](ctx context.Context, c *Catalog, m map[K]*entry[V], key K, load func(context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	e := m[key]
	if e == nil || e.loading != nil || c.now().Before(e.expires) {
		c.mu.Unlock()
		return cached(ctx, c, m, key, load)
	}
	done := make(chan struct{})
	e.loading = done
	c.mu.Unlock()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	v, err := load(lctx)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil || errors.Is(err, storage.ErrNotFound) {
		e.val, e.err, e.expires = v, err, c.now().Add(c.ttl)
	}
	e.loading = nil
	close(done)
	return e.val, e.err
}

// GroupByName returns the group of that namespace and name.
func (c *Catalog) GroupByName(ctx context.Context, namespace, name string) (retry.Group, error) {
	c.mu.Lock()
	m := c.groupsByName
	c.mu.Unlock()
	return cached(ctx, c, m, [2]string{namespace, name}, func(ctx context.Context) (retry.Group, error) {
		return c.store.GroupByName(ctx, namespace, name)
	})
}

// Group returns the group with that id.
func (c *Catalog) Group(ctx context.Context, id int64) (retry.Group, error) {
	c.mu.Lock()
	m := c.groupsByID
	c.mu.Unlock()
	return cached(ctx, c, m, id, func(ctx context.Context) (retry.Group, error) { return c.store.Group(ctx, id) })
}

// FreshGroup is Group, but an expired entry is read again first rather than served while it
// refreshes: for decisions that are costly to get wrong on an old view.
func (c *Catalog) FreshGroup(ctx context.Context, id int64) (retry.Group, error) {
	c.mu.Lock()
	m := c.groupsByID
	c.mu.Unlock()
	return fresh(ctx, c, m, id, func(ctx context.Context) (retry.Group, error) { return c.store.Group(ctx, id) })
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
	c.mu.Lock()
	m := c.scenesByID
	c.mu.Unlock()
	return cached(ctx, c, m, id, func(ctx context.Context) (*Scene, error) { return compiled(c.store.Scene(ctx, id)) })
}

// FreshScene is Scene, but an expired entry is read again first rather than served while it
// refreshes.
func (c *Catalog) FreshScene(ctx context.Context, id int64) (*Scene, error) {
	c.mu.Lock()
	m := c.scenesByID
	c.mu.Unlock()
	return fresh(ctx, c, m, id, func(ctx context.Context) (*Scene, error) { return compiled(c.store.Scene(ctx, id)) })
}

// SceneByName returns the group's scene of that name.
func (c *Catalog) SceneByName(ctx context.Context, groupID int64, name string) (*Scene, error) {
	c.mu.Lock()
	m := c.scenesByName
	c.mu.Unlock()
	return cached(ctx, c, m, sceneKey{groupID, name}, func(ctx context.Context) (*Scene, error) {
		return compiled(c.store.SceneByName(ctx, groupID, name))
	})
}

// EnsureScene returns the group's scene of that name, creating it with the default policy
// when it does not exist.
func (c *Catalog) EnsureScene(ctx context.Context, groupID int64, name string) (*Scene, error) {
	return c.EnsureSceneFrom(ctx, retry.DefaultScene(groupID, name))
}

// EnsureSceneFrom returns def's group's scene of def's name, creating it as def when it does
// not exist. An existing scene is returned as it is.
func (c *Catalog) EnsureSceneFrom(ctx context.Context, def retry.Scene) (*Scene, error) {
	groupID, name := def.GroupID, def.Name
	sc, err := c.SceneByName(ctx, groupID, name)
	if !errors.Is(err, storage.ErrNotFound) {
		return sc, err
	}
	created, err := compiled(c.store.EnsureScene(ctx, def))
	if err != nil {
		return nil, fmt.Errorf("create scene %q: %w", name, err)
	}
	c.mu.Lock()
	exp := c.now().Add(c.ttl)
	c.scenesByName[sceneKey{groupID, name}] = &entry[*Scene]{val: created, expires: exp}
	c.scenesByID[created.ID] = &entry[*Scene]{val: created, expires: exp}
	delete(c.groupScenes, groupID)
	c.mu.Unlock()
	return created, nil
}

// GroupScenes returns the group's scenes and their ETag.
func (c *Catalog) GroupScenes(ctx context.Context, groupID int64) (*GroupScenes, error) {
	c.mu.Lock()
	m := c.groupScenes
	c.mu.Unlock()
	return cached(ctx, c, m, groupID, func(ctx context.Context) (*GroupScenes, error) {
		scenes, err := c.store.ListScenes(ctx, groupID)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		for _, sc := range scenes {
			h.Write([]byte(strconv.FormatInt(sc.ID, 10) + ":" + strconv.FormatInt(sc.Version, 10) + ";"))
		}
		return &GroupScenes{Scenes: scenes, ETag: `"` + hex.EncodeToString(h.Sum(nil)[:12]) + `"`}, nil
	})
}
