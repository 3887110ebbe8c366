package storage

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// summaryRow counts what happened to a scene's tasks in one minute. The rows are written in
// the transactions that make the events (ingest, settlements), by upserts that add a batch's
// counts per scene, never by counting rh_task. The key (minute, scene_id, shard) serves the
// dashboard's reads of a time range.
//
// A scene's minute is spread over shards like its state totals (sceneStateRow): each
// transaction adds its counts to a shard picked in turn, so that the ingests and settlements
// running at once do not queue on one row per scene until each commits; readers add the shards
// up. Before shards, concurrent ingests of one scene spent most of their time waiting for that
// row's lock.
type summaryRow struct {
	Minute      Time  `gorm:"primaryKey;autoIncrement:false"`
	SceneID     int64 `gorm:"primaryKey;autoIncrement:false"`
	Shard       int   `gorm:"primaryKey;autoIncrement:false;size:32;default:0"`
	Reported    int64 `gorm:"not null;default:0"`
	Merged      int64 `gorm:"not null;default:0"`
	Replayed    int64 `gorm:"not null;default:0"`
	Succeeded   int64 `gorm:"not null;default:0"`
	Failed      int64 `gorm:"not null;default:0"`
	Exhausted   int64 `gorm:"not null;default:0"`
	CbSucceeded int64 `gorm:"column:cb_succeeded;not null;default:0"`
	CbFailed    int64 `gorm:"column:cb_failed;not null;default:0"`
	CbExhausted int64 `gorm:"column:cb_exhausted;not null;default:0"`
}

func (summaryRow) TableName() string { return "rh_summary_minute" }

// summaryHourRow holds the counts of a scene in one hour, rolled up from its minute rows once
// they are older than SummaryMinuteAge (RollUpSummary).
type summaryHourRow struct {
	Hour        Time  `gorm:"primaryKey;autoIncrement:false"`
	SceneID     int64 `gorm:"primaryKey;autoIncrement:false"`
	Reported    int64 `gorm:"not null;default:0"`
	Merged      int64 `gorm:"not null;default:0"`
	Replayed    int64 `gorm:"not null;default:0"`
	Succeeded   int64 `gorm:"not null;default:0"`
	Failed      int64 `gorm:"not null;default:0"`
	Exhausted   int64 `gorm:"not null;default:0"`
	CbSucceeded int64 `gorm:"column:cb_succeeded;not null;default:0"`
	CbFailed    int64 `gorm:"column:cb_failed;not null;default:0"`
	CbExhausted int64 `gorm:"column:cb_exhausted;not null;default:0"`
}

func (summaryHourRow) TableName() string { return "rh_summary_hour" }

// SummaryMinuteAge is how long minute rows are kept before they are rolled up into hours.
const SummaryMinuteAge = 30 * 24 * time.Hour

// summaryCols are the counters of a summary row, in the order of SummaryCounts' fields.
var summaryCols = []string{"reported", "merged", "replayed", "succeeded", "failed", "exhausted", "cb_succeeded", "cb_failed", "cb_exhausted"}

// summaryUpsert ends an INSERT into rh_summary_minute: a row that exists adds the new counts.
func summaryUpsert(d dialect) string {
	return d.upsert([]string{"minute", "scene_id", "shard"}, summaryAdd())
}

// summaryAdd adds an upsert's counts to the row's.
func summaryAdd() []assign {
	set := make([]assign, len(summaryCols))
	for i, c := range summaryCols {
		set[i] = assign{c, c + " + {new}" + c}
	}
	return set
}

// minuteOf is the summary minute of t.
func minuteOf(t time.Time) Time { return T(t.UTC().Truncate(time.Minute)) }

// sceneCounts are a batch's summary counts per scene.
type sceneCounts map[int64]*SummaryCounts

func (m sceneCounts) of(scene int64) *SummaryCounts {
	c := m[scene]
	if c == nil {
		c = &SummaryCounts{}
		m[scene] = c
	}
	return c
}

// writeSummary adds a batch's counts to the summary of now's minute, in one shard (the next in
// turn): one upsert, its rows in scene order, so that transactions counting the same scenes
// lock their rows in one order. The callers make it the last statement of their transaction,
// so the rows stay locked briefly.
func (s *Store) writeSummary(ctx context.Context, tx *sql.Tx, now Time, counts sceneCounts) error {
	if len(counts) == 0 {
		return nil
	}
	scenes := make([]int64, 0, len(counts))
	for id := range counts {
		scenes = append(scenes, id)
	}
	slices.Sort(scenes)
	minute := minuteOf(now.Time)
	var q strings.Builder
	shard := s.stateShard()
	q.WriteString("INSERT INTO rh_summary_minute (minute, scene_id, shard, " + strings.Join(summaryCols, ", ") + ") VALUES ")
	args := make([]any, 0, len(scenes)*(3+len(summaryCols)))
	for i, id := range scenes {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?)")
		c := counts[id]
		args = append(args, minute, id, shard, c.Reported, c.Merged, c.Replayed, c.Succeeded, c.Failed, c.Exhausted,
			c.CallbacksSucceeded, c.CallbacksFailed, c.CallbacksExhausted)
	}
	q.WriteString(summaryUpsert(s.d))
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("write the summary of %d scenes: %w", len(scenes), err)
	}
	return nil
}

