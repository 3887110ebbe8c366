package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// The store tries a transaction again when the database broke it off to resolve a deadlock or
// a lock wait, a bounded number of times and not past its context; any other error is final.
func TestRetryOfTransientFailures(t *testing.T) {
	deadlock := fmt.Errorf("insert: %w", &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock"})
	lockWait := &mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded"}
	duplicate := &mysql.MySQLError{Number: 1062, Message: "Duplicate entry"}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		d       dialect
		ctx     context.Context
		fails   []error // what the tries return, in order; nil after them
		calls   int
		want    error // nil, or what the error must wrap
		wantCtx bool
	}{
		{"a deadlock twice, then success", mysqlDialect{}, context.Background(), []error{deadlock, lockWait}, 3, nil, false},
		{"deadlocks every time: bounded", mysqlDialect{}, context.Background(),
			[]error{deadlock, deadlock, deadlock, deadlock, deadlock, deadlock}, txTries, deadlock, false},
		{"a duplicate key is final", mysqlDialect{}, context.Background(), []error{duplicate}, 1, duplicate, false},
		{"no wait past the context", mysqlDialect{}, cancelled, []error{deadlock}, 1, deadlock, true},
		{"SQLite has nothing to try again", sqliteDialect{}, context.Background(), []error{deadlock}, 1, deadlock, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Store{d: tt.d, log: slog.New(slog.DiscardHandler)}
			calls := 0
			err := s.retry(tt.ctx, func() error {
				calls++
				if calls <= len(tt.fails) {
					return tt.fails[calls-1]
				}
				return nil
			})
			if calls != tt.calls {
				t.Errorf("%d tries, want %d", calls, tt.calls)
			}
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if errors.Is(err, context.Canceled) != tt.wantCtx {
				t.Errorf("error %v; the context's end in it: %v, want %v", err, errors.Is(err, context.Canceled), tt.wantCtx)
			}
		})
	}
}
