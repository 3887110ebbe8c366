package storage

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"
)

// countErrors has onError told of every error a statement made through gorm returns, other
// than a row not found, a unique key taken (the callers answer it as a conflict) and a context
// that was cancelled (a caller that went away). It runs
// after each of gorm's operations; the statements written by hand on the hot paths report
// their errors to their callers, which count them where they know what failed (the settler's
// batches, say).
func countErrors(db *gorm.DB, d dialect, onError func(error)) error {
	after := func(tx *gorm.DB) {
		err := tx.Error
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) && !errors.Is(err, context.Canceled) && !d.isDuplicate(err) {
			onError(err)
		}
	}
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
