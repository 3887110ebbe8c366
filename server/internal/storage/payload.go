package storage

import (
	"context"
	"fmt"
)

// TaskArgs returns the stored arguments of the tasks, by id, with one SELECT. Tasks that no
// longer exist are missing from the map. Claims carry only the arguments' size, so dispatch
// reads them here, just before sending, for the tasks about to go out.
func (s *Store) TaskArgs(ctx context.Context, ids []int64) (map[int64][]byte, error) {
	out := make(map[int64][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := s.sql.QueryContext(ctx, "SELECT id, args FROM rh_task WHERE id IN ("+placeholders(len(ids))+")", args...)
	if err != nil {
		return nil, fmt.Errorf("read arguments of %d tasks: %w", len(ids), err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id int64
			a  []byte
		)
		if err := rows.Scan(&id, &a); err != nil {
			return nil, fmt.Errorf("read arguments of %d tasks: %w", len(ids), err)
		}
		out[id] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read arguments of %d tasks: %w", len(ids), err)
	}
	return out, nil
}
