package e2e

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// A node holds at most server.max_connections connections. Clients that keep that many idle
// keep-alive connections open do not lock others out: at the bound the node closes the idle
// ones, and a new client is answered.
func TestIdleConnectionsDoNotLockNewClientsOut(t *testing.T) {
	cfg := testConfig(storagetest.SQLite(t))
	cfg.Server.MaxConnections = 16
	a := startNode(t, cfg, "node-a")
	get := func(c *http.Client) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL()+"/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	// Each client keeps its one connection open and idle after its answer.
	var idle []*http.Client
	for i := range cfg.Server.MaxConnections {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Hour}}
		t.Cleanup(c.CloseIdleConnections)
		if err := get(c); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	late := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if err := get(late); err != nil {
		t.Fatalf("a client past the bound, while %d idle connections are open: %v", len(idle), err)
	}
	// The clients whose idle connections were closed are answered on new ones.
	for i, c := range idle {
		if err := get(c); err != nil {
			t.Fatalf("client %d again: %v", i, err)
		}
	}
}
