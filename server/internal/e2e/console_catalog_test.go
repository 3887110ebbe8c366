package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// consoleTwoNodes starts nodes A and B with the catalog's short lifetime, a world on A, and
// a console session of admin.
func consoleTwoNodes(t *testing.T, target storagetest.Target) (a, b *app.App, w *world, admin string) {
	t.Helper()
	cfg := testConfig(target)
	cfg.Catalog.TTL = catalogTTL
	cfg.Bootstrap.AdminPassword = "first-admin-password"
	a = startNode(t, cfg, "node-a")
	b = startNode(t, cfg, "node-b")
	return a, b, newWorld(t, a, 3, nil), consoleLogin(t, a, "admin", "first-admin-password")
}

// rotate rotates the world's group token through node's console API and returns the new token
// and until when the old one is accepted (zero: not at all).
func rotate(t *testing.T, node *app.App, admin string, groupID int64, grace string) (string, time.Time) {
	t.Helper()
	status, body := console(t, node, http.MethodPost, fmt.Sprintf("%s/groups/%d/rotate-token", consoleapi.Prefix, groupID), admin,
		map[string]string{"grace": grace})
	if status != http.StatusOK {
		t.Fatalf("rotate: %d %s", status, body)
	}
	var out struct {
		Token          string     `json:"token"`
		PrevTokenUntil *time.Time `json:"prev_token_until"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
		t.Fatalf("rotate answer %s: %v", body, err)
	}
	if out.PrevTokenUntil == nil {
		return out.Token, time.Time{}
	}
	return out.Token, *out.PrevTokenUntil
}

// A token rotated through node A's console with a grace period: within the catalog's lifetime
// node B accepts the new token, and accepts the old one until the grace ends, then refuses it
// (401). A rotation without grace makes every node refuse the replaced token.
func TestRotatedTokenGraceOnEveryNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		a, b, w, admin := consoleTwoNodes(t, target)
		wb := w.on(b)
		if status, body := wb.call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusOK {
			t.Fatalf("scenes: %d %s", status, body)
		}
		const grace = 3 * time.Second
		rotated := time.Now()
		newToken, until := rotate(t, a, admin, w.group.ID, grace.String())
		if until.IsZero() || until.Before(rotated) {
			t.Fatalf("prev_token_until %v", until)
		}
		ttlPassed(t, rotated)
		old, cur := w.group, w.group
		cur.Token = newToken
		for _, n := range []*app.App{a, b} {
			if status, body := (&world{t: t, node: n, group: cur}).call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusOK {
				t.Fatalf("%s answered the new token %d %s", n.NodeID, status, body)
			}
			// The old token is accepted while the grace lasts (the check is skipped if this slow
			// machine let it pass already).
			sent := time.Now()
			status, body := (&world{t: t, node: n, group: old}).call(http.MethodGet, protocol.PathScenes, nil)
			if sent.Before(until) && time.Now().Before(until) && status != http.StatusOK {
				t.Fatalf("%s answered the old token within its grace %d %s", n.NodeID, status, body)
			}
		}
		testkit.WaitUntil(t, grace+10*time.Second, "the grace period to end", func() bool { return time.Now().After(until) })
		for _, n := range []*app.App{a, b} {
			if status, body := (&world{t: t, node: n, group: old}).call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusUnauthorized {
				t.Fatalf("%s answered the old token after its grace %d %s, want 401", n.NodeID, status, body)
			}
		}

		// No grace: the replaced token is refused everywhere once the catalog's lifetime passed.
		rotated = time.Now()
		newest, until := rotate(t, a, admin, w.group.ID, "0")
		if !until.IsZero() {
			t.Fatalf("rotation without grace keeps the old token until %v", until)
		}
		ttlPassed(t, rotated)
		latest := w.group
		latest.Token = newest
		for _, n := range []*app.App{a, b} {
			if status, body := (&world{t: t, node: n, group: cur}).call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusUnauthorized {
				t.Fatalf("%s answered the replaced token %d %s, want 401", n.NodeID, status, body)
			}
			if status, body := (&world{t: t, node: n, group: latest}).call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusOK {
				t.Fatalf("%s answered the newest token %d %s", n.NodeID, status, body)
			}
		}
	})
}

// A scene edited through node A's console raises its version, and node B's client API gives
// clients the new policy (with a new ETag) within the catalog's lifetime.
func TestSceneEditFromConsoleReachesTheOtherNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		a, b, w, admin := consoleTwoNodes(t, target)
		wb := w.on(b)
		if status, body := wb.call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusOK {
			t.Fatalf("scenes: %d %s", status, body)
		}
		edited := time.Now()
		status, body := console(t, a, http.MethodPatch, fmt.Sprintf("%s/scenes/%d", consoleapi.Prefix, w.scene.ID), admin,
			map[string]any{"max_attempts": 9, "backoff": map[string]any{"strategy": "fixed", "interval": "1h"}})
		if status != http.StatusOK {
			t.Fatalf("edit: %d %s", status, body)
		}
		var sc consoleapi.Scene
		if err := json.Unmarshal(body, &sc); err != nil {
			t.Fatal(err)
		}
		if sc.Version != w.scene.Version+1 || sc.MaxAttempts != 9 || sc.Backoff.Interval != "1h0m0s" {
			t.Fatalf("edited scene %+v", sc)
		}
		ttlPassed(t, edited)
		status, body = wb.call(http.MethodGet, protocol.PathScenes, nil)
		var got protocol.ScenesResponse
		if err := json.Unmarshal(body, &got); status != http.StatusOK || err != nil {
			t.Fatalf("scenes on B: %d %s %v", status, body, err)
		}
		for _, p := range got.Scenes {
			if p.Name == w.scene.Name && p.MaxAttempts == 9 {
				return
			}
		}
		t.Fatalf("node B's clients get %s, want max_attempts 9", body)
	})
}

// An instance that still holds the old token during a rotation's grace period gets its
// replays: the server signs with the new token, and when the instance refuses that (401) it
// sends the call again signed with the old one.
func TestReplaysReachAnInstanceWithTheOldTokenDuringGrace(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		_, b, w, admin := consoleTwoNodes(t, target)
		inst := testkit.NewInstance(t, testToken, testkit.Succeed)
		w.register("old-token", inst.URL(), 4)
		rotated := time.Now()
		if _, until := rotate(t, b, admin, w.group.ID, "1h"); until.IsZero() {
			t.Fatal("no grace")
		}
		ttlPassed(t, rotated)
		res := w.report(item(w.scene.Name, "during-grace"))
		tk := w.waitTask(res[0].TaskID, 20*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State.Ended() })
		if tk.State != retry.Succeeded || tk.Attempts != 1 {
			t.Fatalf("task %+v, want succeeded at the first replay", tk)
		}
		if inst.Forged() == 0 {
			t.Fatal("the instance never saw the new token's signature: the test proves nothing")
		}
	})
}
