package storage

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// NewTask is a reported failed call to store.
type NewTask struct {
	GroupID       int64
	SceneID       int64
	Bucket        int
	Key           string
	Args          []byte
	Error         string
	LocalAttempts int
	// State is Waiting, or Paused.
	State      retry.State
	NextAt     time.Time
	DeadlineAt *time.Time
}

// IngestResult is what became of one NewTask.
type IngestResult struct {
	TaskID int64
	// Merged is true when the scene already had an active task with the same key.
	Merged bool
}

// ingestChunk bounds the reports of one INSERT: 15 bound parameters each, within SQLite's
// limit of 32766 per statement.
const ingestChunk = 1000

// ingestCols are the columns an ingest writes; the others take their defaults.
const ingestCols = "group_id, scene_id, bucket, idem_key, active_key, args, state, local_attempts, next_at, " +
	"deadline_at, last_error, cb_error, report_id, created_at, updated_at, merges"

// ingestUpsert ends the ingest's INSERT: a report whose key is active in its scene (the unique
// key scene_id, active_key) merges into that task. A new row counts the repeats of its key
// inside the batch as merges; an existing one adds this report and those repeats, and keeps the
// newest error.
func ingestUpsert(d dialect) string {
	return d.upsert([]string{"scene_id", "active_key"}, []assign{{"merges", "merges + 1 + {new}merges"},
		{"last_error", "{new}last_error"}, {"updated_at", "{new}updated_at"}})
}

// Ingest stores a batch of reports in one transaction: one multi-row insert in which a key
// already active in its scene merges into the existing task (counting the merge and keeping the
// newest error), then one read of the stored rows for their ids. Nothing is read before it is
// written. Results are in the order of tasks; a key repeated inside the batch merges too. The
// same transaction counts the new tasks in their scene's state totals (statetotals.go) and adds
// the batch to the minute's summary (summary.go).
//
// The rows are inserted in the order of the unique key they merge on, so that batches sent at
// once with keys in common (a retry storm across a fleet) lock those keys in the same order
// instead of each waiting for a key another holds. The deadlocks and lock waits that remain
// (MariaDB also locks the gaps next to a key it checks) are tried again (retryTx).
func (s *Store) Ingest(ctx context.Context, tasks []NewTask) ([]IngestResult, error) {
	return s.IngestOnce(ctx, nil, tasks)
}

// Nonce is a signed request's nonce and when it may be forgotten: kept until then, it lets the
// request run at most once.
type Nonce struct {
	Value   string
	Expires time.Time
}

