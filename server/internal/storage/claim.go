package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// ClaimParams says what to claim.
type ClaimParams struct {
	// Kind is KindReplay for due tasks, KindCallback for due callbacks.
	Kind    retry.AttemptKind
	Buckets []int
	// DueBy claims what is due at or before it.
	DueBy time.Time
	// PerBucket bounds the claims in each bucket, earliest first.
	PerBucket int
	Token     int64
	Node      string
	// Deadline is stamped as the claim's deadline (run_deadline): the sweeper takes a task
	// back after it.
	Deadline time.Time
}

// phase names the columns and values of the replay or the callback phase of a task.
type phase struct {
	state, next      string
	waiting, running int8
}

func phaseOf(k retry.AttemptKind) phase {
	if k == retry.KindCallback {
		return phase{"cb_state", "cb_next_at", int8(retry.CallbackWaiting), int8(retry.CallbackRunning)}
	}
	return phase{"state", "next_at", int8(retry.Waiting), int8(retry.Running)}
}

// claimCols are the columns a claim reads; the last one is the phase's due time. It reads the
// arguments' size in bytes, not the arguments: dispatch reads them (TaskArgs) just before
// sending.
func (ph phase) claimCols(d dialect) string {
	return "id, group_id, scene_id, bucket, idem_key, " + d.byteLength("args") + ", state, attempts, cb_attempts, last_error, " +
		"cb_error, deadline_at, claim_token, claimed_by, run_deadline, created_at, " + ph.next
}

// maxCompound bounds the parts of one compound SELECT (SQLite takes 500), and so the buckets
// of one claim statement and the settlements of one UPDATE.
const maxCompound = 250

