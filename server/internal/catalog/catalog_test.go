package catalog

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

func TestCatalogCachesForItsTTLAndThenSeesEdits(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		ns, _ := s.CreateNamespace(ctx, retry.Namespace{Name: "shop", Enabled: true})
		g, err := s.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "orders", Token: "0123456789abcdef0123", Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		sc, err := s.CreateScene(ctx, retry.DefaultScene(g.ID, "notify"))
		if err != nil {
			t.Fatal(err)
		}
		c := New(s, time.Hour)
		now := time.Now()
		c.now = func() time.Time { return now }

		got, err := c.SceneByName(ctx, g.ID, "notify")
		if err != nil || got.ID != sc.ID || got.Policies.Replay == nil {
			t.Fatalf("scene: %+v %v", got, err)
		}
		gs, err := c.GroupScenes(ctx, g.ID)
		if err != nil || len(gs.Scenes) != 1 {
			t.Fatalf("group scenes: %+v %v", gs, err)
		}
		// An unknown group is remembered as unknown.
		if _, err := c.GroupByName(ctx, "shop", "payments"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown group: %v", err)
		}
		pg, _ := s.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "payments", Token: "0123456789abcdef0123", Enabled: true})

		// An edit is not seen while the entry lives…
		sc.MaxAttempts = 9
		if _, err := s.UpdateScene(ctx, sc); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.SceneByName(ctx, g.ID, "notify"); got.MaxAttempts == 9 {
			t.Fatal("the cache did not cache")
		}
		if _, err := c.GroupByName(ctx, "shop", "payments"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatal("a not-found answer was not cached")
		}
		// …and is once it has expired: the first lookup after it still answers at once, with
		// the old value, while a refresh runs in the background.
		now = now.Add(2 * time.Hour)
		eventually(t, "the edit", func() bool {
			got, _ := c.SceneByName(ctx, g.ID, "notify")
			return got.MaxAttempts == 9
		})
		eventually(t, "the new group", func() bool {
			got, err := c.GroupByName(ctx, "shop", "payments")
			return err == nil && got.ID == pg.ID
		})
		eventually(t, "the scene list", func() bool {
			gs2, _ := c.GroupScenes(ctx, g.ID)
			return gs2.ETag != gs.ETag
		})
		// Auto-creation is visible at once on this node.
		created, err := c.EnsureScene(ctx, g.ID, "refund")
		if err != nil || created.Name != "refund" {
			t.Fatalf("ensure: %+v %v", created, err)
		}
		if gs3, _ := c.GroupScenes(ctx, g.ID); len(gs3.Scenes) != 2 {
			t.Fatalf("group scenes after auto-creation: %d", len(gs3.Scenes))
		}
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentLookupsShareOneLoad(t *testing.T) {
	s := storagetest.Open(t, storagetest.SQLite(t))
	ctx := context.Background()
	ns, _ := s.CreateNamespace(ctx, retry.Namespace{Name: "shop", Enabled: true})
	g, _ := s.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "orders", Token: "0123456789abcdef0123", Enabled: true})
	sc, _ := s.CreateScene(ctx, retry.DefaultScene(g.ID, "notify"))
	c := New(s, time.Hour)
	var loads atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.mu.Lock()
			m := c.scenesByID
			c.mu.Unlock()
			got, err := cached(ctx, c, m, sc.ID, func(ctx context.Context) (*Scene, error) {
				loads.Add(1)
				time.Sleep(20 * time.Millisecond)
				return compiled(s.Scene(ctx, sc.ID))
			})
			if err != nil || got.ID != sc.ID {
				t.Errorf("lookup: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads for 50 concurrent lookups, want 1", n)
	}
}

// FreshScene and FreshGroup serve a live entry from the cache, but read an expired one again
// before answering, where Scene and Group would serve it while it refreshes.
func TestFreshLookupsReadAnExpiredEntryFirst(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		g := testkit.NewGroup(t, s, "shop", "0123456789abcdef0123")
		paused := retry.DefaultScene(g.ID, "notify")
		paused.Enabled = false
		sc, err := s.CreateScene(ctx, paused)
		if err != nil {
			t.Fatal(err)
		}
		c := New(s, time.Hour)
		now := time.Now()
		c.now = func() time.Time { return now }
		if got, err := c.Scene(ctx, sc.ID); err != nil || got.Enabled {
			t.Fatalf("scene: %+v %v", got, err)
		}
		if got, err := c.Group(ctx, g.ID); err != nil || !got.Active() {
			t.Fatalf("group: %+v %v", got, err)
		}
		sc.Enabled = true
		if _, err := s.UpdateScene(ctx, sc); err != nil {
			t.Fatal(err)
		}
		g.Enabled = false
		if err := s.UpdateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		// While the entries live, even a fresh lookup answers from the cache.
		if got, _ := c.FreshScene(ctx, sc.ID); got.Enabled {
			t.Fatal("a fresh lookup of a live entry went to the database")
		}
		now = now.Add(2 * time.Hour)
		if got, err := c.FreshScene(ctx, sc.ID); err != nil || !got.Enabled {
			t.Fatalf("a fresh lookup of an expired entry answered %+v %v, want the edit", got, err)
		}
		if got, err := c.FreshGroup(ctx, g.ID); err != nil || got.Active() {
			t.Fatalf("a fresh lookup of an expired group answered %+v %v, want it disabled", got, err)
		}
		// The entry read again lives on: the plain lookup now serves it too.
		if got, _ := c.Scene(ctx, sc.ID); !got.Enabled {
			t.Fatal("the entry a fresh lookup read was not kept")
		}
	})
}