// IngestOnce is Ingest for a signed request: it records the request's nonce in the batch's
// transaction, so the request's reports are stored exactly when its nonce is, in one commit
// instead of two. A nonce recorded before fails the batch with ErrConflict, storing nothing.
// A nil nonce records none.
func (s *Store) IngestOnce(ctx context.Context, nonce *Nonce, tasks []NewTask) ([]IngestResult, error) {
	if len(tasks) == 0 {
		return nil, nil
	}
	type sk struct {
		scene int64
		key   string
	}
	first := make(map[sk]int, len(tasks))
	repeats := make(map[sk]int)
	uniq := make([]int, 0, len(tasks))
	for i := range tasks {
		k := sk{tasks[i].SceneID, tasks[i].Key}
		if _, dup := first[k]; dup {
			repeats[k]++
			continue
		}
		first[k] = i
		uniq = append(uniq, i)
	}
	slices.SortFunc(uniq, func(a, b int) int {
		return cmp.Or(cmp.Compare(tasks[a].SceneID, tasks[b].SceneID), strings.Compare(tasks[a].Key, tasks[b].Key))
	})
	upsert := ingestUpsert(s.d)
	reportID := rand.Int64N(1<<62) + 1
	now := T(time.Now())
	// insert and readBack write the statements for a chunk of the unique reports.
	insert := func(chunk []int) (string, []any) {
		var q strings.Builder
		q.WriteString("INSERT INTO rh_task (" + ingestCols + ") VALUES ")
		args := make([]any, 0, len(chunk)*15)
		for n, i := range chunk {
			t := &tasks[i]
			if n > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?,?,?,?,?,?,?,?,?,?,'',?,?,?,?)")
			args = append(args, t.GroupID, t.SceneID, t.Bucket, t.Key, t.Key, string(t.Args), int8(t.State),
				t.LocalAttempts, T(t.NextAt), TP(t.DeadlineAt), retry.TruncateError(t.Error), reportID, now, now,
				repeats[sk{t.SceneID, t.Key}])
		}
		q.WriteString(upsert)
		return q.String(), args
	}
	readBack := func(chunk []int) (string, []any) {
		scenes := map[int64]bool{}
		keys := map[string]bool{}
		for _, i := range chunk {
			scenes[tasks[i].SceneID] = true
			keys[tasks[i].Key] = true
		}
		var read strings.Builder
		rargs := make([]any, 0, len(scenes)+len(keys))
		read.WriteString("SELECT id, scene_id, active_key, report_id FROM rh_task WHERE scene_id IN (")
		read.WriteString(placeholders(len(scenes)))
		for id := range scenes {
			rargs = append(rargs, id)
		}
		read.WriteString(") AND active_key IN (")
		read.WriteString(placeholders(len(keys)))
		for k := range keys {
			rargs = append(rargs, k)
		}
		read.WriteString(")")
		return read.String(), rargs
	}

	var stored map[sk]IngestResult
	// readStored reads the rows of a chunk: id, scene, key and the report that made each.
	readStored := func(rows *sql.Rows, err error) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id, scene, rid int64
				key            string
			)
			if err := rows.Scan(&id, &scene, &key, &rid); err != nil {
				return err
			}
			stored[sk{scene, key}] = IngestResult{TaskID: id, Merged: rid != reportID}
		}
		return rows.Err()
	}
	err := s.retryTx(ctx, func(tx *sql.Tx) error {
		stored = make(map[sk]IngestResult, len(uniq))
		if nonce != nil {
			if err := addNonce(ctx, s.d, tx, nonce.Value, nonce.Expires); err != nil {
				return err
			}
		}
		// Chunks keep each statement within SQLite's limit on bound parameters (32766).
		for start := 0; start < len(uniq); start += ingestChunk {
			chunk := uniq[start:min(start+ingestChunk, len(uniq))]
			q, args := insert(chunk)
			if s.returning {
				// The INSERT answers each row as it stands after it: its id, and the report
				// that made it (another one's for a merge).
				if err := readStored(tx.QueryContext(ctx, q+" RETURNING id, scene_id, active_key, report_id", args...)); err != nil {
					return fmt.Errorf("insert: %w", err)
				}
				continue
			}
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("insert: %w", err)
			}
			read, rargs := readBack(chunk)
			if err := readStored(tx.QueryContext(ctx, read, rargs...)); err != nil {
				return fmt.Errorf("read back: %w", err)
			}
		}
		// Every report must be accounted for before the batch commits: a caller told the batch
		// failed sends it again, and must not find it half stored.
		results := make([]IngestResult, len(tasks))
		deltas := stateDeltas{}
		for i := range tasks {
			k := sk{tasks[i].SceneID, tasks[i].Key}
			r, ok := stored[k]
			if !ok {
				return fmt.Errorf("task for scene %d key %q not found after insert", k.scene, k.key)
			}
			if !r.Merged && first[k] == i {
				// A new task, in the state of its key's first report; a merge changes no state.
				deltas.add(k.scene, tasks[i].State, 1)
			}
			r.Merged = r.Merged || first[k] != i
			results[i] = r
		}
		if err := s.applyStateDeltas(ctx, tx, deltas); err != nil {
			return err
		}
		return s.writeSummary(ctx, tx, now, ingestCounts(tasks, results))
	})
	if err != nil {
		return nil, fmt.Errorf("ingest %d reports: %w", len(tasks), err)
	}
	out := make([]IngestResult, len(tasks))
	for i := range tasks {
		k := sk{tasks[i].SceneID, tasks[i].Key}
		r := stored[k]
		if first[k] != i {
			r.Merged = true
		}
		out[i] = r
	}
	return out, nil
}
