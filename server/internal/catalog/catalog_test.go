package catalog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
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
		// …and is once it has expired.
		now = now.Add(2 * time.Hour)
		if got, _ := c.SceneByName(ctx, g.ID, "notify"); got.MaxAttempts != 9 {
			t.Fatalf("edit not seen after the TTL: %d", got.MaxAttempts)
		}
		if got, err := c.GroupByName(ctx, "shop", "payments"); err != nil || got.ID != pg.ID {
			t.Fatalf("new group not seen after the TTL: %v", err)
		}
		gs2, _ := c.GroupScenes(ctx, g.ID)
		if gs2.ETag == gs.ETag {
			t.Fatal("the ETag did not change with the scene")
		}
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
