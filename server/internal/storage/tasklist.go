package storage

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
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
	// ByDue lists by next trigger time, soonest first, then by id (sorted after the filter's index: no index holds next_at alone, which every replay would rewrite).
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
}

// listCols are the task columns a list reads: the arguments only in part.
var listCols = "id, group_id, scene_id, bucket, idem_key, active_key, SUBSTR(args, 1, " + strconv.Itoa(ListArgsBytes+1) +
	") AS args, state, attempts, local_attempts, merges, next_at, deadline_at, claim_token, run_deadline, claimed_by, " +
	"last_error, cb_state, cb_attempts, cb_next_at, cb_error, report_id, created_at, updated_at, ended_at"

// ListTaskPage returns up to limit tasks matching f in order o, after the cursor (nil: from the
// start). Pages follow the sort key and id, never an offset, so a task inserted meanwhile does
// not shift the ones after it; every task that exists throughout is listed exactly once.
func (s *Store) ListTaskPage(ctx context.Context, f TaskFilter, o TaskOrder, after *TaskCursor, limit int) (TaskPage, error) {
	q := s.taskPageQuery(s.db.WithContext(ctx), f, o, after, limit)
	var rows []taskRow
	if err := q.Find(&rows).Error; err != nil {
		return TaskPage{}, fmt.Errorf("list tasks: %w", err)
	}
	var page TaskPage
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		page.Next = &TaskCursor{Order: o, Due: last.NextAt.Time, ID: last.ID}
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

// taskPageQuery is the SELECT of a page of ListTaskPage: limit+1 rows, the one past the page
// telling that there is a next one.
func (s *Store) taskPageQuery(db *gorm.DB, f TaskFilter, o TaskOrder, after *TaskCursor, limit int) *gorm.DB {
	where, args := s.where(&f)
	q := db.Table("rh_task").Select(listCols).Where(where, args...)
	switch o {
	case ByDue:
		if after != nil {
			q = q.Where("(next_at > ? OR (next_at = ? AND id > ?))", T(after.Due), T(after.Due), after.ID)
		}
		q = q.Order("next_at, id")
	default:
		if after != nil {
			q = q.Where("id < ?", after.ID)
		}
		q = q.Order("id DESC")
	}
	return q.Limit(limit + 1)
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
