package storage

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// nonceRow is the nonce of a client request the API accepted, kept until the request's
// signature could no longer be accepted anyway, so that a captured request cannot be sent again
// to any node. The primary key refuses a repeat; expires_at serves the pruning.
type nonceRow struct {
	Nonce     string `gorm:"primaryKey;type:char(32)"`
	ExpiresAt Time   `gorm:"not null;index:idx_nonce_expires"`
}

func (nonceRow) TableName() string { return "rh_nonce" }

// AddNonce records a request's nonce until expires: one INSERT, whose primary key answers
// ErrConflict when the nonce was recorded before (the request is a replay).
func (s *Store) AddNonce(ctx context.Context, nonce string, expires time.Time) error {
	return addNonce(ctx, s.d, s.sql, nonce, expires)
}

// addNonce records a nonce through db, ErrConflict when it was recorded before.
func addNonce(ctx context.Context, d dialect, db dbtx, nonce string, expires time.Time) error {
	_, err := db.ExecContext(ctx, "INSERT INTO rh_nonce (nonce, expires_at) VALUES (?, ?)", nonce, T(expires))
	if d.isDuplicate(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("record request nonce: %w", err)
	}
	return nil
}

// DeleteExpiredNonces deletes up to limit nonces that expired before the given time and
// returns how many it deleted. It reads their keys first and deletes by key, the same SQL on
// every database; nodes running it at once delete each row once, and the loser's statement
// finds fewer rows.
func (s *Store) DeleteExpiredNonces(ctx context.Context, before time.Time, limit int) (int64, error) {
	rows, err := s.sql.QueryContext(ctx, fmt.Sprintf("SELECT nonce FROM rh_nonce WHERE expires_at < ? LIMIT %d", limit), T(before))
	if err != nil {
		return 0, fmt.Errorf("read expired nonces: %w", err)
	}
	var keys []any
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read expired nonces: %w", err)
		}
		keys = append(keys, n)
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("read expired nonces: %w", err)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read expired nonces: %w", err)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	q := "DELETE FROM rh_nonce WHERE nonce IN (?" + strings.Repeat(",?", len(keys)-1) + ")"
	r, err := s.sql.ExecContext(ctx, q, keys...)
	if err != nil {
		return 0, fmt.Errorf("delete expired nonces: %w", err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete expired nonces: %w", err)
	}
	return n, nil
}
