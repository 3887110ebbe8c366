package storage_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// A fleet's retry storm: many instances report the same keys at once, each batch in its own
// order. Every ingest must succeed (a deadlock or a lock wait between the batches' merges is the
// store's to resolve, not the client's), and each key must end as one active task that counts
// every report of it.
func TestConcurrentIngestsOfOverlappingKeysAllSucceedAndMerge(t *testing.T) {
	s := storagetest.Open(t, storagetest.MySQL(t))
	f := setup(t, s)
	ctx := context.Background()
	const (
		senders = 16
		rounds  = 8
		keys    = 60
		perCall = 40
	)
	for round := range rounds {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			reports = map[string]int{}
			ids     = map[string]map[int64]bool{}
			errs    []error
		)
		batches := make([][]storage.NewTask, senders)
		for i := range batches {
			rng := rand.New(rand.NewPCG(uint64(round), uint64(i)))
			for _, k := range rng.Perm(keys)[:perCall] {
				key := fmt.Sprintf("r%d-k%d", round, k)
				batches[i] = append(batches[i], f.task(key, time.Now()))
				reports[key]++
			}
		}
		start := make(chan struct{})
		for i := range batches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := s.Ingest(ctx, batches[i])
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				for n, r := range res {
					key := batches[i][n].Key
					if ids[key] == nil {
						ids[key] = map[int64]bool{}
					}
					ids[key][r.TaskID] = true
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("round %d: %d of %d ingests failed; the first: %v", round, len(errs), senders, errs[0])
		}
		for key, n := range reports {
			if len(ids[key]) != 1 {
				t.Fatalf("round %d: key %s was stored as tasks %v, want one", round, key, ids[key])
			}
			for id := range ids[key] {
				tk, err := s.Task(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if tk.State != retry.Waiting || tk.Merges+1 != n {
					t.Fatalf("round %d: key %s is task %d, %s, counting %d reports; want waiting, counting %d",
						round, key, id, tk.State, tk.Merges+1, n)
				}
			}
		}
	}
}

// An ingest that waits for a lock past the database's lock wait timeout (here one second) is
// tried again, in a new transaction, and succeeds once the lock is gone.
func TestIngestThatTimesOutWaitingForALockIsTriedAgain(t *testing.T) {
	target := storagetest.MySQL(t)
	target.DSN += "?innodb_lock_wait_timeout=1"
	s := storagetest.Open(t, target)
	f := setup(t, s)
	ctx := context.Background()
	first, err := s.Ingest(ctx, []storage.NewTask{f.task("k", time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	raw := rawMySQL(t, target)
	lock, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rollback(t, lock)
	if _, err := lock.ExecContext(ctx, "SELECT id FROM rh_task WHERE id = ? FOR UPDATE", first[0].TaskID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Ingest(ctx, []storage.NewTask{f.task("k", time.Now())})
		done <- err
	}()
	// The transactions waiting for the lock: the ingest's first, then, after the first timed
	// out, its second try's. (The database refreshes this table only when it has not been read
	// for 100 ms: polled more often, it never changes.)
	waiting := func() []string {
		rows, err := raw.QueryContext(ctx, "SELECT trx_id FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'")
		if err != nil {
			t.Fatal(err)
		}
		defer closeRows(t, rows)
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	var firstTry string
	poll := 150 * time.Millisecond
	ended := func() {
		select {
		case err := <-done:
			t.Fatalf("the ingest ended while the lock was held: %v", err)
		default:
		}
	}
	testkit.WaitEvery(t, poll, 20*time.Second, "the ingest to wait for the lock", func() bool {
		ended()
		ids := waiting()
		if len(ids) == 1 {
			firstTry = ids[0]
		}
		return firstTry != ""
	})
	testkit.WaitEvery(t, poll, 20*time.Second, "the ingest to try again after its lock wait timed out", func() bool {
		ended()
		ids := waiting()
		return len(ids) == 1 && ids[0] != firstTry
	})
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the ingest failed: %v", err)
	}
	tk, err := s.Task(ctx, first[0].TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Merges != 1 {
		t.Fatalf("the task counts %d merges, want 1", tk.Merges)
	}
}
