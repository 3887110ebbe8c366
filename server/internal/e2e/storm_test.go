package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// A retry storm across a fleet: 16 instances report overlapping keys at once, each batch in
// its own order. Every report is answered 200 (the database's deadlocks between the batches'
// merges are the server's to resolve), and each key is one task counting all its reports.
func TestConcurrentReportsOfTheSameKeysAreAllStoredAndMerged(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, nil)
		const (
			senders = 16
			rounds  = 4
			keys    = 50
			perCall = 30
		)
		reports := map[string]int{}
		bodies := make([][]protocol.ReportRequest, senders)
		for i := range bodies {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for range rounds {
				var req protocol.ReportRequest
				for _, k := range rng.Perm(keys)[:perCall] {
					key := fmt.Sprintf("order-%d", k)
					req.Items = append(req.Items, item(w.scene.Name, key))
					reports[key]++
				}
				bodies[i] = append(bodies[i], req)
			}
		}
		type answer struct {
			status int
			body   string
			err    error
		}
		answers := make(chan answer, senders*rounds)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for _, req := range bodies[i] {
					status, body, err := testkit.Call(node.URL(), w.group, http.MethodPost, protocol.PathReports, req)
					if err == nil && status == http.StatusOK {
						var resp protocol.ReportResponse
						err = json.Unmarshal(body, &resp)
						for n, r := range resp.Results {
							if r.Status != protocol.ReportCreated && r.Status != protocol.ReportMerged {
								err = fmt.Errorf("item %d: %+v", n, r)
							}
						}
					}
					answers <- answer{status, string(body), err}
				}
			}()
		}
		close(start)
		wg.Wait()
		close(answers)
		refused := 0
		var first answer
		for a := range answers {
			if a.err != nil || a.status != http.StatusOK {
				if refused == 0 {
					first = a
				}
				refused++
			}
		}
		if refused > 0 {
			t.Fatalf("%d of %d reports were not answered 200 with every item stored; the first: %d %s %v",
				refused, senders*rounds, first.status, first.body, first.err)
		}
		tasks, err := node.Store.ListTasks(context.Background(), storage.TaskFilter{GroupID: w.group.ID}, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		byKey := map[string]int{}
		for _, tk := range tasks {
			byKey[tk.IdempotencyKey]++
			if !tk.State.Active() || tk.Merges+1 != reports[tk.IdempotencyKey] {
				t.Errorf("key %s: task %d is %s counting %d reports; want active, counting %d",
					tk.IdempotencyKey, tk.ID, tk.State, tk.Merges+1, reports[tk.IdempotencyKey])
			}
		}
		for key := range reports {
			if byKey[key] != 1 {
				t.Errorf("key %s is %d tasks, want one", key, byKey[key])
			}
		}
	})
}
