package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/retry"
)

func (r *namespaceRow) domain() retry.Namespace {
	return retry.Namespace{ID: r.ID, Name: r.Name, Description: r.Description, Enabled: r.Enabled,
		CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
}

// CreateNamespace stores a new namespace and returns it with its id.
func (s *Store) CreateNamespace(ctx context.Context, ns retry.Namespace) (retry.Namespace, error) {
	if err := retry.ValidateName("namespace", ns.Name); err != nil {
		return ns, err
	}
	now := T(time.Now())
	row := namespaceRow{Name: ns.Name, Description: ns.Description, Enabled: ns.Enabled, CreatedAt: now, UpdatedAt: now}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if s.d.isDuplicate(err) {
			return ns, fmt.Errorf("namespace %q: %w", ns.Name, ErrConflict)
		}
		return ns, fmt.Errorf("create namespace %q: %w", ns.Name, err)
	}
	return row.domain(), nil
}

// NamespaceByName finds a namespace.
func (s *Store) NamespaceByName(ctx context.Context, name string) (retry.Namespace, error) {
	var row namespaceRow
	if err := s.db.WithContext(ctx).Where("name = ?", name).Take(&row).Error; err != nil {
		return retry.Namespace{}, notFound(err, "namespace "+name)
	}
	return row.domain(), nil
}

