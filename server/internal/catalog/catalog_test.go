package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "0123456789abcdef0123"

// clock is a test's time, safe to move while the background refresh reads it.
type clock struct{ ns atomic.Int64 }

func newClock(c *Catalog) *clock {
	k := &clock{}
	k.ns.Store(time.Now().UnixNano())
	c.now = k.now
	return k
}

func (k *clock) now() time.Time      { return time.Unix(0, k.ns.Load()) }
func (k *clock) add(d time.Duration) { k.ns.Add(int64(d)) }
func newCatalog(s *storage.Store, ttl time.Duration, t *testing.T) *Catalog {
	return New(Params{Store: s, TTL: ttl, Log: testkit.Logger(t)})
}

// No lookup answers from an entry older than the TTL, however long the catalog stood unused:
// the first lookup after it reads the database. Before, an expired entry was served once more
// (while it refreshed in the background), so after a quiet moment a back-off edit, a paused
// scene, a disabled group or a rotated token was ignored once more on every node.
func TestLookupsNeverAnswerPastTheTTL(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		g := testkit.NewGroup(t, s, storagetest.RandomName("ns"), token)
		sc, err := s.CreateScene(ctx, retry.DefaultScene(g.ID, "notify"))
		if err != nil {
			t.Fatal(err)
		}
		c := newCatalog(s, time.Second, t)
		k := newClock(c)
		lookAll := func() (*Scene, *Scene, retry.Group, retry.Group, *GroupScenes) {
			t.Helper()
			byID, err1 := c.Scene(ctx, sc.ID)
			byName, err2 := c.SceneByName(ctx, g.ID, "notify")
			group, err3 := c.Group(ctx, g.ID)
			named, err4 := c.GroupByName(ctx, g.Namespace, g.Name)
			list, err5 := c.GroupScenes(ctx, g.ID)
			if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
				t.Fatal(err)
			}
			return byID, byName, group, named, list
		}
		_, _, _, _, list := lookAll()

		sc.Enabled = false
		sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
		if _, err := s.UpdateScene(ctx, sc); err != nil {
			t.Fatal(err)
		}
		g.Enabled = false
		g.Token = "rotated-token-0123456789"
		if err := s.UpdateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		// Within the TTL the entries answer…
		k.add(999 * time.Millisecond)
		byID, byName, group, named, _ := lookAll()
		if !byID.Enabled || !byName.Enabled || !group.Enabled || named.Token != token {
			t.Fatal("a lookup within the TTL went to the database")
		}
		// …and the first lookup past it, however long after, sees every edit.
		k.add(time.Hour)
		byID, byName, group, named, list2 := lookAll()
		if byID.Enabled || byName.Enabled {
			t.Error("a paused scene was answered enabled past the TTL")
		}
		if d := byID.Policies.Replay.Delay(1); d != time.Hour {
			t.Errorf("the back-off edit was not seen past the TTL: first step %s", d)
		}
		if group.Enabled || named.Enabled {
			t.Error("a disabled group was answered enabled past the TTL")
		}
		if named.Token != g.Token {
			t.Error("the old token was answered past the TTL")
		}
		if list2.ETag == list.ETag {
			t.Error("the scene list's ETag did not change past the TTL")
		}
	})
}

// A name that does not exist is not cached: lookups of made-up names leave the catalog as it
// was, and a group created after its name was looked up is found at once.
func TestOnlyWhatExistsIsCached(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		g := testkit.NewGroup(t, s, storagetest.RandomName("ns"), token)
		c := newCatalog(s, time.Hour, t)
		if _, err := c.GroupByName(ctx, g.Namespace, g.Name); err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			if _, err := c.GroupByName(ctx, g.Namespace, fmt.Sprintf("made-up-%d", i)); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("made-up group: %v", err)
			}
			if _, err := c.SceneByName(ctx, g.ID, fmt.Sprintf("made-up-%d", i)); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("made-up scene: %v", err)
			}
		}
		if n := c.Len(); n != 1 {
			t.Fatalf("%d entries after 400 lookups of made-up names, want the one group", n)
		}
		pg, err := s.CreateGroup(ctx, retry.Group{NamespaceID: g.NamespaceID, Name: "made-up-7", Token: token, Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.GroupByName(ctx, g.Namespace, "made-up-7"); err != nil || got.ID != pg.ID {
			t.Fatalf("a group created after a lookup of its name: %+v %v", got, err)
		}
		// Auto-creation is visible at once on this node.
		created, err := c.EnsureScene(ctx, g.ID, "refund")
		if err != nil || created.Name != "refund" {
			t.Fatalf("ensure: %+v %v", created, err)
		}
		if gs, err := c.GroupScenes(ctx, g.ID); err != nil || len(gs.Scenes) != 1 {
			t.Fatalf("group scenes after auto-creation: %+v %v", gs, err)
		}
	})
}

