package storage_test

import (
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// Unhold brings a held task back exactly when retry says it may wait again.
func TestUnholdFollowsMayWaitAgain(t *testing.T) {
	tests := []struct {
		name             string
		scene, group, ns bool
		instance         string // "live", "silent" or "" (none)
	}{
		{"all enabled, an instance live", true, true, true, "live"},
		{"scene paused", false, true, true, "live"},
		{"group disabled", true, false, true, "live"},
		{"namespace disabled", true, true, false, "live"},
		{"the only instance silent", true, true, true, "silent"},
		{"no instance", true, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
				ctx := t.Context()
				f := setup(t, s)
				now := time.Now()
				ingest(t, s, f.task("k", now))
				claims := claim(t, s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
					PerBucket: 10, Token: 1, Node: "n", Deadline: now.Add(time.Minute)})
				if len(claims) != 1 {
					t.Fatalf("claimed %d, want 1", len(claims))
				}
				settle(t, s, []retry.Settlement{retry.Hold(&claims[0])}, 1)
				sc, g := f.scene, f.group
				sc.Enabled = tt.scene
				if _, err := s.UpdateScene(ctx, sc); err != nil {
					t.Fatal(err)
				}
				g.Enabled = tt.group
				if err := s.UpdateGroup(ctx, g); err != nil {
					t.Fatal(err)
				}
				ns, err := s.NamespaceByName(ctx, g.Namespace)
				if err != nil {
					t.Fatal(err)
				}
				ns.Enabled = tt.ns
				if err := s.UpdateNamespace(ctx, ns); err != nil {
					t.Fatal(err)
				}
				// The instance's heartbeat is now: live since a minute ago, silent since a minute
				// from now.
				liveSince, live := now.Add(-time.Minute), 0
				switch tt.instance {
				case "live":
					live = 1
				case "silent":
					liveSince = now.Add(time.Minute)
				}
				if tt.instance != "" {
					if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: g.ID, ExecutorURL: "http://i"}, liveSince); err != nil {
						t.Fatal(err)
					}
				}
				if g, err = s.Group(ctx, g.ID); err != nil {
					t.Fatal(err)
				}
				want := retry.MayWaitAgain(tt.scene, g, live)
				n, _, err := s.Unhold(ctx, liveSince, 100)
				if err != nil {
					t.Fatal(err)
				}
				state := testkit.Task(t, s, claims[0].TaskID).State
				if (n == 1) != want || (state == retry.Waiting) != want || (state == retry.Held) == want {
					t.Fatalf("unhold brought back %d, the task is %s; retry says it may wait again: %v", n, state, want)
				}
			})
		})
	}
}
