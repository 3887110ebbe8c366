package storage

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// Settle writes a batch of settlements and their attempts in one transaction. Per kind (replay,
// callback), one locking read finds the tasks whose claim still holds (running under the same
// claim token and, for a take-back of a lapsed claim, with the claim's deadline still passed),
// one multi-row INSERT records their attempts, then one UPDATE joins the tasks to the batch's
// new values, applying each only while that still holds; the claims given back without an
// attempt (retry.Settlement.Released) take one more read and UPDATE that writes only their
// state, next trigger time and claim. The results whose claim holds are counted (summary.go)
// from that read, with the moves of their tasks between states; the transaction ends by adding the
// moves to the state totals (statetotals.go) and the counts to the minute's summary. A
// settlement that comes too late (the sweeper took the task back, an operator cancelled it, the
// dispatcher extended the lapsed claim) changes nothing, records nothing and counts nothing.
// It returns how many tasks changed.
//
// Each statement takes its tasks in the order of their ids, so that two batches written at once
// lock the tasks they share in the same order; a deadlock or lock wait that remains is tried
// again (retryTx).
func (s *Store) Settle(ctx context.Context, batch []retry.Settlement) (int64, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	type part struct {
		kind     retry.AttemptKind
		released bool
		batch    []*retry.Settlement
	}
	parts := []part{{kind: retry.KindReplay}, {kind: retry.KindReplay, released: true},
		{kind: retry.KindCallback}, {kind: retry.KindCallback, released: true}}
	for i := range batch {
		st := &batch[i]
		n := 0
		if st.Kind == retry.KindCallback {
			n = 2
		}
		if st.Released {
			n++
		}
		parts[n].batch = append(parts[n].batch, st)
	}
	for _, p := range parts {
		slices.SortFunc(p.batch, func(a, b *retry.Settlement) int { return cmp.Compare(a.TaskID, b.TaskID) })
	}
	now := T(time.Now())
	var changed int64
	err := s.retryTx(ctx, func(tx *sql.Tx) error {
		changed = 0
		counts := sceneCounts{}
		deltas := stateDeltas{}
		for _, p := range parts {
			for start := 0; start < len(p.batch); start += maxCompound {
				chunk := p.batch[start:min(start+maxCompound, len(p.batch))]
				var (
					n, moved int64
					err      error
				)
				switch {
				case p.released && p.kind == retry.KindReplay:
					if moved, err = s.moveClaimed(ctx, tx, chunk, deltas); err == nil {
						n, err = s.settleReleased(ctx, tx, p.kind, chunk, now)
					}
				case p.released:
					n, err = s.settleReleased(ctx, tx, p.kind, chunk, now)
				default:
					var held map[claimKey]int64
					if held, err = s.lockHeld(ctx, tx, p.kind, chunk); err == nil {
						moved = countHeld(p.kind, chunk, held, counts, deltas)
						if err = s.insertAttempts(ctx, tx, chunk, held); err == nil {
							if p.kind == retry.KindCallback {
								n, err = s.settleCallbacks(ctx, tx, chunk, now)
							} else {
								n, err = s.settleReplays(ctx, tx, chunk, now)
							}
						}
					}
				}
				if err == nil && p.kind == retry.KindReplay && n != moved {
					// The tasks counted are locked as read (but for a claim's deadline moved back
					// meanwhile): totals written now would be wrong, so the batch is tried anew.
					err = fmt.Errorf("settled %d replays of the %d counted: %w", n, moved, errChangedMeanwhile)
				}
				if err != nil {
					return err
				}
				changed += n
			}
		}
		if err := s.applyStateDeltas(ctx, tx, deltas); err != nil {
			return err
		}
		return s.writeSummary(ctx, tx, now, counts)
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

// claimHolds matches a task to the batch row v of its settlement while the settlement's claim
// holds: same id and claim token, and for a take-back of a lapsed claim (v.lap set), a deadline
// still passed.
const claimHolds = "{t}id = v.id AND {t}claim_token = v.tok AND (v.lap IS NULL OR {t}run_deadline <= v.lap)"

// claimCleared are the assignments that end a task's claim (retry.ClearClaim), which every
// settlement makes.
func claimCleared() []assign { return []assign{{"claim_token", "0"}, {"run_deadline", "NULL"}} }

// joinUpdate updates the tasks whose claim holds to their batch row's values, where they are
// still running in the phase: each task row takes the values of the batch row with its id and
// claim token.
func (s *Store) joinUpdate(ctx context.Context, tx *sql.Tx, vals string, valArgs []any, set []assign, now Time, running string) (int64, error) {
	set = append(append(set, claimCleared()...), assign{"updated_at", "?"})
	q, args := s.d.updateJoin(vals, valArgs, claimHolds, set, []any{now}, running)
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// running is the condition that a task runs in the kind's phase.
func running(kind retry.AttemptKind) string {
	ph := phaseOf(kind)
	return fmt.Sprintf("{t}%s = %d", ph.state, ph.running)
}

func (s *Store) settleReplays(ctx context.Context, tx *sql.Tx, batch []*retry.Settlement, now Time) (int64, error) {
	cols := []string{"id", "tok", "lap", "st", "att", "nx", "le", "ea", "cs", "cn"}
	args := make([]any, 0, len(batch)*len(cols))
	for _, st := range batch {
		args = append(args, st.TaskID, st.Token, TP(st.Lapsed), int8(st.State), st.Attempts, T(st.NextAt),
			retry.TruncateError(st.LastError), TP(st.EndedAt), int8(st.CallbackState), TP(st.CallbackNextAt))
	}
	// A settlement that ends its task has what ending does (retry.Ending): its claim ends, its
	// end time is the settlement's, and its key is free for a new task.
	set := []assign{{"state", "v.st"}, {"attempts", "v.att"}, {"next_at", "v.nx"}, {"last_error", "v.le"},
		{"ended_at", "v.ea"}, {"cb_state", "v.cs"}, {"cb_next_at", "v.cn"},
		{"active_key", "CASE WHEN v.st IN (" + intList(retry.EndedStates()) + ") THEN NULL ELSE {t}active_key END"}}
	n, err := s.joinUpdate(ctx, tx, values(cols, len(batch)), args, set, now, running(retry.KindReplay))
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
	set := []assign{{"cb_state", "v.cs"}, {"cb_attempts", "v.ca"}, {"cb_next_at", "v.cn"}, {"cb_error", "v.ce"}}
	n, err := s.joinUpdate(ctx, tx, values(cols, len(batch)), args, set, now, running(retry.KindCallback))
	if err != nil {
		return 0, fmt.Errorf("settle callbacks: %w", err)
	}
	return n, nil
}

// settleReleased writes claims given back without an attempt: the phase's state and next
// trigger time, and the end of the claim; nothing else of the task.
func (s *Store) settleReleased(ctx context.Context, tx *sql.Tx, kind retry.AttemptKind, batch []*retry.Settlement, now Time) (int64, error) {
	cols := []string{"id", "tok", "lap", "st", "nx"}
	args := make([]any, 0, len(batch)*len(cols))
	for _, st := range batch {
		if kind == retry.KindCallback {
			args = append(args, st.TaskID, st.Token, TP(st.Lapsed), int8(st.CallbackState), TP(st.CallbackNextAt))
		} else {
			args = append(args, st.TaskID, st.Token, TP(st.Lapsed), int8(st.State), T(st.NextAt))
		}
	}
	ph := phaseOf(kind)
	set := []assign{{ph.state, "v.st"}, {ph.next, "v.nx"}}
	n, err := s.joinUpdate(ctx, tx, values(cols, len(batch)), args, set, now, running(kind))
	if err != nil {
		return 0, fmt.Errorf("give back %d %s claims: %w", len(batch), kind, err)
	}
	return n, nil
}

// lockHeld reads and locks (lockRows) the tasks of the settlements whose claim still holds:
// running in the kind's phase under the settlement's token (and for a take-back, with its
// deadline still passed). It returns their scenes by task and token (two settlements of one
// task in a batch, under an old claim and a new one, are told apart). Locked, the tasks stay as read
// until the transaction ends, so the attempts recorded and the counts made for them match the
// UPDATE that follows: under READ COMMITTED an unlocked read would see them as of the
// statement's start, and a settlement of the same claim committed meanwhile (the sweeper's, a
// moved deadline) would leave an attempt recorded for an update that does not apply.
func (s *Store) lockHeld(ctx context.Context, tx *sql.Tx, kind retry.AttemptKind, batch []*retry.Settlement) (map[claimKey]int64, error) {
	cols := []string{"id", "tok", "lap"}
	args := make([]any, 0, len(batch)*len(cols))
	for _, st := range batch {
		args = append(args, st.TaskID, st.Token, TP(st.Lapsed))
	}
	q := "SELECT t.id, v.tok, t.scene_id FROM (" + values(cols, len(batch)) + ") v JOIN rh_task t ON " +
		qualify(claimHolds+" AND "+running(kind), "t.") + " ORDER BY t.id" + s.d.lockRows()
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read %d %s claims: %w", len(batch), kind, err)
	}
	defer rows.Close()
	held := make(map[claimKey]int64, len(batch))
	for rows.Next() {
		var id, tok, scene int64
		if err := rows.Scan(&id, &tok, &scene); err != nil {
			return nil, fmt.Errorf("read %d %s claims: %w", len(batch), kind, err)
		}
		held[claimKey{id, tok}] = scene
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %d %s claims: %w", len(batch), kind, err)
	}
	return held, nil
}

// claimKey is a task and the token of a claim on it.
type claimKey struct{ id, tok int64 }

// countHeld adds to counts the results of the settlements whose claim holds (held, from
// lockHeld), and to deltas the moves of their replays from running; it returns how many hold.
func countHeld(kind retry.AttemptKind, batch []*retry.Settlement, held map[claimKey]int64, counts sceneCounts, deltas stateDeltas) int64 {
	var n int64
	for _, st := range batch {
		scene, ok := held[claimKey{st.TaskID, st.Token}]
		if !ok {
			continue
		}
		n++
		if kind == retry.KindReplay {
			deltas.move(scene, retry.Running, st.State, 1)
		}
		a := st.Attempt
		if a == nil {
			continue
		}
		c := counts.of(scene)
		okN, failed := int64(b2i(a.Outcome == retry.OutcomeSucceeded)), int64(b2i(a.Outcome != retry.OutcomeSucceeded))
		if kind == retry.KindCallback {
			c.CallbacksSucceeded += okN
			c.CallbacksFailed += failed
			c.CallbacksExhausted += int64(b2i(st.CallbackState == retry.CallbackExhausted))
			continue
		}
		c.Replayed++
		c.Succeeded += okN
		c.Failed += failed
		c.Exhausted += int64(b2i(st.State == retry.Exhausted))
	}
	return n
}

// insertAttempts records, in one multi-row INSERT, the attempts of the settlements whose claim
// holds (held, from lockHeld).
func (s *Store) insertAttempts(ctx context.Context, tx *sql.Tx, batch []*retry.Settlement, held map[claimKey]int64) error {
	const cols = 9
	args := make([]any, 0, len(batch)*cols)
	var q strings.Builder
	q.WriteString("INSERT INTO rh_attempt (task_id, kind, number, node_id, instance_id, started_at, duration_ms, outcome, error) VALUES ")
	rows := 0
	for _, st := range batch {
		a := st.Attempt
		if _, ok := held[claimKey{st.TaskID, st.Token}]; !ok || a == nil {
			continue
		}
		if rows > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(?,?,?,?,?,?,?,?,?)")
		args = append(args, st.TaskID, int8(a.Kind), a.Number, a.NodeID, a.InstanceID, T(a.StartedAt),
			a.Duration.Milliseconds(), int8(a.Outcome), retry.TruncateError(a.Error))
		rows++
	}
	if rows == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("record %d attempts: %w", rows, err)
	}
	return nil
}

// moveClaimed counts in deltas the moves of replay claims given back without an attempt: it
// locks the tasks whose claim still holds (lockRows), which the UPDATE that follows then
// changes, and moves each from running to its settlement's state; it returns how many.
func (s *Store) moveClaimed(ctx context.Context, tx *sql.Tx, batch []*retry.Settlement, deltas stateDeltas) (int64, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	cols := []string{"id", "tok", "lap"}
	args := make([]any, 0, len(batch)*len(cols))
	to := make(map[claimKey]retry.State, len(batch))
	for _, st := range batch {
		args = append(args, st.TaskID, st.Token, TP(st.Lapsed))
		to[claimKey{st.TaskID, st.Token}] = st.State
	}
	q := "SELECT t.id, v.tok, t.scene_id FROM (" + values(cols, len(batch)) + ") v JOIN rh_task t ON " +
		qualify(claimHolds+" AND "+running(retry.KindReplay), "t.") + " ORDER BY t.id" + s.d.lockRows()
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("read %d claims given back: %w", len(batch), err)
	}
	defer rows.Close()
	var moved int64
	for rows.Next() {
		var id, tok, scene int64
		if err := rows.Scan(&id, &tok, &scene); err != nil {
			return 0, fmt.Errorf("read %d claims given back: %w", len(batch), err)
		}
		deltas.move(scene, retry.Running, to[claimKey{id, tok}], 1)
		moved++
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read %d claims given back: %w", len(batch), err)
	}
	return moved, nil
}
