package storage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// CatalogFilter selects a page of namespaces, groups or scenes, in id order.
type CatalogFilter struct {
	// IDs restricts namespaces to these ids unless All is set (the namespaces a caller may see).
	IDs []int64
	All bool
	// Parent is the namespace of a page of groups, the group of a page of scenes.
	Parent int64
	// Name keeps the rows whose name contains it.
	Name string
	// Enabled, when set, keeps the rows with that state.
	Enabled *bool
	// After is the last id of the previous page (0: the first page).
	After int64
	// Limit is the page's size.
	Limit int
}

// likeContains is a LIKE pattern matching names that contain s, with its wildcards escaped.
func likeContains(s string) string {
	r := strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`)
	return "%" + r.Replace(s) + "%"
}

// where applies the filter's name, state and key conditions with col prefixing the columns.
func (f CatalogFilter) where(q *gorm.DB, col string) *gorm.DB {
	if f.Name != "" {
		// '!' escapes: a backslash is itself an escape in MySQL's string literals, not in SQLite's.
		q = q.Where(col+"name LIKE ? ESCAPE '!'", likeContains(f.Name))
	}
	if f.Enabled != nil {
		q = q.Where(col+"enabled = ?", *f.Enabled)
	}
	return q.Where(col+"id > ?", f.After).Order(col + "id").Limit(f.Limit)
}

// NamespacePage returns a page of namespaces (by primary key).
func (s *Store) NamespacePage(ctx context.Context, f CatalogFilter) ([]retry.Namespace, error) {
	q := s.db.WithContext(ctx).Model(&namespaceRow{})
	if !f.All {
		if len(f.IDs) == 0 {
			return nil, nil
		}
		q = q.Where("id IN ?", f.IDs)
	}
	var rows []namespaceRow
	if err := f.where(q, "").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	out := make([]retry.Namespace, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// Namespace finds a namespace by id.
func (s *Store) Namespace(ctx context.Context, id int64) (retry.Namespace, error) {
	var row namespaceRow
	if err := s.db.WithContext(ctx).Take(&row, id).Error; err != nil {
		return retry.Namespace{}, notFound(err, fmt.Sprintf("namespace %d", id))
	}
	return row.domain(), nil
}

// GroupPage returns a page of a namespace's groups (by the unique key's namespace, then id).
func (s *Store) GroupPage(ctx context.Context, f CatalogFilter) ([]retry.Group, error) {
	var rows []groupJoined
	q := s.groupsJoined(ctx).Where("g.namespace_id = ?", f.Parent)
	if err := f.where(q, "g.").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list groups of namespace %d: %w", f.Parent, err)
	}
	out := make([]retry.Group, len(rows))
	for i := range rows {
		out[i] = rows[i].Row.domain(rows[i].NamespaceName, rows[i].NamespaceEnabled)
	}
	return out, nil
}

// ScenePage returns a page of a group's scenes (by the unique key's group, then id).
func (s *Store) ScenePage(ctx context.Context, f CatalogFilter) ([]retry.Scene, error) {
	var rows []sceneRow
	q := s.db.WithContext(ctx).Model(&sceneRow{}).Where("group_id = ?", f.Parent)
	if err := f.where(q, "").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list scenes of group %d: %w", f.Parent, err)
	}
	out := make([]retry.Scene, 0, len(rows))
	for i := range rows {
		sc, err := rows[i].domain()
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// RotateGroupToken makes token the group's token; the one it replaces stays valid for grace
// (none when grace is zero), replacing any earlier token still in its grace period.
func (s *Store) RotateGroupToken(ctx context.Context, id int64, token string, grace time.Duration) error {
	if len(token) < 16 || len(token) > 128 {
		return fmt.Errorf("%w group token: want 16 to 128 characters", retry.ErrInvalid)
	}
	now := time.Now()
	prev, until := "", (*Time)(nil)
	if grace > 0 {
		u := T(now.Add(grace))
		prev, until = "keep", &u
	}
	// One statement, so a concurrent rotation cannot lose a token; prev_token is assigned
	// before token, which MySQL evaluates left to right (SQLite reads the old row throughout).
	res := s.db.WithContext(ctx).Exec("UPDATE rh_group SET prev_token = CASE WHEN ? = 'keep' THEN token ELSE '' END, "+
		"prev_token_until = ?, token = ?, updated_at = ? WHERE id = ?", prev, until, token, T(now), id)
	err := res.Error
	if err == nil && res.RowsAffected == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("rotate token of group %d: %w", id, err)
	}
	return nil
}
