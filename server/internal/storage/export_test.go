package storage

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// SetScanWindow makes the task list's scan window n ids.
func (s *Store) SetScanWindow(n int) { s.scanWindow = n }

// SetReturning turns the ingest's use of RETURNING on or off, to test the path of databases
// without it (MySQL).
func (s *Store) SetReturning(on bool) { s.returning = on }

// ExplainTaskPage runs EXPLAIN on the SELECT of ListTaskPage, and on the lookups of the id
// bounds of a created-time range, and returns their rows as maps of column to text.
func (s *Store) ExplainTaskPage(ctx context.Context, f TaskFilter, o TaskOrder, after *TaskCursor, limit int) ([]map[string]string, error) {
	var rows []taskRow
	plan, err := s.taskPagePlan(ctx, s.db.WithContext(ctx).Session(&gorm.Session{DryRun: true}), f, o, after, limit)
	if err != nil {
		return nil, err
	}
	if plan.empty {
		return nil, nil
	}
	dry := s.db.WithContext(ctx).Session(&gorm.Session{DryRun: true})
	stmts := []*gorm.Statement{plan.q.Find(&rows).Statement}
	var ids []int64
	if f.CreatedTo != nil && o == NewestFirst {
		stmts = append(stmts, createdBound(dry, &f, true).Pluck("id", &ids).Statement)
	}
	if f.CreatedFrom != nil && o == NewestFirst {
		stmts = append(stmts, createdBound(dry, &f, false).Pluck("id", &ids).Statement)
	}
	var out []map[string]string
	for _, stmt := range stmts {
		rows, err := s.explain(ctx, stmt)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// explain runs EXPLAIN on a statement built in a dry run.
func (s *Store) explain(ctx context.Context, stmt *gorm.Statement) ([]map[string]string, error) {
	r, err := s.sql.QueryContext(ctx, "EXPLAIN "+stmt.SQL.String(), stmt.Vars...)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	defer r.Close()
	cols, err := r.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for r.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := r.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := map[string]string{}
		for i, c := range cols {
			switch v := vals[i].(type) {
			case []byte:
				m[c] = string(v)
			case nil:
				m[c] = ""
			default:
				m[c] = fmt.Sprint(v)
			}
		}
		out = append(out, m)
	}
	return out, r.Err()
}
