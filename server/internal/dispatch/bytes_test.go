package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// checkedSink hands claims to the dispatcher and records the most bytes it ever held.
type checkedSink struct {
	d    *dispatch.Dispatcher
	most atomic.Int64
}

func (c *checkedSink) Room() int     { return c.d.Room() }
func (c *checkedSink) Capacity() int { return c.d.Capacity() }
func (c *checkedSink) Submit(claims []retry.Claim) {
	c.d.Submit(claims)
	c.note()
}

func (c *checkedSink) note() {
	for {
		n, most := c.d.QueuedBytes(), c.most.Load()
		if n <= most || c.most.CompareAndSwap(most, n) {
			return
		}
	}
}

// With large arguments, the bytes the dispatcher holds stay within dispatch.max_queued_bytes
// while every task still runs, with its arguments read just before it is sent.
func TestDispatcherBoundsTheBytesItHolds(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		const (
			tasks = 60
			size  = 32 << 10
			bound = 6 * size
		)
		var sink checkedSink
		r := newRig(t, s, nil, func(p *dispatch.Params) {
			p.Concurrency = 2
			p.MaxQueuedBytes = bound
		})
		sink.d = r.d
		var calls atomic.Int32
		ex := newExecutor(t, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			sink.note()
			var args struct{ Pad string }
			if err := json.Unmarshal(req.Args, &args); err != nil || len(args.Pad) < size-100 {
				t.Errorf("task %d sent with arguments of %d bytes (%v), want its stored ones", req.TaskID, len(req.Args), err)
			}
			calls.Add(1)
			return testkit.Succeed(req)
		})
		r.register("i1", ex.URL(), 0)
		pad := strings.Repeat("x", size-20)
		batch := make([]storage.NewTask, tasks)
		for i := range batch {
			k := fmt.Sprintf("big-%d", i)
			batch[i] = storage.NewTask{GroupID: r.Group.ID, SceneID: r.Scene.ID, Bucket: retry.BucketOf(k, storagetest.Buckets),
				Key: k, Args: []byte(`{"Pad":"` + pad + `"}`), State: retry.Waiting, NextAt: time.Now()}
		}
		if _, err := s.Ingest(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		c, err := scheduler.NewClaimer(scheduler.ClaimerParams{Store: s, Held: testkit.AllBuckets, Sink: &sink,
			Log: testkit.Logger(t), NodeID: "node-1", Batch: 100, Lookahead: time.Second, ClaimTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer c.Stop(context.Background())
		testkit.WaitUntil(t, 30*time.Second, "every task to run", func() bool {
			c.Wake() // the tick
			return calls.Load() >= tasks
		})
		if most := sink.most.Load(); most > bound {
			t.Fatalf("the dispatcher held %d bytes of arguments, over the bound of %d", most, bound)
		}
		if sink.most.Load() == 0 {
			t.Fatal("the dispatcher never counted the bytes it held")
		}
	})
}
