package storage

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// ExplainTaskPage runs EXPLAIN on the SELECT of ListTaskPage and returns its rows as maps of
// column to text.
func (s *Store) ExplainTaskPage(ctx context.Context, f TaskFilter, o TaskOrder, after *TaskCursor, limit int) ([]map[string]string, error) {
	var rows []taskRow
	stmt := s.taskPageQuery(s.db.WithContext(ctx).Session(&gorm.Session{DryRun: true}), f, o, after, limit).Find(&rows).Statement
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
