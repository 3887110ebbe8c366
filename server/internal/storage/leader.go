package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// leaderRow is one named leadership: which node holds it, until when. An empty node id or a
// passed expiry means no one holds it.
type leaderRow struct {
	Name      string `gorm:"primaryKey;type:varchar(64)"`
	NodeID    string `gorm:"type:varchar(64);not null;default:''"`
	ExpiresAt Time   `gorm:"not null"`
}

func (leaderRow) TableName() string { return "rh_leader" }

// AcquireLeader takes or renews the leadership name for node until expires, where it is free,
// expired at now, or already the node's, and reports whether the node holds it afterwards. The
// take is one conditional UPDATE, so of several nodes trying at once exactly one wins.
func (s *Store) AcquireLeader(ctx context.Context, name, node string, now, expires time.Time) (bool, error) {
	row := leaderRow{Name: name, ExpiresAt: T(time.Unix(0, 0))}
	if err := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
		return false, fmt.Errorf("acquire leadership %s for %s: %w", name, node, err)
	}
	res, err := s.sql.ExecContext(ctx, "UPDATE rh_leader SET node_id = ?, expires_at = ? WHERE name = ? "+
		"AND (node_id = ? OR node_id = '' OR expires_at < ?)", node, T(expires), name, node, T(now))
	if err != nil {
		return false, fmt.Errorf("acquire leadership %s for %s: %w", name, node, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, nil
	}
	// MySQL counts a row whose values did not change as unaffected: read who holds it.
	holder, until, err := s.Leader(ctx, name)
	if err != nil {
		return false, err
	}
	return holder == node && until.After(now), nil
}

// ReleaseLeader gives up the node's leadership name, so another node may take it at once.
func (s *Store) ReleaseLeader(ctx context.Context, name, node string) error {
	if _, err := s.sql.ExecContext(ctx, "UPDATE rh_leader SET node_id = '', expires_at = ? WHERE name = ? AND node_id = ?",
		T(time.Unix(0, 0)), name, node); err != nil {
		return fmt.Errorf("release leadership %s of %s: %w", name, node, err)
	}
	return nil
}

// Leader returns who holds the leadership name and until when; an empty node when no row
// exists or no one ever held it.
func (s *Store) Leader(ctx context.Context, name string) (node string, expires time.Time, err error) {
	var row leaderRow
	err = s.db.WithContext(ctx).Where("name = ?", name).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("read leadership %s: %w", name, err)
	}
	return row.NodeID, row.ExpiresAt.Time, nil
}
