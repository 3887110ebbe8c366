package storage

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
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

// Ingest stores a batch of reports in one transaction: one multi-row insert in which a key
// already active in its scene merges into the existing task (counting the merge and keeping the
// newest error), then one read of the stored rows for their ids. Nothing is read before it is
// written. Results are in the order of tasks; a key repeated inside the batch merges too.
func (s *Store) Ingest(ctx context.Context, tasks []NewTask) ([]IngestResult, error) {
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
		// A new row counts the repeats of its key inside the batch as merges; an existing one adds
		// this report and those repeats.
		if s.mysql {
			q.WriteString(" ON DUPLICATE KEY UPDATE merges = merges + 1 + VALUES(merges), last_error = VALUES(last_error), updated_at = VALUES(updated_at)")
		} else {
			q.WriteString(" ON CONFLICT (scene_id, active_key) DO UPDATE SET merges = merges + 1 + excluded.merges, last_error = excluded.last_error, updated_at = excluded.updated_at")
		}
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

	stored := make(map[sk]IngestResult, len(uniq))
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// Chunks keep each statement within SQLite's limit on bound parameters (32766).
		for start := 0; start < len(uniq); start += ingestChunk {
			chunk := uniq[start:min(start+ingestChunk, len(uniq))]
			q, args := insert(chunk)
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("insert: %w", err)
			}
			read, rargs := readBack(chunk)
			if err := func() error {
				rows, err := tx.QueryContext(ctx, read, rargs...)
				if err != nil {
					return fmt.Errorf("read back: %w", err)
				}
				defer rows.Close()
				for rows.Next() {
					var (
						id, scene, rid int64
						key            string
					)
					if err := rows.Scan(&id, &scene, &key, &rid); err != nil {
						return fmt.Errorf("read back: %w", err)
					}
					stored[sk{scene, key}] = IngestResult{TaskID: id, Merged: rid != reportID}
				}
				if err := rows.Err(); err != nil {
					return fmt.Errorf("read back: %w", err)
				}
				return nil
			}(); err != nil {
				return err
			}
		}
		// Every report must be accounted for before the batch commits: a caller told the batch
		// failed sends it again, and must not find it half stored.
		for i := range tasks {
			k := sk{tasks[i].SceneID, tasks[i].Key}
			if _, ok := stored[k]; !ok {
				return fmt.Errorf("task for scene %d key %q not found after insert", k.scene, k.key)
			}
		}
		return nil
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
	// Deadline is stamped as the claimed rows' next trigger: the sweeper takes a task back
	// after it.
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
// arguments' size, not the arguments: dispatch reads them (TaskArgs) just before sending.
func (ph phase) claimCols() string {
	return "id, group_id, scene_id, bucket, idem_key, LENGTH(args), state, attempts, cb_attempts, last_error, " +
		"cb_error, deadline_at, claim_token, claimed_by, run_deadline, created_at, " + ph.next
}

// sqliteMaxCompound bounds the parts of one compound SELECT on SQLite.
const sqliteMaxCompound = 250