// ListNamespaces returns every namespace by name.
func (s *Store) ListNamespaces(ctx context.Context) ([]retry.Namespace, error) {
	var rows []namespaceRow
	if err := s.db.WithContext(ctx).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	out := make([]retry.Namespace, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// UpdateNamespace changes a namespace's description and enabled flag. A disabled namespace's
// groups are refused as disabled groups are: their clients get 403 and their tasks are held.
func (s *Store) UpdateNamespace(ctx context.Context, ns retry.Namespace) error {
	res := s.db.WithContext(ctx).Model(&namespaceRow{}).Where("id = ?", ns.ID).Updates(map[string]any{
		"description": ns.Description, "enabled": ns.Enabled, "updated_at": T(time.Now()),
	})
	if res.Error != nil {
		return fmt.Errorf("update namespace %d: %w", ns.ID, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("namespace %d: %w", ns.ID, ErrNotFound)
	}
	return nil
}

func (r *groupRow) domain(namespace string, namespaceEnabled bool) retry.Group {
	return retry.Group{ID: r.ID, NamespaceID: r.NamespaceID, Namespace: namespace, Name: r.Name,
		Description: r.Description, Token: r.Token, Enabled: r.Enabled, NamespaceEnabled: namespaceEnabled,
		AutoCreateScenes: r.AutoCreateScenes, PrevToken: r.PrevToken, PrevTokenUntil: r.PrevTokenUntil.Ptr(),
		CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
}

// groupJoined is a group row read with its namespace's name and state.
type groupJoined struct {
	// Row is exported (an embedded unexported struct is invisible to gorm).
	Row              groupRow `gorm:"embedded"`
	NamespaceName    string
	NamespaceEnabled bool
}

func (s *Store) groupsJoined(ctx context.Context) *gorm.DB {
	return s.db.WithContext(ctx).Table("rh_group g").
		Select("g.*, n.name AS namespace_name, n.enabled AS namespace_enabled").
		Joins("JOIN rh_namespace n ON n.id = g.namespace_id")
}

// CreateGroup stores a new group in its namespace. The token must be set.
func (s *Store) CreateGroup(ctx context.Context, g retry.Group) (retry.Group, error) {
	if err := retry.ValidateName("group", g.Name); err != nil {
		return g, err
	}
	if len(g.Token) < 16 || len(g.Token) > 128 {
		return g, fmt.Errorf("%w group token: want 16 to 128 characters", retry.ErrInvalid)
	}
	var ns namespaceRow
	if err := s.db.WithContext(ctx).Take(&ns, g.NamespaceID).Error; err != nil {
		return g, notFound(err, fmt.Sprintf("namespace %d", g.NamespaceID))
	}
	now := T(time.Now())
	row := groupRow{NamespaceID: g.NamespaceID, Name: g.Name, Description: g.Description, Token: g.Token,
		Enabled: g.Enabled, AutoCreateScenes: g.AutoCreateScenes, CreatedAt: now, UpdatedAt: now}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if s.d.isDuplicate(err) {
			return g, fmt.Errorf("group %q in namespace %q: %w", g.Name, ns.Name, ErrConflict)
		}
		return g, fmt.Errorf("create group %q: %w", g.Name, err)
	}
	return row.domain(ns.Name, ns.Enabled), nil
}

// GroupByName finds a group by its namespace's name and its own.
func (s *Store) GroupByName(ctx context.Context, namespace, name string) (retry.Group, error) {
	var row groupJoined
	err := s.groupsJoined(ctx).Where("n.name = ? AND g.name = ?", namespace, name).Take(&row).Error
	if err != nil {
		return retry.Group{}, notFound(err, fmt.Sprintf("group %s/%s", namespace, name))
	}
	return row.Row.domain(row.NamespaceName, row.NamespaceEnabled), nil
}

// Group finds a group by id.
func (s *Store) Group(ctx context.Context, id int64) (retry.Group, error) {
	var row groupJoined
	if err := s.groupsJoined(ctx).Where("g.id = ?", id).Take(&row).Error; err != nil {
		return retry.Group{}, notFound(err, fmt.Sprintf("group %d", id))
	}
	return row.Row.domain(row.NamespaceName, row.NamespaceEnabled), nil
}

// ListGroups returns the groups of every namespace.
func (s *Store) ListGroups(ctx context.Context) ([]retry.Group, error) {
	var rows []groupJoined
	err := s.groupsJoined(ctx).Order("n.name, g.name").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	out := make([]retry.Group, len(rows))
	for i := range rows {
		out[i] = rows[i].Row.domain(rows[i].NamespaceName, rows[i].NamespaceEnabled)
	}
	return out, nil
}

// UpdateGroup changes a group's description, token, enabled and auto-create flags.
func (s *Store) UpdateGroup(ctx context.Context, g retry.Group) error {
	if len(g.Token) < 16 || len(g.Token) > 128 {
		return fmt.Errorf("%w group token: want 16 to 128 characters", retry.ErrInvalid)
	}
	res := s.db.WithContext(ctx).Model(&groupRow{}).Where("id = ?", g.ID).Updates(map[string]any{
		"description": g.Description, "token": g.Token, "enabled": g.Enabled,
		"auto_create_scenes": g.AutoCreateScenes, "updated_at": T(time.Now()),
	})
	if res.Error != nil {
		return fmt.Errorf("update group %d: %w", g.ID, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("group %d: %w", g.ID, ErrNotFound)
	}
	return nil
}

func sceneToRow(sc *retry.Scene) (sceneRow, error) {
	enc := func(p backoff.Policy) (string, error) {
		b, err := json.Marshal(p)
		return string(b), err
	}
	lb, err := enc(sc.LocalBackoff)
	if err != nil {
		return sceneRow{}, err
	}
	rb, err := enc(sc.Backoff)
	if err != nil {
		return sceneRow{}, err
	}
	cb, err := enc(sc.Callback.Backoff)
	if err != nil {
		return sceneRow{}, err
	}
	return sceneRow{ID: sc.ID, GroupID: sc.GroupID, Name: sc.Name, Description: sc.Description, Enabled: sc.Enabled,
		Mode: string(sc.Mode), LocalAttempts: sc.LocalAttempts, LocalBackoff: lb, MaxAttempts: sc.MaxAttempts,
		Backoff: rb, TimeoutMs: sc.Timeout.Milliseconds(), DeadlineMs: sc.Deadline.Milliseconds(),
		Routing: string(sc.Routing), RateLimit: sc.RateLimit, CallbackEnabled: sc.Callback.Enabled,
		CallbackMaxAttempts: sc.Callback.MaxAttempts, CallbackBackoff: cb, Version: sc.Version,
		CreatedAt: T(sc.CreatedAt), UpdatedAt: T(sc.UpdatedAt)}, nil
}

func (r *sceneRow) domain() (retry.Scene, error) {
	sc := retry.Scene{ID: r.ID, GroupID: r.GroupID, Name: r.Name, Description: r.Description, Enabled: r.Enabled,
		Mode: protocol.Mode(r.Mode), LocalAttempts: r.LocalAttempts, MaxAttempts: r.MaxAttempts,
		Timeout: time.Duration(r.TimeoutMs) * time.Millisecond, Deadline: time.Duration(r.DeadlineMs) * time.Millisecond,
		Routing: retry.Routing(r.Routing), RateLimit: r.RateLimit, Version: r.Version,
		CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
	sc.Callback.Enabled = r.CallbackEnabled
	sc.Callback.MaxAttempts = r.CallbackMaxAttempts
	for _, f := range []struct {
		src string
		dst *backoff.Policy
	}{{r.LocalBackoff, &sc.LocalBackoff}, {r.Backoff, &sc.Backoff}, {r.CallbackBackoff, &sc.Callback.Backoff}} {
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return sc, fmt.Errorf("scene %d: stored policy unreadable: %w", r.ID, err)
		}
	}
	return sc, nil
}

// CreateScene validates and stores a new scene.
func (s *Store) CreateScene(ctx context.Context, sc retry.Scene) (retry.Scene, error) {
	if err := sc.Validate(); err != nil {
		return sc, err
	}
	now := time.Now()
	sc.ID, sc.Version, sc.CreatedAt, sc.UpdatedAt = 0, 1, now, now
	row, err := sceneToRow(&sc)
	if err != nil {
		return sc, fmt.Errorf("create scene %q: %w", sc.Name, err)
	}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if s.d.isDuplicate(err) {
			return sc, fmt.Errorf("scene %q: %w", sc.Name, ErrConflict)
		}
		return sc, fmt.Errorf("create scene %q: %w", sc.Name, err)
	}
	return row.domain()
}

// EnsureScene returns the group's scene of that name, creating it from def when it does not
// exist. Concurrent callers get the same scene.
func (s *Store) EnsureScene(ctx context.Context, def retry.Scene) (retry.Scene, error) {
	if err := def.Validate(); err != nil {
		return def, err
	}
	now := time.Now()
	def.ID, def.Version, def.CreatedAt, def.UpdatedAt = 0, 1, now, now
	row, err := sceneToRow(&def)
	if err != nil {
		return def, fmt.Errorf("create scene %q: %w", def.Name, err)
	}
	if err := s.db.WithContext(ctx).Clauses(onConflictNothing()).Create(&row).Error; err != nil {
		return def, fmt.Errorf("create scene %q: %w", def.Name, err)
	}
	return s.SceneByName(ctx, def.GroupID, def.Name)
}

// UpdateScene validates and stores a scene's new policy, raising its version.
func (s *Store) UpdateScene(ctx context.Context, sc retry.Scene) (retry.Scene, error) {
	if err := sc.Validate(); err != nil {
		return sc, err
	}
	sc.UpdatedAt = time.Now()
	row, err := sceneToRow(&sc)
	if err != nil {
		return sc, fmt.Errorf("update scene %d: %w", sc.ID, err)
	}
	res := s.db.WithContext(ctx).Model(&sceneRow{}).Where("id = ?", sc.ID).Updates(map[string]any{
		"description": row.Description, "enabled": row.Enabled, "mode": row.Mode,
		"local_attempts": row.LocalAttempts, "local_backoff": row.LocalBackoff, "max_attempts": row.MaxAttempts,
		"backoff": row.Backoff, "timeout_ms": row.TimeoutMs, "deadline_ms": row.DeadlineMs, "routing": row.Routing,
		"rate_limit": row.RateLimit, "callback_enabled": row.CallbackEnabled,
		"callback_max_attempts": row.CallbackMaxAttempts, "callback_backoff": row.CallbackBackoff,
		"version": gorm.Expr("version + 1"), "updated_at": row.UpdatedAt,
	})
	if res.Error != nil {
		return sc, fmt.Errorf("update scene %d: %w", sc.ID, res.Error)
	}
	if res.RowsAffected == 0 {
		return sc, fmt.Errorf("scene %d: %w", sc.ID, ErrNotFound)
	}
	return s.Scene(ctx, sc.ID)
}

// Scene finds a scene by id.
func (s *Store) Scene(ctx context.Context, id int64) (retry.Scene, error) {
	var row sceneRow
	if err := s.db.WithContext(ctx).Take(&row, id).Error; err != nil {
		return retry.Scene{}, notFound(err, fmt.Sprintf("scene %d", id))
	}
	return row.domain()
}

// SceneByName finds a group's scene by name.
func (s *Store) SceneByName(ctx context.Context, groupID int64, name string) (retry.Scene, error) {
	var row sceneRow
	if err := s.db.WithContext(ctx).Where("group_id = ? AND name = ?", groupID, name).Take(&row).Error; err != nil {
		return retry.Scene{}, notFound(err, "scene "+name)
	}
	return row.domain()
}

// ListScenes returns a group's scenes by name.
func (s *Store) ListScenes(ctx context.Context, groupID int64) ([]retry.Scene, error) {
	var rows []sceneRow
	if err := s.db.WithContext(ctx).Where("group_id = ?", groupID).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list scenes of group %d: %w", groupID, err)
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
