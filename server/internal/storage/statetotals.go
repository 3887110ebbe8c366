package storage

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// sceneStateRow is a part of the number of a scene's tasks in one state. Every statement that
// inserts a task, changes its state or deletes it adds the change to these rows in its own
// transaction (applyStateDeltas), so a scene's tasks by state are the sum of its rows, read
// without counting rh_task.
//
// A scene's count of a state is spread over stateShards rows. A transaction writes all its
// changes into one shard, picked in turn (Store.stateShard), so that transactions running at
// once (the ingests of several requests, the claims and settlements of several nodes) each
// update rows of their own instead of queuing on one row per scene and state; the reader adds
// the shards up. A shard's own number means nothing (it can be below zero: one transaction
// claims a task in one shard, another settles it in another), only the sum does.
type sceneStateRow struct {
	SceneID int64 `gorm:"primaryKey;autoIncrement:false"`
	Shard   int   `gorm:"primaryKey;autoIncrement:false;size:32"`
	State   int8  `gorm:"primaryKey;autoIncrement:false;type:tinyint"`
	N       int64 `gorm:"not null;default:0"`
}

func (sceneStateRow) TableName() string { return "rh_scene_state" }

// stateShards is how many rows a scene's count of a state is spread over where several
// transactions write at once (MySQL); SQLite writes one transaction at a time and uses one.
const stateShards = 8

// metaStateTotals names the rh_meta row that says rh_scene_state is kept: it is written, in
// the transaction that counts the tasks there were, the first time a node of a version that
// keeps the totals starts on the database (Migrate).
const metaStateTotals = "scene_state_totals"

// stateKey is a scene and a state.
type stateKey struct {
	scene int64
	state retry.State
}

// stateDeltas are the changes a transaction makes to the number of tasks per scene and state.
// The paths that change tasks collect them as they go and apply them in one statement at the
// end of their transaction (applyStateDeltas).
type stateDeltas map[stateKey]int64

// add counts n tasks more (or, below zero, fewer) of the scene in the state.
func (d stateDeltas) add(scene int64, state retry.State, n int64) {
	if n != 0 {
		d[stateKey{scene, state}] += n
	}
}

// move counts n tasks of the scene that went from one state to another.
func (d stateDeltas) move(scene int64, from, to retry.State, n int64) {
	if from == to || n == 0 {
		return
	}
	d.add(scene, from, -n)
	d.add(scene, to, n)
}

// stateChunk bounds the rows of one upsert of deltas: 4 bound parameters each.
const stateChunk = 1000

// stateUpsert ends the INSERT of deltas: a row that exists adds the delta to its count.
func stateUpsert(d dialect) string {
	return d.upsert([]string{"scene_id", "shard", "state"}, []assign{{"n", "n + {new}n"}})
}

// stateShard picks the shard of a transaction's deltas: the next one in turn, so that the
// transactions one node runs at once write different rows.
func (s *Store) stateShard() int {
	shards := min(s.Writers(stateShards), stateShards)
	return int(s.shardTurn.Add(1) % uint32(shards))
}

// applyStateDeltas adds a transaction's deltas to rh_scene_state, in one shard, with one upsert
// of a row per scene and state whose count changed (a claim of 500 tasks of one scene writes
// two rows). The rows go in the order of their key, so transactions that write rows in common
// lock them in one order; callers apply the deltas after their changes to the tasks and before
// the summary (writeSummary), the same order in every transaction, so the rows stay locked
// briefly and no two transactions wait for each other in a circle.
func (s *Store) applyStateDeltas(ctx context.Context, tx *sql.Tx, deltas stateDeltas) error {
	keys := make([]stateKey, 0, len(deltas))
	for k, n := range deltas {
		if n != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, func(a, b stateKey) int {
		return cmp.Or(cmp.Compare(a.scene, b.scene), cmp.Compare(a.state, b.state))
	})
	shard := s.stateShard()
	upsert := stateUpsert(s.d)
	for start := 0; start < len(keys); start += stateChunk {
		chunk := keys[start:min(start+stateChunk, len(keys))]
		var q strings.Builder
		q.WriteString("INSERT INTO rh_scene_state (scene_id, shard, state, n) VALUES ")
		args := make([]any, 0, len(chunk)*4)
		for i, k := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?,?,?)")
			args = append(args, k.scene, shard, int8(k.state), deltas[k])
		}
		q.WriteString(upsert)
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("count %d scene states: %w", len(chunk), err)
		}
	}
	return nil
}

// SceneStateTotals returns the number of tasks per state of the given scenes (every scene when
// sceneIDs is empty), from the totals every change of a task keeps (never by counting the
// tasks). A scene with no task has no entry, and a state with none in a scene none either.
func (s *Store) SceneStateTotals(ctx context.Context, sceneIDs []int64) (map[int64]map[retry.State]int64, error) {
	q := "SELECT scene_id, state, SUM(n) FROM rh_scene_state"
	args := make([]any, 0, len(sceneIDs))
	if len(sceneIDs) > 0 {
		q += " WHERE scene_id IN (" + placeholders(len(sceneIDs)) + ")"
		for _, id := range sceneIDs {
			args = append(args, id)
		}
	}
	q += " GROUP BY scene_id, state"
	out := map[int64]map[retry.State]int64{}
	if err := scanStateCounts(ctx, s.sql, q, args, func(scene int64, st retry.State, n int64) {
		if n == 0 {
			return
		}
		m := out[scene]
		if m == nil {
			m = map[retry.State]int64{}
			out[scene] = m
		}
		m[st] = n
	}); err != nil {
		return nil, fmt.Errorf("read scene state totals: %w", err)
	}
	return out, nil
}

