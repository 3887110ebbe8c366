package storage

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// dbError reports whether err is the database's error: not a row not found, a unique key
// taken (the callers answer it as a conflict), a context cancelled (a caller that went away) or
// one of the store's own answers (a job lost, tasks changed meanwhile, an invalid request).
func (s *Store) dbError(err error) bool {
	return err != nil && !errors.Is(err, gorm.ErrRecordNotFound) && !errors.Is(err, ErrNotFound) &&
		!errors.Is(err, ErrConflict) && !errors.Is(err, ErrJobLost) && !errors.Is(err, errChangedMeanwhile) && !errors.Is(err, retry.ErrInvalid) &&
		!errors.Is(err, context.Canceled) && !s.d.isDuplicate(err)
}

// countError tells Options.OnError of err when it is the database's error (dbError).
func (s *Store) countError(err error) {
	if s.onError != nil && s.dbError(err) {
		s.onError(err)
	}
}

// countErrors counts the errors of the statements made through gorm (countError), after each
// of gorm's operations. The statements written by hand run in Store.tx, which counts the
// errors of its transactions; the few reads outside one report their errors to their callers.
func (s *Store) countErrors(db *gorm.DB) error {
	after := func(tx *gorm.DB) { s.countError(tx.Error) }
	cb := db.Callback()
	for _, reg := range []struct {
		name string
		err  error
	}{
		{"create", cb.Create().After("gorm:create").Register("retryhub:count_errors", after)},
		{"query", cb.Query().After("gorm:query").Register("retryhub:count_errors", after)},
		{"update", cb.Update().After("gorm:update").Register("retryhub:count_errors", after)},
		{"delete", cb.Delete().After("gorm:delete").Register("retryhub:count_errors", after)},
		{"row", cb.Row().After("gorm:row").Register("retryhub:count_errors", after)},
		{"raw", cb.Raw().After("gorm:raw").Register("retryhub:count_errors", after)},
	} {
		if reg.err != nil {
			return fmt.Errorf("count database errors after gorm's %s: %w", reg.name, reg.err)
		}
	}
	return nil
}