// Each map holds at most MaxEntries entries, dropping the least recently used.
func TestMaxEntriesBoundsEachMap(t *testing.T) {
	s := storagetest.Open(t, storagetest.SQLite(t))
	ctx := context.Background()
	g := testkit.NewGroup(t, s, "shop", token)
	var ids []int64
	for i := range 10 {
		sc, err := s.CreateScene(ctx, retry.DefaultScene(g.ID, fmt.Sprintf("scene-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sc.ID)
	}
	c := New(Params{Store: s, TTL: time.Hour, MaxEntries: 3, Log: testkit.Logger(t)})
	k := newClock(c)
	for _, id := range ids[:3] {
		k.add(time.Millisecond)
		if _, err := c.Scene(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	k.add(time.Millisecond)
	c.Scene(ctx, ids[0]) // the first is used again: the second is now the least recently used
	k.add(time.Millisecond)
	c.Scene(ctx, ids[3])
	c.mu.Lock()
	_, first := c.scenesByID.entries[ids[0]]
	_, second := c.scenesByID.entries[ids[1]]
	c.mu.Unlock()
	if !first || second {
		t.Fatalf("kept the first: %v, the second: %v; want the least recently used (the second) dropped", first, second)
	}
	for i, id := range ids {
		if _, err := c.Scene(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SceneByName(ctx, g.ID, fmt.Sprintf("scene-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Len(); n != 6 {
		t.Fatalf("%d entries, want 3 in each of the two maps used", n)
	}
}

// Lookups of a key that needs reading share one read: of a missing entry, and of an expired
// one; hundreds of dispatch workers never query the database for the same scene at once.
func TestConcurrentLookupsShareOneRead(t *testing.T) {
	s := storagetest.Open(t, storagetest.SQLite(t))
	ctx := context.Background()
	g := testkit.NewGroup(t, s, "shop", token)
	sc, err := s.CreateScene(ctx, retry.DefaultScene(g.ID, "notify"))
	if err != nil {
		t.Fatal(err)
	}
	c := newCatalog(s, time.Second, t)
	k := newClock(c)
	var reads atomic.Int32
	release := make(chan struct{})
	load := c.scenesByID.load
	c.scenesByID.load = func(ctx context.Context, id int64) (*Scene, error) {
		reads.Add(1)
		<-release
		return load(ctx, id)
	}
	for round, what := range []string{"a missing entry", "an expired entry"} {
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if got, err := c.Scene(ctx, sc.ID); err != nil || got.ID != sc.ID {
					t.Errorf("lookup: %+v %v", got, err)
				}
			})
		}
		testkit.WaitUntil(t, 5*time.Second, "the first read to start", func() bool { return reads.Load() == int32(round+1) })
		release <- struct{}{}
		wg.Wait()
		if n := reads.Load(); n != int32(round+1) {
			t.Fatalf("%s: %d reads for 50 concurrent lookups, want 1", what, n-int32(round))
		}
		k.add(time.Hour)
	}
}

// While the service runs, an entry looked up past half its TTL is read again in the
// background, so the lookups of an entry in use find it fresh; Stop leaves no goroutine behind
// (TestMain checks), and lookups go on working after it.
func TestBackgroundRefreshKeepsEntriesInUseFresh(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		g := testkit.NewGroup(t, s, storagetest.RandomName("ns"), token)
		sc, err := s.CreateScene(ctx, retry.DefaultScene(g.ID, "notify"))
		if err != nil {
			t.Fatal(err)
		}
		c := newCatalog(s, time.Second, t)
		k := newClock(c)
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); !errors.Is(err, service.ErrStarted) {
			t.Fatalf("a second Start: %v", err)
		}
		if _, err := c.Scene(ctx, sc.ID); err != nil {
			t.Fatal(err)
		}
		sc.MaxAttempts = 9
		if _, err := s.UpdateScene(ctx, sc); err != nil {
			t.Fatal(err)
		}
		k.add(600 * time.Millisecond)
		if got, _ := c.Scene(ctx, sc.ID); got.MaxAttempts == 9 {
			t.Fatal("a lookup within the TTL waited for the database")
		}
		testkit.WaitUntil(t, 5*time.Second, "the background refresh", func() bool {
			got, err := c.Scene(ctx, sc.ID)
			return err == nil && got.MaxAttempts == 9
		})
		c.Stop(ctx)
		c.Stop(ctx)
		k.add(time.Hour)
		if got, err := c.Scene(ctx, sc.ID); err != nil || got.MaxAttempts != 9 {
			t.Fatalf("a lookup after Stop: %+v %v", got, err)
		}
	})
}
