package storage

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// ListArgsBytes is how much of a task's arguments a list shows.
const ListArgsBytes = 256

// TaskOrder is the order of a task list.
type TaskOrder int8

// The orders of a task list.
const (
	// NewestFirst lists by id, newest first (the primary key serves it).
	NewestFirst TaskOrder = iota
	// ByDue lists by next trigger time, soonest first, then by id: the waiting, held or paused
	// tasks (see ListTaskPage; no index holds next_at alone, which every replay would rewrite).
	ByDue
)

// TaskCursor is where a page of a task list ends: the sort key and id of its last task.
type TaskCursor struct {
	Order TaskOrder
	Due   time.Time
	ID    int64
}

// String encodes the cursor as the opaque text the API hands out.
func (c TaskCursor) String() string {
	s := "i." + strconv.FormatInt(c.ID, 10)
	if c.Order == ByDue {
		s = "d." + strconv.FormatInt(c.Due.UnixMilli(), 10) + "." + strconv.FormatInt(c.ID, 10)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// ParseTaskCursor reads a cursor made by String for a list in order o.
func ParseTaskCursor(s string, o TaskOrder) (TaskCursor, error) {
	bad := fmt.Errorf("%w cursor: not one this server handed out for this order", retry.ErrInvalid)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return TaskCursor{}, bad
	}
	parts := strings.Split(string(b), ".")
	c := TaskCursor{Order: o}
	switch {
	case o == NewestFirst && len(parts) == 2 && parts[0] == "i":
		c.ID, err = strconv.ParseInt(parts[1], 10, 64)
	case o == ByDue && len(parts) == 3 && parts[0] == "d":
		var ms int64
		if ms, err = strconv.ParseInt(parts[1], 10, 64); err == nil {
			c.Due = time.UnixMilli(ms).UTC()
			c.ID, err = strconv.ParseInt(parts[2], 10, 64)
		}
	default:
		return TaskCursor{}, bad
	}
	if err != nil || c.ID < 1 {
		return TaskCursor{}, bad
	}
	return c, nil
}

var argPathRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])*(\.[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])*)*$`)

// ArgMatch selects tasks whose arguments (a JSON document) hold Value at Path.
type ArgMatch struct {
	// Path is a JSON path below the arguments' root: orderId, items[0].sku.
	Path string
	// Value is compared with the value found as text: a number 42 and a string "42" both
	// match 42.
	Value string
}

// CheckArgPath validates an argument path.
func CheckArgPath(p string) error {
	if len(p) > 200 || !argPathRE.MatchString(p) {
		return fmt.Errorf("%w argument path %q: want names and [index]es joined by dots, like order.items[0].sku", retry.ErrInvalid, p)
	}
	return nil
}

// TaskPage is one page of a task list.
type TaskPage struct {
	Tasks []retry.Task
	// ArgsTruncated is true for the tasks (by index) whose arguments were cut at ListArgsBytes.
	ArgsTruncated []bool
	// Next is where the next page starts; nil on the last page.
	Next *TaskCursor
	// Partial is true when the page stopped at ScanWindow rows examined before it was full:
	// Next then continues the search below the rows examined (see ScanWindow).
	Partial bool
}

// ScanWindow bounds the rows a page of a list reads when no index serves its filter (a part of
// the error text, a value in the arguments, the next trigger time, or scenes and states past
// mergeBudget): the page examines the tasks of at most ScanWindow consecutive ids below its
// cursor, newest first, and ends there, full or not, with a cursor to go on. A search through a
// million tasks is so pages the operator asks for one by one, each answered at once, rather
// than one request that reads the whole table; a created-time range takes it straight to the
// ids of its days.
const ScanWindow = 10000

// mergeBudget bounds the index entries a merge of idx_task_scene runs reads (one run per scene
// and state, each of up to a page and one, each a derived table the server builds): past it
// the list is read as a scan window, cheaper for the many scenes of a namespace, which hold
// enough of the table to fill a page from a window. maxBucketRuns bounds the runs of idx_task_due a list by due time merges
// (one per bucket and state: 128 buckets by default); past it the list sorts.
const mergeBudget, maxBucketRuns = 4096, 256

// createdSlack is how far apart in time a task's creation stamp and the order of its id may
// be: ingest stamps created_at before the INSERT gives the id, so a task stamped just before
// another may get the higher id (several nodes, a retried transaction), never by minutes. A
// created-time filter narrows the ids it reads to the tasks created within its range widened
// by this much, through idx_task_created.
const createdSlack = time.Minute

// listCols are the task columns a list reads, of the table aliased t: the arguments only in
// part.
var listCols = "t.id, t.group_id, t.scene_id, t.bucket, t.idem_key, t.active_key, SUBSTR(t.args, 1, " + strconv.Itoa(ListArgsBytes+1) +
	") AS args, t.state, t.attempts, t.local_attempts, t.merges, t.next_at, t.deadline_at, t.claim_token, t.run_deadline, t.claimed_by, " +
	"t.last_error, t.cb_state, t.cb_attempts, t.cb_next_at, t.cb_error, t.report_id, t.created_at, t.updated_at, t.ended_at"

// DueStates are the states a list by due time may hold: the tasks waiting for a trigger.
func DueStates() []retry.State { return []retry.State{retry.Waiting, retry.Held, retry.Paused} }

// ListTaskPage returns up to limit tasks matching f in order o, after the cursor (nil: from the
// start). Pages follow the sort key and id, never an offset, so a task inserted meanwhile does
// not shift the ones after it; every task that exists throughout is listed exactly once.
//
// Every page reads a bounded number of rows, whatever the table holds:
//   - newest first with no filter, or a key: the primary key, idx_task_key;
//   - scenes (a scene, a group's or namespaces' scenes) and states: one run of idx_task_scene
//     per scene and state, merged (up to mergeBudget entries);
//   - by due time: the waiting, held or paused tasks (waiting when f names no state), one run of
//     idx_task_due per bucket and state, merged; with any other filter, the tasks of the
//     filter in those states, sorted (what the filter's index reads);
//   - anything else (error text, arguments, next trigger time, many scenes): a scan window
//     (ScanWindow), narrowed by a created-time range through idx_task_created.
func (s *Store) ListTaskPage(ctx context.Context, f TaskFilter, o TaskOrder, after *TaskCursor, limit int) (TaskPage, error) {
	plan, err := s.taskPagePlan(ctx, s.db.WithContext(ctx), f, o, after, limit)
	if err != nil {
		return TaskPage{}, fmt.Errorf("list tasks: %w", err)
	}
	var page TaskPage
	if plan.empty {
		return page, nil
	}
	var rows []taskRow
	if err := plan.q.Find(&rows).Error; err != nil {
		return TaskPage{}, fmt.Errorf("list tasks: %w", err)
	}
	switch {
	case len(rows) > limit:
		rows = rows[:limit]
		last := rows[limit-1]
		page.Next = &TaskCursor{Order: o, Due: last.NextAt.Time, ID: last.ID}
	case plan.windowEnd > 0:
		// The window ended before the page was full: go on below it.
		page.Next, page.Partial = &TaskCursor{Order: o, ID: plan.windowEnd}, true
	}
	page.Tasks = make([]retry.Task, len(rows))
	page.ArgsTruncated = make([]bool, len(rows))
	for i := range rows {
		t := rows[i].domain()
		if len(t.Args) > ListArgsBytes {
			t.Args = cutUTF8(t.Args, ListArgsBytes)
			page.ArgsTruncated[i] = true
		}
		page.Tasks[i] = t
	}
	return page, nil
}

// taskPage is how a page is read: the SELECT (limit+1 rows, the one past the page telling that
// there is a next one), and for a scan window the id the next page starts below when this one
// is not full (0: the window reached the oldest task).
type taskPage struct {
	q         *gorm.DB
	windowEnd int64
	empty     bool // nothing can match: no query
}

// taskPagePlan chooses how a page is read (see ListTaskPage) and builds its SELECT on db; the
// small lookups it needs first (scene ids, bucket count, window bounds) run on s.db.
func (s *Store) taskPagePlan(ctx context.Context, db *gorm.DB, f TaskFilter, o TaskOrder, after *TaskCursor, limit int) (taskPage, error) {
	if o == ByDue {
		return s.duePagePlan(ctx, db, f, after, limit)
	}
	where, args := s.where(&f)
	plain := func(extra string, extraArgs ...any) *gorm.DB {
		q := db.Table("rh_task t").Select(listCols).Where(where, args...)
		if after != nil {
			q = q.Where("t.id < ?", after.ID)
		}
		if extra != "" {
			q = q.Where(extra, extraArgs...)
		}
		return q.Order("t.id DESC").Limit(limit + 1)
	}
	if f.Key != "" || (f.onlyScenesAndStates() && len(f.SceneIDs) == 0 && f.GroupID == 0 && f.NamespaceIDs == nil && len(f.States) == 0) {
		return taskPage{q: plain("")}, nil
	}
	if f.onlyScenesAndStates() {
		scenes, err := s.filterScenes(ctx, &f)
		if err != nil {
			return taskPage{}, err
		}
		if len(scenes) == 0 {
			return taskPage{empty: true}, nil
		}
		states := distinct(f.States)
		if len(states) == 0 {
			states = allStates
		}
		if len(scenes)*len(states)*(limit+1) <= mergeBudget {
			return taskPage{q: mergeScenes(db, scenes, states, after, limit)}, nil
		}
	}
	// A scan window: ids [lo, hi) below the cursor.
	hi, lo, oldest, err := s.scanBounds(ctx, &f, after)
	if err != nil {
		return taskPage{}, err
	}
	if hi <= lo {
		return taskPage{empty: true}, nil
	}
	p := taskPage{q: plain("t.id < ? AND t.id >= ?", hi, lo)}
	if lo > oldest {
		p.windowEnd = lo
	}
	return p, nil
}

// allStates are every task state, for a merge over idx_task_scene when the filter names none.
var allStates = []retry.State{retry.Waiting, retry.Running, retry.Succeeded, retry.Exhausted, retry.Paused,
	retry.Cancelled, retry.Held}

// distinct returns the states without repeats (a merge reads each once).
func distinct(states []retry.State) []retry.State {
	out := slices.Clone(states)
	slices.Sort(out)
	return slices.Compact(out)
}

// onlyScenesAndStates reports whether f selects by scene (scene, group, namespace) and state
// alone, which idx_task_scene serves.
func (f *TaskFilter) onlyScenesAndStates() bool {
	return f.Key == "" && f.ErrorContains == "" && f.Arg == nil && f.CreatedFrom == nil && f.CreatedTo == nil &&
		f.NextFrom == nil && f.NextTo == nil
}

// filterScenes resolves the scene part of f (scenes, group, namespaces) to scene ids, by id;
// every scene when f names none.
func (s *Store) filterScenes(ctx context.Context, f *TaskFilter) ([]int64, error) {
	q := s.db.WithContext(ctx).Table("rh_scene s")
	if len(f.SceneIDs) > 0 {
		q = q.Where("s.id IN ?", f.SceneIDs)
	}
	if f.GroupID != 0 {
		q = q.Where("s.group_id = ?", f.GroupID)
	}
	if f.NamespaceIDs != nil {
		if len(f.NamespaceIDs) == 0 {
			return nil, nil
		}
		q = q.Where("s.group_id IN (SELECT g.id FROM rh_group g WHERE g.namespace_id IN ?)", f.NamespaceIDs)
	}
	var ids []int64
	if err := q.Order("s.id").Pluck("s.id", &ids).Error; err != nil {
		return nil, fmt.Errorf("scenes of the filter: %w", err)
	}
	return ids, nil
}

// mergeScenes reads a page newest first as one run of idx_task_scene (scene_id, state, id) per
// scene and state, each cut at limit+1 ids (the index alone, no row read), merged by id; then
// the rows of the page's ids.
func mergeScenes(db *gorm.DB, scenes []int64, states []retry.State, after *TaskCursor, limit int) *gorm.DB {
	var runs []string
	var args []any
	for _, sc := range scenes {
		for _, st := range states {
			run := "SELECT id FROM (SELECT id FROM rh_task WHERE scene_id = ? AND state = ?"
			args = append(args, sc, int8(st))
			if after != nil {
				run += " AND id < ?"
				args = append(args, after.ID)
			}
			runs = append(runs, run+" ORDER BY id DESC LIMIT "+strconv.Itoa(limit+1)+") r"+strconv.Itoa(len(runs)))
		}
	}
	return db.Raw("SELECT "+listCols+" FROM (SELECT id FROM ("+strings.Join(runs, " UNION ALL ")+") u ORDER BY id DESC LIMIT "+
		strconv.Itoa(limit+1)+") p JOIN rh_task t ON t.id = p.id ORDER BY t.id DESC", args...)
}

// scanBounds is the ids [lo, hi) a scan-window page reads: below the cursor (or the newest
// task), ScanWindow of them, within the ids of the tasks created in f's created range; and the
// lowest id the search can reach.
func (s *Store) scanBounds(ctx context.Context, f *TaskFilter, after *TaskCursor) (hi, lo, oldest int64, err error) {
	db := s.db.WithContext(ctx).Table("rh_task")
	if after != nil {
		hi = after.ID
	} else if err := db.Select("COALESCE(MAX(id), 0) + 1").Scan(&hi).Error; err != nil {
		return 0, 0, 0, fmt.Errorf("newest task: %w", err)
	}
	if f.CreatedTo != nil {
		var ids []int64
		if err := createdBound(s.db.WithContext(ctx), f, true).Pluck("id", &ids).Error; err != nil {
			return 0, 0, 0, fmt.Errorf("tasks created in the range: %w", err)
		}
		if len(ids) == 0 {
			return 0, 0, 0, nil
		}
		hi = min(hi, ids[0]+1)
	}
	if oldest, err = s.oldestID(ctx, f); err != nil {
		return 0, 0, 0, err
	}
	w := int64(ScanWindow)
	if s.scanWindow > 0 {
		w = int64(s.scanWindow)
	}
	return hi, max(hi-w, oldest), oldest, nil
}

// oldestID is the lowest id a task matching f's created range can have: the oldest task's, or
// the first created in the range (a little before), by idx_task_created.
func (s *Store) oldestID(ctx context.Context, f *TaskFilter) (int64, error) {
	var ids []int64
	q := s.db.WithContext(ctx).Table("rh_task").Order("id").Limit(1)
	if f.CreatedFrom != nil {
		q = createdBound(s.db.WithContext(ctx), f, false)
	}
	if err := q.Pluck("id", &ids).Error; err != nil {
		return 0, fmt.Errorf("oldest task of the range: %w", err)
	}
	if len(ids) == 0 {
		return math.MaxInt64, nil
	}
	return ids[0], nil
}

// createdBound is the lookup of an id bound of f's created-time range, through
// idx_task_created: the newest task created before the range ends (upper), or the oldest
// created from its start, the range widened by createdSlack.
func createdBound(db *gorm.DB, f *TaskFilter, upper bool) *gorm.DB {
	q := db.Table("rh_task").Limit(1)
	if upper {
		return q.Where("created_at < ?", T(f.CreatedTo.Add(createdSlack))).Order("created_at DESC, id DESC")
	}
	return q.Where("created_at >= ?", T(f.CreatedFrom.Add(-createdSlack))).Order("created_at, id")
}

// duePagePlan reads a page by due time (see ListTaskPage).
func (s *Store) duePagePlan(ctx context.Context, db *gorm.DB, f TaskFilter, after *TaskCursor, limit int) (taskPage, error) {
	if len(f.States) == 0 {
		f.States = []retry.State{retry.Waiting}
	}
	for _, st := range f.States {
		if !slices.Contains(DueStates(), st) {
			return taskPage{}, fmt.Errorf("%w order: a list by due time holds waiting, held or paused tasks, not %s ones", retry.ErrInvalid, st)
		}
	}
	cursor := func(prefix string) (string, []any) {
		if after == nil {
			return "", nil
		}
		return " AND " + prefix + "next_at >= ? AND (" + prefix + "next_at > ? OR " + prefix + "id > ?)",
			[]any{T(after.Due), T(after.Due), after.ID}
	}
	only := f
	only.States = nil
	if w, _ := s.where(&only); w == "1 = 1" {
		buckets, err := s.BucketCount(ctx)
		if err != nil {
			return taskPage{}, err
		}
		if states := distinct(f.States); buckets*len(states) <= maxBucketRuns {
			return taskPage{q: mergeBuckets(db, buckets, states, after, limit)}, nil
		}
	}
	// Sorted: the sort holds the due time and id alone, the page's rows are read after it.
	where, args := s.where(&f)
	c, cargs := cursor("d.")
	n := strconv.Itoa(limit + 1)
	q := db.Raw("SELECT "+listCols+" FROM (SELECT d.id, d.next_at FROM rh_task d WHERE "+where+c+" ORDER BY d.next_at, d.id LIMIT "+n+
		") p JOIN rh_task t ON t.id = p.id ORDER BY p.next_at, p.id", append(args, cargs...)...)
	return taskPage{q: q}, nil
}

// mergeBuckets reads a page by due time as one run of idx_task_due (bucket, state, claim_token,
// next_at) per bucket and state, each cut at limit+1 entries (the index alone: a task in these
// states holds claim token 0), merged by due time and id; then the rows of the page.
func mergeBuckets(db *gorm.DB, buckets int, states []retry.State, after *TaskCursor, limit int) *gorm.DB {
	var runs []string
	var args []any
	for b := range buckets {
		for _, st := range states {
			run := "SELECT id, next_at FROM (SELECT id, next_at FROM rh_task WHERE bucket = ? AND state = ? AND claim_token = 0"
			args = append(args, b, int8(st))
			if after != nil {
				run += " AND next_at >= ? AND (next_at > ? OR id > ?)"
				args = append(args, T(after.Due), T(after.Due), after.ID)
			}
			runs = append(runs, run+" ORDER BY next_at, id LIMIT "+strconv.Itoa(limit+1)+") r"+strconv.Itoa(len(runs)))
		}
	}
	return db.Raw("SELECT "+listCols+" FROM (SELECT id, next_at FROM ("+strings.Join(runs, " UNION ALL ")+
		") u ORDER BY next_at, id LIMIT "+strconv.Itoa(limit+1)+") p JOIN rh_task t ON t.id = p.id ORDER BY p.next_at, p.id", args...)
}

// cutUTF8 cuts b to at most n bytes without splitting a character.
func cutUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && b[n]&0xC0 == 0x80 {
		n--
	}
	return b[:n]
}

// CountTasks counts the tasks matching f (for an operator to see before a bulk action).
func (s *Store) CountTasks(ctx context.Context, f TaskFilter) (int64, error) {
	where, args := s.where(&f)
	var n int64
	if err := s.db.WithContext(ctx).Table("rh_task").Where(where, args...).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("count tasks: %w", err)
	}
	return n, nil
}

// TaskNamespace is the namespace id of a task's group.
func (s *Store) TaskNamespace(ctx context.Context, id int64) (retry.Task, int64, error) {
	t, err := s.Task(ctx, id)
	if err != nil {
		return t, 0, err
	}
	var ns int64
	err = s.db.WithContext(ctx).Table("rh_group").Select("namespace_id").Where("id = ?", t.GroupID).Scan(&ns).Error
	if err != nil {
		return t, 0, fmt.Errorf("namespace of task %d: %w", id, err)
	}
	return t, ns, nil
}

// SetArgs replaces the arguments of a task in a state where retry allows it (retry.ArgsEditable):
// ErrConflict when the task is in another state (a running one, an ended one), ErrNotFound when
// there is no such task.
func (s *Store) SetArgs(ctx context.Context, id int64, args []byte) error {
	var n int64
	err := s.retry(ctx, func() error {
		r := s.db.WithContext(ctx).Exec("UPDATE rh_task SET args = ?, updated_at = ? WHERE id = ? AND "+
			inStates(retry.ArgsEditableStates()), string(args), T(time.Now()), id)
		n = r.RowsAffected
		return r.Error
	})
	if err != nil {
		return fmt.Errorf("set arguments of task %d: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	t, err := s.Task(ctx, id)
	if err != nil {
		return err
	}
	return fmt.Errorf("task %d is %s; its arguments can be edited while it is waiting, held, paused or a dead letter: %w",
		id, t.State, ErrConflict)
}

// BucketCount is the number of buckets the database was set up with.
func (s *Store) BucketCount(ctx context.Context) (int, error) {
	var row metaRow
	if err := s.db.WithContext(ctx).Where("name = ?", metaBuckets).Take(&row).Error; err != nil {
		return 0, fmt.Errorf("read bucket count: %w", err)
	}
	n, err := strconv.Atoi(row.Value)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("read bucket count: %q is no count", row.Value)
	}
	return n, nil
}
