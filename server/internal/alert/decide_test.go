package alert

import (
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/alert/notify"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// A subject that clears while the rule still fires for another, then comes back, is not
// announced again: one incident, one firing message per subject; the resolved message names
// every subject of the incident.
func TestDecideKeepsAFlappingSubjectUntilTheRuleResolves(t *testing.T) {
	t0 := time.Now()
	a, b := subject{Key: "scene:1"}, subject{Key: "scene:2"}
	d := decide(storage.AlertState{}, nil, []subject{a, b}, []subject{a, b}, time.Hour, t0)
	if d.kind != notify.Firing || len(d.items) != 2 {
		t.Fatalf("first evaluation: %q with %d items", d.kind, len(d.items))
	}
	st := storage.AlertState{Firing: true, Since: &t0, LastSentAt: &t0}
	for i, visible := range [][]subject{{a}, {a, b}, {a}, {a, b}} {
		d = decide(st, d.subjects, visible, visible, time.Hour, t0.Add(time.Duration(i+1)*time.Minute))
		if d.kind != "" {
			t.Fatalf("evaluation %d with %d subjects firing sent %q", i+2, len(visible), d.kind)
		}
	}
	d = decide(st, d.subjects, nil, nil, time.Hour, t0.Add(10*time.Minute))
	if d.kind != notify.Resolved || len(d.items) != 2 || d.firing {
		t.Fatalf("all clear: %q with %d items, firing %v", d.kind, len(d.items), d.firing)
	}
}