// ingestCounts are a batch of reports' summary counts: per scene, every report, and those
// merged into an active task.
func ingestCounts(tasks []NewTask, results []IngestResult) sceneCounts {
	counts := sceneCounts{}
	for i := range tasks {
		c := counts.of(tasks[i].SceneID)
		c.Reported++
		if results[i].Merged {
			c.Merged++
		}
	}
	return counts
}

// settleSummaryCols are the per-settlement flags a settlement chunk passes to its count, and
// the state a replay's settlement moves its task to.
var settleSummaryCols = []string{"id", "tok", "lap", "rp", "ok", "fl", "ex", "cok", "cfl", "cex", "st"}

// countSettled adds to counts the settlements of a chunk whose claim still holds (the join that
// records their attempts, read before the UPDATE that applies them): per scene, replays run,
// succeeded, failed (timed-out included) and ending exhausted, and callbacks succeeded and
// failed, and callbacks that ran out of attempts; and to deltas the replays' tasks moving from
// running to the settlements' states (a callback moves none). It returns how many settlements
// it counted. Settlements given back without an attempt count nothing here.
func countSettled(ctx context.Context, tx *sql.Tx, kind retry.AttemptKind, batch []*retry.Settlement, counts sceneCounts, deltas stateDeltas) (int64, error) {
	args := make([]any, 0, len(batch)*len(settleSummaryCols))
	rows := 0
	for _, st := range batch {
		a := st.Attempt
		if a == nil {
			continue
		}
		ok, failed := b2i(a.Outcome == retry.OutcomeSucceeded), b2i(a.Outcome != retry.OutcomeSucceeded)
		if kind == retry.KindCallback {
			args = append(args, st.TaskID, st.Token, TP(st.Lapsed), 0, 0, 0, 0, ok, failed, b2i(st.CallbackState == retry.CallbackExhausted), 0)
		} else {
			args = append(args, st.TaskID, st.Token, TP(st.Lapsed), 1, ok, failed, b2i(st.State == retry.Exhausted), 0, 0, 0, int8(st.State))
		}
		rows++
	}
	if rows == 0 {
		return 0, nil
	}
	q := "SELECT t.scene_id, v.st, COUNT(*), SUM(v.rp), SUM(v.ok), SUM(v.fl), SUM(v.ex), SUM(v.cok), SUM(v.cfl), SUM(v.cex) " +
		"FROM (" + values(settleSummaryCols, rows) + ") v JOIN rh_task t ON " + qualify(claimHolds+" AND "+running(kind), "t.") +
		" GROUP BY t.scene_id, v.st"
	res, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("count %d %s results: %w", rows, kind, err)
	}
	defer res.Close()
	var matched int64
	for res.Next() {
		var (
			scene, n, rp, ok, fl, ex, cok, cfl, cex int64
			to                                      int8
		)
		if err := res.Scan(&scene, &to, &n, &rp, &ok, &fl, &ex, &cok, &cfl, &cex); err != nil {
			return 0, fmt.Errorf("count %d %s results: %w", rows, kind, err)
		}
		if kind == retry.KindReplay {
			deltas.move(scene, retry.Running, retry.State(to), n)
		}
		matched += n
		c := counts.of(scene)
		c.Replayed += rp
		c.Succeeded += ok
		c.Failed += fl
		c.Exhausted += ex
		c.CallbacksSucceeded += cok
		c.CallbacksFailed += cfl
		c.CallbacksExhausted += cex
	}
	if err := res.Err(); err != nil {
		return 0, fmt.Errorf("count %d %s results: %w", rows, kind, err)
	}
	return matched, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// SummaryCounts are the counts of one scene in one minute. CallbacksFailed counts failed
// callback attempts; CallbacksExhausted the callbacks that ran out of attempts.
type SummaryCounts struct {
	Reported, Merged, Replayed, Succeeded, Failed, Exhausted, CallbacksSucceeded, CallbacksFailed, CallbacksExhausted int64
}

// fields are pointers to the counts, in the order of summaryCols.
func (c *SummaryCounts) fields() []any {
	return []any{&c.Reported, &c.Merged, &c.Replayed, &c.Succeeded, &c.Failed, &c.Exhausted,
		&c.CallbacksSucceeded, &c.CallbacksFailed, &c.CallbacksExhausted}
}

// SummaryPoint is a scene's counts in the minute starting at Minute.
type SummaryPoint struct {
	Minute      time.Time
	SceneID     int64
	Scene       string
	GroupID     int64
	Group       string
	NamespaceID int64
	SummaryCounts
}