// Claim marks due tasks (or callbacks) of the given buckets as running under the claim's
// token and deadline, and returns them. Per bucket it takes the earliest due first, up to
// PerBucket: one conditional UPDATE over a union of index range scans, one per bucket, so its
// cost follows what is due, not the backlog; then one read of the stamped rows through the same
// index (a task not running has claim token 0, so the token pins the read exactly). No row is
// read before it is written, and no lock is waited for beyond the rows changed.
//
// On MySQL, and wherever it takes more than one statement (a node holding more than 250
// buckets), it runs as one transaction: a claim that fails part way, or whose read fails,
// stamps nothing, where it would leave tasks running under a claim no one holds, for the
// sweeper to charge each a timed-out attempt. SQLite's one statement and read on the one local
// connection go without (its transactions cost the due-time lag dearly).
func (s *Store) Claim(ctx context.Context, p ClaimParams) ([]retry.Claim, error) {
	if len(p.Buckets) == 0 || p.PerBucket < 1 {
		return nil, nil
	}
	if !s.mysql && len(p.Buckets) <= sqliteMaxCompound {
		return s.claim(ctx, s.sql, p)
	}
	var out []retry.Claim
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.claim(ctx, tx, p)
		return err
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
	for start := 0; start < len(p.Buckets); start += sqliteMaxCompound {
		chunk := p.Buckets[start:min(start+sqliteMaxCompound, len(p.Buckets))]
		var union strings.Builder
		args := make([]any, 0, len(chunk)+8)
		for i, b := range chunk {
			if i > 0 {
				union.WriteString(" UNION ALL ")
			}
			part := fmt.Sprintf("SELECT id FROM rh_task WHERE bucket = %d AND %s = %d AND claim_token = 0 AND %s <= ? ORDER BY %s LIMIT %d",
				b, ph.state, ph.waiting, ph.next, ph.next, p.PerBucket)
			if s.mysql {
				union.WriteString("(" + part + ")")
			} else {
				union.WriteString("SELECT id FROM (" + part + ")")
			}
			args = append(args, dueBy)
		}
		set := []assign{{ph.state, fmt.Sprint(ph.running)}, {"claim_token", "?"}, {"claimed_by", "?"},
			{"run_deadline", "?"}, {"updated_at", "?"}}
		setArgs := []any{p.Token, p.Node, deadline, now}
		var q string
		if s.mysql {
			q = fmt.Sprintf("UPDATE rh_task t JOIN (%s) x ON t.id = x.id SET %s WHERE t.%s = %d AND t.claim_token = 0",
				union.String(), setList(set, "t.", "t."), ph.state, ph.waiting)
			args = append(args, setArgs...)
		} else {
			q = fmt.Sprintf("UPDATE rh_task SET %s WHERE %s = %d AND claim_token = 0 AND id IN (%s)",
				setList(set, "", "rh_task."), ph.state, ph.waiting, union.String())
			args = append(setArgs, args...)
		}
		res, err := db.ExecContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("claim %s in %d buckets: %w", p.Kind, len(chunk), err)
		}
		n, _ := res.RowsAffected()
		claimed += n
	}
	if claimed == 0 {
		return nil, nil
	}
	q := fmt.Sprintf("SELECT %s FROM rh_task WHERE bucket IN (%s) AND %s = %d AND claim_token = ?",
		ph.claimCols(), intList(p.Buckets), ph.state, ph.running)
	out, err := readClaims(ctx, db, q, p.Kind, p.Token)
	if err != nil {
		return nil, fmt.Errorf("read claimed %s: %w", p.Kind, err)
	}
	return out, nil
}

// assign is one "col = expr" of a SET list; expr names the task table's columns as {t}col.
type assign struct{ col, expr string }

// setList writes a SET list, qualifying the assigned columns with lhs and the task columns
// read in expressions with rhs: MySQL's multi-table UPDATE wants "t." on both sides, SQLite's
// UPDATE … FROM wants bare assigned columns and the table's own name inside expressions.
func setList(set []assign, lhs, rhs string) string {
	var b strings.Builder
	for i, a := range set {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(lhs + a.col + " = " + strings.ReplaceAll(a.expr, "{t}", rhs))
	}
	return b.String()
}

// dbtx is a *sql.DB or a *sql.Tx.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
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

// Unhold makes held tasks waiting again, due as they were, up to limit of them, where their
// scene, group and namespace are all enabled and the group has a client instance with an
// executor whose heartbeat is not older than liveSince. It reads only the held tasks of such
// scenes, through the (scene_id, state, id) index (a filter on buckets would lead the database
// to scan every held task of the buckets instead). It returns how many it brought back, and
// whether it found limit of them (there may be more).
func (s *Store) Unhold(ctx context.Context, liveSince time.Time, limit int) (n int64, more bool, err error) {
	if limit < 1 {
		return 0, false, nil
	}
	q := fmt.Sprintf("SELECT t.id FROM rh_scene sc JOIN rh_group g ON g.id = sc.group_id "+
		"JOIN rh_namespace n ON n.id = g.namespace_id JOIN rh_task t ON t.scene_id = sc.id AND t.state = %d "+
		"WHERE sc.enabled = ? AND g.enabled = ? AND n.enabled = ? AND EXISTS ("+
		"SELECT 1 FROM rh_client_instance i WHERE i.group_id = g.id AND i.executor_url <> '' AND i.heartbeat_at >= ?) "+
		"LIMIT %d", retry.Held, limit)
	rows, err := s.sql.QueryContext(ctx, q, true, true, true, T(liveSince))
	if err != nil {
		return 0, false, fmt.Errorf("find held tasks to bring back: %w", err)
	}
	var ids []any
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, false, fmt.Errorf("find held tasks to bring back: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("find held tasks to bring back: %w", err)
	}
	if len(ids) == 0 {
		return 0, false, nil
	}
	// Only while still held: an operator may have paused or cancelled one meanwhile.
	res, err := s.sql.ExecContext(ctx, fmt.Sprintf("UPDATE rh_task SET state = %d, updated_at = ? WHERE id IN (%s) AND state = %d",
		retry.Waiting, placeholders(len(ids)), retry.Held), append([]any{T(time.Now())}, ids...)...)
	if err != nil {
		return 0, false, fmt.Errorf("bring back %d held tasks: %w", len(ids), err)
	}
	n, _ = res.RowsAffected()
	return n, len(ids) == limit, nil
}

