package e2e

import (
	"context"
	"sync"
	"testing"

	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// Nodes started together on an empty MySQL database (docker compose up, a rolling deploy's
// first run) all come up: they make the schema one after another, and the first namespace,
// group and user once.
func TestNodesStartingTogetherOnAnEmptyDatabase(t *testing.T) {
	cfg := testConfig(storagetest.MySQL(t))
	cfg.Bootstrap = config.Bootstrap{Namespace: "default", Group: "default", GroupToken: testToken, AdminPassword: "first-start-password"}
	const nodes = 3
	apps := make([]*app.App, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			c := cfg
			c.Server.NodeID = "node-" + string(rune('a'+i))
			apps[i], errs[i] = app.New(context.Background(), c, testkit.Logger(t))
		})
	}
	wg.Wait()
	for i, a := range apps {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		t.Cleanup(func() { a.Store.Close() })
	}
	ctx := context.Background()
	nss, err := apps[0].Store.ListNamespaces(ctx)
	if err != nil || len(nss) != 1 || nss[0].Name != "default" {
		t.Fatalf("namespaces: %+v %v", nss, err)
	}
	g, err := apps[1].Store.GroupByName(ctx, "default", "default")
	if err != nil || g.Token != testToken {
		t.Fatalf("group: %+v %v", g, err)
	}
	if n, err := apps[2].Store.CountUsers(ctx); err != nil || n != 1 {
		t.Fatalf("%d users (%v), want the one admin", n, err)
	}
}
