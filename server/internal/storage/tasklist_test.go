package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// TestTaskListUsesIndexes checks on MariaDB, with a few thousand tasks, that the console's task
// list reads through an index in each of its main shapes, and that the default order (newest
// first) does not sort the table (no filesort).
func TestTaskListUsesIndexes(t *testing.T) {
	s := storagetest.Open(t, storagetest.MySQL(t))
	ctx := context.Background()
	f := testkit.NewFixture(t, s, "ns", "token-0123456789abcdef", nil)
	now := time.Now()
	for b := 0; b < 4; b++ {
		keys := make([]string, 1000)
		for i := range keys {
			keys[i] = fmt.Sprintf("k-%d-%d", b, i)
		}
		f.Add(now.Add(time.Duration(b)*time.Minute), keys...)
	}
	if _, err := s.Apply(ctx, storage.Pause, []int64{1, 2, 3}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	ns := []int64{f.Group.NamespaceID}
	shapes := []struct {
		name     string
		f        storage.TaskFilter
		o        storage.TaskOrder
		after    *storage.TaskCursor
		key      string // the index that must serve it; "" for any
		noSorted bool
	}{
		{"newest first", storage.TaskFilter{}, storage.NewestFirst, nil, "PRIMARY", true},
		{"newest first, next page", storage.TaskFilter{}, storage.NewestFirst, &storage.TaskCursor{ID: 2000}, "PRIMARY", true},
		{"a namespace, newest first", storage.TaskFilter{NamespaceIDs: ns}, storage.NewestFirst, nil, "", false},
		{"a scene and a state", storage.TaskFilter{SceneIDs: []int64{f.Scene.ID}, States: []retry.State{retry.Paused}},
			storage.NewestFirst, nil, "", false},
	}
	for _, sh := range shapes {
		rows, err := s.ExplainTaskPage(ctx, sh.f, sh.o, sh.after, 50)
		if err != nil {
			t.Fatalf("%s: %v", sh.name, err)
		}
		for _, r := range rows {
			if r["table"] != "rh_task" {
				continue
			}
			if r["key"] == "" || r["type"] == "ALL" {
				t.Errorf("%s: rh_task read without an index: %v", sh.name, r)
			}
			if sh.key != "" && r["key"] != sh.key {
				t.Errorf("%s: index %s, want %s: %v", sh.name, r["key"], sh.key, r)
			}
			if sh.noSorted && strings.Contains(r["Extra"], "filesort") {
				t.Errorf("%s: sorts the table: %v", sh.name, r)
			}
		}
	}
}
