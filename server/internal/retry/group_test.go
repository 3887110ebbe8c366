package retry

import (
	"slices"
	"testing"
	"time"
)

func TestGroupTokens(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Minute), now.Add(-time.Minute)
	for _, c := range []struct {
		name  string
		prev  string
		until *time.Time
		want  []string
	}{
		{"no rotation", "", nil, []string{"new"}},
		{"within the grace", "old", &later, []string{"new", "old"}},
		{"grace ended", "old", &earlier, []string{"new"}},
		{"at the end of the grace", "old", &now, []string{"new"}},
		{"revoked at once", "", &later, []string{"new"}},
	} {
		g := Group{Token: "new", PrevToken: c.prev, PrevTokenUntil: c.until}
		if got := g.Tokens(now); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