// Claim marks due tasks (or callbacks) of the given buckets as running under the claim's
// token and deadline, and returns them. Per bucket it takes the earliest due first, up to
// PerBucket: one conditional UPDATE over a union of index range scans, one per bucket, so its
// cost follows what is due, not the backlog; then one read of the stamped rows through the same
// index (a task not running has claim token 0, so the token pins the read exactly). No row is
// read before it is written, and no lock is waited for beyond the rows changed.
//
// A replay claim moves its tasks from waiting to running: it runs as one transaction that ends
// by adding the move to the state totals (statetotals.go), one row per scene and state. A
// callback claim changes no task's state; it runs as one transaction where the dialect says so
// (claimInTx: on MySQL, and wherever it takes more than one statement, for a node holding more
// than 250 buckets). Either way a claim that fails part way, or whose read fails, stamps
// nothing, where it would leave tasks running under a claim no one holds, for the sweeper to
// charge each a timed-out attempt.
func (s *Store) Claim(ctx context.Context, p ClaimParams) ([]retry.Claim, error) {
	if len(p.Buckets) == 0 || p.PerBucket < 1 {
		return nil, nil
	}
	if p.Kind == retry.KindCallback && !s.d.claimInTx((len(p.Buckets)+maxCompound-1)/maxCompound) {
		return s.claim(ctx, s.sql, p)
	}
	var out []retry.Claim
	// Tried again on a deadlock (retryTx): a claim locks its tasks in the order of their due
	// time, an operator's action or an ingest's merges in the order of their ids or keys.
	err := s.retryTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.claim(ctx, tx, p)
		if err != nil || p.Kind == retry.KindCallback {
			return err
		}
		deltas := stateDeltas{}
		for i := range out {
			deltas.move(out[i].SceneID, retry.Waiting, retry.Running, 1)
		}
		if err := s.applyStateDeltas(ctx, tx, deltas); err != nil {
			return fmt.Errorf("claim %s: %w", p.Kind, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// claim is Claim on db, the database or a transaction.
func (s *Store) claim(ctx context.Context, db dbtx, p ClaimParams) ([]retry.Claim, error) {
	ph := phaseOf(p.Kind)
	dueBy, deadline, now := T(p.DueBy), T(p.Deadline), T(time.Now())
	var claimed int64
	for start := 0; start < len(p.Buckets); start += maxCompound {
		chunk := p.Buckets[start:min(start+maxCompound, len(p.Buckets))]
		var union strings.Builder
		dueArgs := make([]any, 0, len(chunk))
		for i, b := range chunk {
			if i > 0 {
				union.WriteString(" UNION ALL ")
			}
			union.WriteString(s.d.unionPart(fmt.Sprintf(
				"SELECT id FROM rh_task WHERE bucket = %d AND %s = %d AND claim_token = 0 AND %s <= ? ORDER BY %s LIMIT %d",
				b, ph.state, ph.waiting, ph.next, ph.next, p.PerBucket)))
			dueArgs = append(dueArgs, dueBy)
		}
		set := []assign{{ph.state, fmt.Sprint(ph.running)}, {"claim_token", "?"}, {"claimed_by", "?"},
			{"run_deadline", "?"}, {"updated_at", "?"}}
		q, args := s.d.updateIDs(union.String(), dueArgs, set, []any{p.Token, p.Node, deadline, now},
			fmt.Sprintf("{t}%s = %d AND {t}claim_token = 0", ph.state, ph.waiting))
		res, err := db.ExecContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("claim %s in %d buckets: %w", p.Kind, len(chunk), err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("claim %s in %d buckets: %w", p.Kind, len(chunk), err)
		}
		claimed += n
	}
	if claimed == 0 {
		return nil, nil
	}
	q := fmt.Sprintf("SELECT %s FROM rh_task WHERE bucket IN (%s) AND %s = %d AND claim_token = ?",
		ph.claimCols(s.d), intList(p.Buckets), ph.state, ph.running)
	out, err := readClaims(ctx, db, q, p.Kind, p.Token)
	if err != nil {
		return nil, fmt.Errorf("read claimed %s: %w", p.Kind, err)
	}
	return out, nil
}

func readClaims(ctx context.Context, db dbtx, q string, kind retry.AttemptKind, args ...any) ([]retry.Claim, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []retry.Claim
	for rows.Next() {
		var (
			c         retry.Claim
			state     int8
			deadline  *Time
			runUntil  *Time
			due       *Time
			createdAt Time
		)
		if err := rows.Scan(&c.TaskID, &c.GroupID, &c.SceneID, &c.Bucket, &c.IdempotencyKey, &c.ArgsSize, &state,
			&c.Attempts, &c.CallbackAttempts, &c.LastError, &c.CallbackError, &deadline, &c.Token, &c.ClaimedBy, &runUntil,
			&createdAt, &due); err != nil {
			return nil, err
		}
		c.Kind, c.State, c.DeadlineAt, c.CreatedAt = kind, retry.State(state), deadline.Ptr(), createdAt.Time
		if runUntil != nil {
			c.RunDeadline = runUntil.Time
		}
		if due != nil {
			c.DueAt = due.Time
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ExtendClaim moves a running claim's deadline, while the claim still holds.
func (s *Store) ExtendClaim(ctx context.Context, c *retry.Claim, deadline time.Time) (bool, error) {
	ph := phaseOf(c.Kind)
	q := fmt.Sprintf("UPDATE rh_task SET run_deadline = ? WHERE id = ? AND claim_token = ? AND %s = %d", ph.state, ph.running)
	res, err := s.sql.ExecContext(ctx, q, T(deadline), c.TaskID, c.Token)
	if err != nil {
		return false, fmt.Errorf("extend claim of task %d: %w", c.TaskID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("extend claim of task %d: %w", c.TaskID, err)
	}
	return n == 1, nil
}

// ExtendClaims moves the deadline of claims made under one token (one claim statement's),
// for the tasks among ids whose claim still holds, and returns how many it moved.
func (s *Store) ExtendClaims(ctx context.Context, kind retry.AttemptKind, token int64, ids []int64, deadline time.Time) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	ph := phaseOf(kind)
	args := []any{T(deadline), token}
	for _, id := range ids {
		args = append(args, id)
	}
	q := fmt.Sprintf("UPDATE rh_task SET run_deadline = ? WHERE claim_token = ? AND id IN (%s) AND %s = %d",
		placeholders(len(ids)), ph.state, ph.running)
	res, err := s.sql.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("extend %d claims: %w", len(ids), err)
	}
	return res.RowsAffected()
}