// Stuck returns up to limit tasks of the buckets whose replay (or callback) is running past
// its claim's deadline at now, with the token they were claimed under. It reads only running
// rows, which dispatch keeps few.
func (s *Store) Stuck(ctx context.Context, kind retry.AttemptKind, buckets []int, now time.Time, limit int) ([]retry.Claim, error) {
	if len(buckets) == 0 {
		return nil, nil
	}
	ph := phaseOf(kind)
	q := fmt.Sprintf("SELECT %s FROM rh_task WHERE bucket IN (%s) AND %s = %d AND run_deadline <= ? LIMIT %d",
		ph.claimCols(), intList(buckets), ph.state, ph.running, limit)
	out, err := readClaims(ctx, s.sql, q, kind, T(now))
	if err != nil {
		return nil, fmt.Errorf("find stuck %s: %w", kind, err)
	}
	return out, nil
}

// ExtendClaim moves a running claim's deadline, while the claim still holds.
func (s *Store) ExtendClaim(ctx context.Context, c *retry.Claim, deadline time.Time) (bool, error) {
	ph := phaseOf(c.Kind)
	q := fmt.Sprintf("UPDATE rh_task SET run_deadline = ? WHERE id = ? AND claim_token = ? AND %s = %d", ph.state, ph.running)
	res, err := s.sql.ExecContext(ctx, q, T(deadline), c.TaskID, c.Token)
	if err != nil {
		return false, fmt.Errorf("extend claim of task %d: %w", c.TaskID, err)
	}
	n, _ := res.RowsAffected()
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

// Settle writes a batch of settlements and their attempts in one transaction. Per kind, one
// INSERT … SELECT records the attempts of the settlements whose claim still holds, then one
// UPDATE joins the tasks to the batch's new values, applying each only while its task is still
// running under the same claim token (and, for a take-back of a lapsed claim, while the claim's
// deadline has still passed). A settlement that comes too late (the sweeper took the task back,
// an operator cancelled it, the dispatcher extended the lapsed claim) changes nothing and
// records nothing. It returns how many tasks changed.
func (s *Store) Settle(ctx context.Context, batch []retry.Settlement) (int64, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	var replays, callbacks []*retry.Settlement
	for i := range batch {
		st := &batch[i]
		if st.Kind == retry.KindCallback {
			callbacks = append(callbacks, st)
		} else {
			replays = append(replays, st)
		}
	}
	now := T(time.Now())
	var changed int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		changed = 0
		for _, part := range []struct {
			kind  retry.AttemptKind
			batch []*retry.Settlement
		}{{retry.KindReplay, replays}, {retry.KindCallback, callbacks}} {
			for start := 0; start < len(part.batch); start += sqliteMaxCompound {
				chunk := part.batch[start:min(start+sqliteMaxCompound, len(part.batch))]
				if err := s.insertAttempts(ctx, tx, part.kind, chunk); err != nil {
					return err
				}
				var (
					n   int64
					err error
				)
				if part.kind == retry.KindCallback {
					n, err = s.settleCallbacks(ctx, tx, chunk, now)
				} else {
					n, err = s.settleReplays(ctx, tx, chunk, now)
				}
				if err != nil {
					return err
				}
				changed += n
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("settle %d tasks: %w", len(batch), err)
	}
	return changed, nil
}

// values builds "SELECT ? AS a, ? AS b UNION ALL SELECT ?, ? …" for a derived table.
func values(cols []string, rows int) string {
	var b strings.Builder
	for r := range rows {
		if r > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT ")
		for i, c := range cols {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('?')
			if r == 0 {
				b.WriteString(" AS " + c)
			}
		}
	}
	return b.String()
}

// claimHolds matches a task (its columns named with prefix t) to the batch row v of its
// settlement while the settlement's claim holds: same id and claim token, and for a take-back
// of a lapsed claim (v.lap set), a deadline still passed.
func claimHolds(t string) string {
	return t + "id = v.id AND " + t + "claim_token = v.tok AND (v.lap IS NULL OR " + t + "run_deadline <= v.lap)"
}

// joinUpdate runs "UPDATE rh_task SET <set> FROM (<vals>) v WHERE <match> AND {t}<where>" in
// the form the database speaks: each task row takes the values of the batch row with its id and
// claim token.
func (s *Store) joinUpdate(ctx context.Context, tx *sql.Tx, vals string, valArgs []any, set []assign, setArgs []any, where string) (int64, error) {
	var q string
	args := make([]any, 0, len(valArgs)+len(setArgs))
	if s.mysql {
		args = append(append(args, valArgs...), setArgs...)
		q = "UPDATE rh_task t JOIN (" + vals + ") v ON " + claimHolds("t.") + " SET " +
			setList(set, "t.", "t.") + " WHERE t." + where
	} else {
		args = append(append(args, setArgs...), valArgs...)
		q = "UPDATE rh_task SET " + setList(set, "", "rh_task.") + " FROM (" + vals +
			") AS v WHERE " + claimHolds("rh_task.") + " AND rh_task." + where
	}
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s *Store) settleReplays(ctx context.Context, tx *sql.Tx, batch []*retry.Settlement, now Time) (int64, error) {
	cols := []string{"id", "tok", "lap", "st", "att", "nx", "le", "ea", "cs", "cn"}
	args := make([]any, 0, len(batch)*len(cols))
	for _, st := range batch {
		args = append(args, st.TaskID, st.Token, TP(st.Lapsed), int8(st.State), st.Attempts, T(st.NextAt),
			retry.TruncateError(st.LastError), TP(st.EndedAt), int8(st.CallbackState), TP(st.CallbackNextAt))
	}
	set := []assign{{"state", "v.st"}, {"attempts", "v.att"}, {"next_at", "v.nx"}, {"last_error", "v.le"},
		{"ended_at", "v.ea"}, {"cb_state", "v.cs"}, {"cb_next_at", "v.cn"},
		{"active_key", fmt.Sprintf("CASE WHEN v.st IN (%d, %d, %d) THEN NULL ELSE {t}active_key END",
			retry.Succeeded, retry.Exhausted, retry.Cancelled)},
		{"claim_token", "0"}, {"run_deadline", "NULL"}, {"updated_at", "?"}}
	n, err := s.joinUpdate(ctx, tx, values(cols, len(batch)), args, set, []any{now}, fmt.Sprintf("state = %d", retry.Running))
	if err != nil {
		return 0, fmt.Errorf("settle replays: %w", err)
	}
	return n, nil
}

func (s *Store) settleCallbacks(ctx context.Context, tx *sql.Tx, batch []*retry.Settlement, now Time) (int64, error) {
	cols := []string{"id", "tok", "lap", "cs", "ca", "cn", "ce"}
	args := make([]any, 0, len(batch)*len(cols))
	for _, st := range batch {
		args = append(args, st.TaskID, st.Token, TP(st.Lapsed), int8(st.CallbackState), st.CallbackAttempts, TP(st.CallbackNextAt),
			retry.TruncateError(st.CallbackError))
	}
	set := []assign{{"cb_state", "v.cs"}, {"cb_attempts", "v.ca"}, {"cb_next_at", "v.cn"}, {"cb_error", "v.ce"},
		{"claim_token", "0"}, {"run_deadline", "NULL"}, {"updated_at", "?"}}
	n, err := s.joinUpdate(ctx, tx, values(cols, len(batch)), args, set, []any{now}, fmt.Sprintf("cb_state = %d", retry.CallbackRunning))
	if err != nil {
		return 0, fmt.Errorf("settle callbacks: %w", err)
	}
	return n, nil
}

// insertAttempts records the attempts of the settlements whose claim still holds: their task
// is running (in the kind's phase) under the settlement's token. On MySQL it locks those tasks,
// so the UPDATE that follows sees them as they were when the attempts were recorded.
func (s *Store) insertAttempts(ctx context.Context, tx *sql.Tx, kind retry.AttemptKind, batch []*retry.Settlement) error {
	cols := []string{"id", "tok", "lap", "kind", "number", "node_id", "instance_id", "started_at", "duration_ms", "outcome", "error"}
	args := make([]any, 0, len(batch)*len(cols))
	rows := 0
	for _, st := range batch {
		a := st.Attempt
		if a == nil {
			continue
		}
		args = append(args, st.TaskID, st.Token, TP(st.Lapsed), int8(a.Kind), a.Number, a.NodeID, a.InstanceID, T(a.StartedAt),
			a.Duration.Milliseconds(), int8(a.Outcome), retry.TruncateError(a.Error))
		rows++
	}
	if rows == 0 {
		return nil
	}
	ph := phaseOf(kind)
	q := "INSERT INTO rh_attempt (task_id, kind, number, node_id, instance_id, started_at, duration_ms, outcome, error) " +
		"SELECT v.id, v.kind, v.number, v.node_id, v.instance_id, v.started_at, v.duration_ms, v.outcome, v.error " +
		"FROM (" + values(cols, rows) + ") v JOIN rh_task t ON " + claimHolds("t.") + " AND t." +
		fmt.Sprintf("%s = %d", ph.state, ph.running)
	if s.mysql {
		// READ COMMITTED would read the tasks without a lock, as of the statement's start: a
		// settlement of the same claim committed before the UPDATE below (the sweeper's, a
		// result's, a moved deadline) would leave an attempt recorded for an update that then
		// does not apply. Locked, the tasks stay as read until this transaction ends.
		q += " FOR UPDATE"
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("record %d attempts: %w", rows, err)
	}
	return nil
}

// tx runs fn in a transaction, committing when it returns nil.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}