// scanStateCounts runs a query of (scene id, state, count) rows on db and hands each row to fn.
func scanStateCounts(ctx context.Context, db dbtx, q string, args []any, fn func(scene int64, st retry.State, n int64)) error {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			scene, n int64
			st       int8
		)
		if err := rows.Scan(&scene, &st, &n); err != nil {
			return err
		}
		fn(scene, retry.State(st), n)
	}
	return rows.Err()
}

// SceneStates is the number of a scene's tasks per state, with where the scene is.
type SceneStates struct {
	SceneID     int64
	Scene       string
	GroupID     int64
	Group       string
	NamespaceID int64
	States      map[retry.State]int64
}

// StateFilter selects the scenes whose state totals StateTotals reads.
type StateFilter struct {
	// NamespaceIDs limits them to these namespaces' scenes; nil means every namespace, an
	// empty non-nil slice none.
	NamespaceIDs []int64
	// GroupID, when not 0, narrows them to one group's scenes.
	GroupID int64
	// SceneID, when not 0, narrows them to one scene.
	SceneID int64
}

// StateTotals returns the tasks per state of the scenes the filter selects that have tasks, by
// scene id, read from the totals as SceneStateTotals does; a caller adds them up for a group
// or a namespace.
func (s *Store) StateTotals(ctx context.Context, f StateFilter) ([]SceneStates, error) {
	if f.NamespaceIDs != nil && len(f.NamespaceIDs) == 0 {
		return nil, nil
	}
	q := "SELECT t.scene_id, sc.name, g.id, g.name, g.namespace_id, t.state, t.n FROM " +
		"(SELECT scene_id, state, SUM(n) AS n FROM rh_scene_state GROUP BY scene_id, state) t " +
		"JOIN rh_scene sc ON sc.id = t.scene_id JOIN rh_group g ON g.id = sc.group_id WHERE t.n <> 0"
	var args []any
	if f.NamespaceIDs != nil {
		q += " AND g.namespace_id IN (" + placeholders(len(f.NamespaceIDs)) + ")"
		for _, id := range f.NamespaceIDs {
			args = append(args, id)
		}
	}
	if f.GroupID != 0 {
		q += " AND g.id = ?"
		args = append(args, f.GroupID)
	}
	if f.SceneID != 0 {
		q += " AND t.scene_id = ?"
		args = append(args, f.SceneID)
	}
	q += " ORDER BY t.scene_id, t.state"
	rows, err := s.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read state totals: %w", err)
	}
	defer rows.Close()
	var out []SceneStates
	for rows.Next() {
		var (
			p  SceneStates
			st int8
			n  int64
		)
		if err := rows.Scan(&p.SceneID, &p.Scene, &p.GroupID, &p.Group, &p.NamespaceID, &st, &n); err != nil {
			return nil, fmt.Errorf("read state totals: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].SceneID != p.SceneID {
			p.States = map[retry.State]int64{}
			out = append(out, p)
		}
		out[len(out)-1].States[retry.State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read state totals: %w", err)
	}
	return out, nil
}

// RecountStateTotals makes the state totals equal to a full count of the tasks, exactly, while
// nodes go on changing tasks. In one transaction that reads both tables as of one moment (a
// consistent snapshot on MySQL; SQLite writes one transaction at a time), it counts the tasks
// per scene and state, reads the totals, and adds the difference to the totals. Every other
// transaction changes the tasks and the totals together, so the difference at that moment is
// the error the totals carry, whatever commits meanwhile.
//
// A node runs it on its first start on a database whose totals were not kept yet (Migrate);
// an operator runs it after the totals went wrong: when nodes of an earlier version, which do
// not keep them, changed tasks beside this one during an upgrade, or after tasks were changed
// by hand in the database. It reads every task once, through the (scene_id, state, id) index.
func (s *Store) RecountStateTotals(ctx context.Context) error {
	_, err := s.recountStateTotals(ctx, false)
	return err
}

// recountStateTotals is RecountStateTotals; once, it does so only if the meta row that says the
// totals are kept is not there yet, and writes it in the same transaction, so that of the nodes
// starting at once on a database one recounts and the others find the row. It returns how many
// (scene, state) totals it corrected.
func (s *Store) recountStateTotals(ctx context.Context, once bool) (int, error) {
	var corrected int
	err := s.retry(ctx, func() error {
		tx, err := s.sql.BeginTx(ctx, s.d.snapshotTx())
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer tx.Rollback()
		if once {
			// The insert waits for another node's, and then fails as a duplicate: that node
			// counted.
			_, err := tx.ExecContext(ctx, "INSERT INTO rh_meta (name, value) VALUES (?, ?)", metaStateTotals, "kept")
			if s.d.isDuplicate(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("mark the totals kept: %w", err)
			}
		}
		deltas := stateDeltas{}
		if err := scanStateCounts(ctx, tx, "SELECT scene_id, state, COUNT(*) FROM rh_task GROUP BY scene_id, state", nil,
			func(scene int64, st retry.State, n int64) { deltas.add(scene, st, n) }); err != nil {
			return fmt.Errorf("count tasks: %w", err)
		}
		if err := scanStateCounts(ctx, tx, "SELECT scene_id, state, SUM(n) FROM rh_scene_state GROUP BY scene_id, state", nil,
			func(scene int64, st retry.State, n int64) { deltas.add(scene, st, -n) }); err != nil {
			return fmt.Errorf("read totals: %w", err)
		}
		corrected = 0
		for _, n := range deltas {
			if n != 0 {
				corrected++
			}
		}
		if err := s.applyStateDeltas(ctx, tx, deltas); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("recount state totals: %w", err)
	}
	return corrected, nil
}