// SummaryFilter selects the summary rows the dashboard reads.
type SummaryFilter struct {
	// NamespaceIDs limits them to these namespaces' scenes; nil means every namespace, an
	// empty non-nil slice none.
	NamespaceIDs []int64
	// GroupID, when not 0, narrows them to one group's scenes.
	GroupID int64
	// SceneID, when not 0, narrows them to one scene.
	SceneID int64
	// From and Until bound the minutes: From <= minute < Until.
	From, Until time.Time
	// Hourly asks for one point per hour (the minute rows added up, and the rows already
	// rolled up); Minute is then the start of the hour.
	Hourly bool
}

// Summary returns the per-minute counts the filter selects, by minute then scene. Minutes in
// which a scene had no event have no point.
func (s *Store) Summary(ctx context.Context, f SummaryFilter, limit int) ([]SummaryPoint, error) {
	if f.NamespaceIDs != nil && len(f.NamespaceIDs) == 0 {
		return nil, nil
	}
	// The range applies inside: the hour expression's text need not compare with a bound time.
	where := " WHERE 1 = 1"
	args := []any{T(f.From), T(f.Until)}
	sums := make([]string, len(summaryCols))
	for i, c := range summaryCols {
		sums[i] = "SUM(" + c + ") AS " + c
	}
	// A minute's shards added up.
	src := "(SELECT minute, scene_id, " + strings.Join(sums, ", ") +
		" FROM rh_summary_minute WHERE minute >= ? AND minute < ? GROUP BY minute, scene_id)"
	if f.Hourly {
		cols := strings.Join(summaryCols, ", ")
		src = "(SELECT " + s.d.hourOf("minute") + " AS minute, scene_id, " + strings.Join(sums, ", ") +
			" FROM rh_summary_minute WHERE minute >= ? AND minute < ? GROUP BY " + s.d.hourOf("minute") + ", scene_id" +
			" UNION ALL SELECT hour AS minute, scene_id, " + cols + " FROM rh_summary_hour WHERE hour >= ? AND hour < ?)"
		args = append(args, T(f.From), T(f.Until))
	}
	q := "SELECT m.minute, m.scene_id, sc.name, g.id, g.name, g.namespace_id, m." + strings.Join(summaryCols, ", m.") + " FROM " + src + " m " +
		"JOIN rh_scene sc ON sc.id = m.scene_id JOIN rh_group g ON g.id = sc.group_id" + where
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
		q += " AND m.scene_id = ?"
		args = append(args, f.SceneID)
	}
	q += " ORDER BY m.minute, m.scene_id LIMIT ?"
	args = append(args, limit)
	rows, err := s.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read summary: %w", err)
	}
	defer rows.Close()
	var out []SummaryPoint
	for rows.Next() {
		var p SummaryPoint
		var m Time
		c := &p.SummaryCounts
		if err := rows.Scan(append([]any{&m, &p.SceneID, &p.Scene, &p.GroupID, &p.Group, &p.NamespaceID}, c.fields()...)...); err != nil {
			return nil, fmt.Errorf("read summary: %w", err)
		}
		p.Minute = m.Time
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read summary: %w", err)
	}
	return out, nil
}

// RollUpSummary adds the minute rows older than before (from the start of its hour back) into
// hour rows and deletes them, an hour at a time, each hour in one transaction: a pass cut off
// or run twice (by two leaders in turn) counts every minute once. It stops after maxHours hours
// and returns how many it rolled up.
func (s *Store) RollUpSummary(ctx context.Context, before time.Time, maxHours int) (int, error) {
	cutoff := T(before.UTC().Truncate(time.Hour))
	cols := strings.Join(summaryCols, ", ")
	sums := make([]string, len(summaryCols))
	for i, c := range summaryCols {
		sums[i] = "SUM(" + c + ")"
	}
	ins := "INSERT INTO rh_summary_hour (hour, scene_id, " + cols + ") SELECT ?, scene_id, " + strings.Join(sums, ", ") +
		" FROM rh_summary_minute WHERE minute >= ? AND minute < ? GROUP BY scene_id ORDER BY scene_id" +
		s.d.upsert([]string{"hour", "scene_id"}, summaryAdd())
	done := 0
	for done < maxHours {
		var oldest *Time
		if err := s.sql.QueryRowContext(ctx, "SELECT MIN(minute) FROM rh_summary_minute WHERE minute < ?", cutoff).Scan(&oldest); err != nil {
			return done, fmt.Errorf("roll up summary: %w", err)
		}
		if oldest == nil || oldest.IsZero() {
			return done, nil
		}
		hour := T(oldest.Truncate(time.Hour))
		end := T(hour.Add(time.Hour))
		err := s.retryTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, ins, hour, hour, end); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "DELETE FROM rh_summary_minute WHERE minute >= ? AND minute < ?", hour, end)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("roll up the summary of %s: %w", hour.Format(time.RFC3339), err)
		}
		done++
	}
	return done, nil
}
