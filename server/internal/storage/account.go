package storage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// User is a console account. Its password is kept only as a slow hash. TokenGen is the
// generation of the sessions it may use: a session token carries the generation it was issued
// under, and logging out, changing the password or rotating the signing key raise it, which
// ends every earlier session on every node at once.
type User struct {
	ID           int64
	Username     string
	PasswordHash string
	Disabled     bool
	TokenGen     int64
	Grants       []Grant
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// AllNamespaces is the namespace id of a grant over every namespace ("*").
const AllNamespaces int64 = 0

// Grant is a role in a namespace; NamespaceID AllNamespaces grants it everywhere.
type Grant struct {
	NamespaceID int64
	Role        string
}

// APIToken is a credential for automation. Only a SHA-256 of the secret is stored.
type APIToken struct {
	ID          int64
	Name        string
	Hash        string // hex SHA-256 of the secret
	Prefix      string // the secret's first characters, to recognise it in a list
	NamespaceID int64
	Role        string
	CreatedBy   string
	CreatedAt   time.Time
	LastUsedAt  *time.Time
	RevokedAt   *time.Time
}

// AuditEntry is one change made through the console API (or an attempt at one).
type AuditEntry struct {
	ID          int64
	At          time.Time
	Actor       string // user name, "token:<name>", or the name given at a failed login
	ActorKind   string // user, token, anonymous
	Action      string // the operation id, e.g. users-create
	Target      string // the objects changed, e.g. "user 12"
	NamespaceID int64
	Detail      string
	Outcome     string // ok, denied, refused, failed
	Status      int
	Remote      string
}

// userRow is a console account; token_gen ends sessions (see User).
type userRow struct {
	ID           int64  `gorm:"primaryKey;autoIncrement"`
	Username     string `gorm:"type:varchar(64);not null;uniqueIndex:uk_user_name"`
	PasswordHash string `gorm:"type:varchar(128);not null"`
	Disabled     bool   `gorm:"not null;default:false"`
	TokenGen     int64  `gorm:"not null;default:1"`
	CreatedAt    Time   `gorm:"not null"`
	UpdatedAt    Time   `gorm:"not null"`
}

func (userRow) TableName() string { return "rh_user" }

// userRoleRow is one role of a user in a namespace (0: every namespace).
type userRoleRow struct {
	UserID      int64  `gorm:"primaryKey;autoIncrement:false"`
	NamespaceID int64  `gorm:"primaryKey;autoIncrement:false"`
	Role        string `gorm:"type:varchar(16);not null"`
}

func (userRoleRow) TableName() string { return "rh_user_role" }

// apiTokenRow is an API token; the secret's hash is its unique lookup key.
type apiTokenRow struct {
	ID          int64  `gorm:"primaryKey;autoIncrement"`
	Name        string `gorm:"type:varchar(64);not null"`
	Hash        string `gorm:"type:char(64);not null;uniqueIndex:uk_api_token_hash"`
	Prefix      string `gorm:"type:varchar(16);not null"`
	NamespaceID int64  `gorm:"not null"`
	Role        string `gorm:"type:varchar(16);not null"`
	CreatedBy   string `gorm:"type:varchar(64);not null"`
	CreatedAt   Time   `gorm:"not null"`
	LastUsedAt  *Time
	RevokedAt   *Time
}

func (apiTokenRow) TableName() string { return "rh_api_token" }

// auditRow is one audit entry. The list reads by id, newest first, optionally narrowed by
// actor or action, each served by an index ending in id; a time range narrows by id too.
type auditRow struct {
	ID          int64  `gorm:"primaryKey;autoIncrement;index:idx_audit_actor,priority:2;index:idx_audit_action,priority:2"`
	At          Time   `gorm:"not null;index:idx_audit_at"`
	Actor       string `gorm:"type:varchar(128);not null;index:idx_audit_actor,priority:1"`
	ActorKind   string `gorm:"type:varchar(16);not null"`
	Action      string `gorm:"type:varchar(64);not null;index:idx_audit_action,priority:1"`
	Target      string `gorm:"type:varchar(255);not null"`
	NamespaceID int64  `gorm:"not null;default:0"`
	Detail      string `gorm:"type:text;not null"`
	Outcome     string `gorm:"type:varchar(16);not null"`
	Status      int    `gorm:"size:32;not null"`
	Remote      string `gorm:"type:varchar(64);not null"`
}

func (auditRow) TableName() string { return "rh_audit" }

func (r *userRow) domain(grants []Grant) User {
	return User{ID: r.ID, Username: r.Username, PasswordHash: r.PasswordHash, Disabled: r.Disabled,
		TokenGen: r.TokenGen, Grants: grants, CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
}

// CreateUser stores a new user with its grants; ErrConflict when the name is taken.
func (s *Store) CreateUser(ctx context.Context, u User) (User, error) {
	now := T(time.Now())
	row := userRow{Username: u.Username, PasswordHash: u.PasswordHash, Disabled: u.Disabled, TokenGen: 1,
		CreatedAt: now, UpdatedAt: now}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&row).Error; err != nil {
			return err
		}
		return replaceGrants(tx, row.ID, u.Grants)
	})
	if s.d.isDuplicate(err) {
		return User{}, fmt.Errorf("user %q: %w", u.Username, ErrConflict)
	}
	if err != nil {
		return User{}, fmt.Errorf("create user %q: %w", u.Username, err)
	}
	return row.domain(u.Grants), nil
}

func replaceGrants(tx *gorm.DB, userID int64, grants []Grant) error {
	if err := tx.Where("user_id = ?", userID).Delete(&userRoleRow{}).Error; err != nil {
		return err
	}
	if len(grants) == 0 {
		return nil
	}
	rows := make([]userRoleRow, len(grants))
	for i, g := range grants {
		rows[i] = userRoleRow{UserID: userID, NamespaceID: g.NamespaceID, Role: g.Role}
	}
	return tx.Create(&rows).Error
}

// CountUsers counts the users (there are few; the bootstrap asks whether there is any).
func (s *Store) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.WithContext(ctx).Model(&userRow{}).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// User reads a user and its grants by id.
func (s *Store) User(ctx context.Context, id int64) (User, error) {
	var row userRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return User{}, notFound(err, fmt.Sprintf("user %d", id))
	}
	return s.withGrants(ctx, row)
}

// UserByName reads a user and its grants by name.
func (s *Store) UserByName(ctx context.Context, name string) (User, error) {
	var row userRow
	if err := s.db.WithContext(ctx).Where("username = ?", name).Take(&row).Error; err != nil {
		return User{}, notFound(err, "user "+name)
	}
	return s.withGrants(ctx, row)
}

func (s *Store) withGrants(ctx context.Context, row userRow) (User, error) {
	g, err := s.grants(ctx, []int64{row.ID})
	if err != nil {
		return User{}, err
	}
	return row.domain(g[row.ID]), nil
}

func (s *Store) grants(ctx context.Context, ids []int64) (map[int64][]Grant, error) {
	var rows []userRoleRow
	if err := s.db.WithContext(ctx).Where("user_id IN ?", ids).Order("user_id, namespace_id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read roles: %w", err)
	}
	out := make(map[int64][]Grant, len(ids))
	for _, r := range rows {
		out[r.UserID] = append(out[r.UserID], Grant{NamespaceID: r.NamespaceID, Role: r.Role})
	}
	return out, nil
}

// ListUsers returns up to limit users with an id above after, by id; a non-empty
// namePrefix keeps those whose name starts with it.
func (s *Store) ListUsers(ctx context.Context, namePrefix string, after int64, limit int) ([]User, error) {
	q := s.db.WithContext(ctx).Where("id > ?", after)
	if namePrefix != "" {
		q = q.Where("username LIKE ? ESCAPE '!'", likePrefix(namePrefix))
	}
	var rows []userRow
	if err := q.Order("id").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(rows))
	for i := range rows {
		ids[i] = rows[i].ID
	}
	g, err := s.grants(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]User, len(rows))
	for i := range rows {
		out[i] = rows[i].domain(g[rows[i].ID])
	}
	return out, nil
}

// likePrefix escapes s for a LIKE pattern (with ESCAPE '!') that matches what starts with it.
func likePrefix(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s) + "%"
}

// UserChange is what UpdateUser changes; nil fields stay as they are.
type UserChange struct {
	Grants       *[]Grant
	Disabled     *bool
	PasswordHash *string
	// EndSessions raises the user's token generation, ending its sessions.
	EndSessions bool
}

// UpdateUser applies a change to a user in one transaction and returns the user as it is
// after it; ErrNotFound when there is no such user.
func (s *Store) UpdateUser(ctx context.Context, id int64, c UserChange) (User, error) {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		set := map[string]any{"updated_at": T(time.Now())}
		if c.Disabled != nil {
			set["disabled"] = *c.Disabled
		}
		if c.PasswordHash != nil {
			set["password_hash"] = *c.PasswordHash
		}
		if c.EndSessions {
			set["token_gen"] = gorm.Expr("token_gen + 1")
		}
		res := tx.Model(&userRow{}).Where("id = ?", id).Updates(set)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return gorm.ErrRecordNotFound
		}
		if c.Grants != nil {
			return replaceGrants(tx, id, *c.Grants)
		}
		return nil
	})
	if err != nil {
		return User{}, notFound(err, fmt.Sprintf("update user %d", id))
	}
	return s.User(ctx, id)
}

// EndAllSessions raises every user's token generation: every session on every node ends.
func (s *Store) EndAllSessions(ctx context.Context) error {
	err := s.db.WithContext(ctx).Model(&userRow{}).Where("1 = 1").
		Update("token_gen", gorm.Expr("token_gen + 1")).Error
	if err != nil {
		return fmt.Errorf("end all sessions: %w", err)
	}
	return nil
}

// Setting reads a value kept in rh_meta; ErrNotFound when it is not set.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var row metaRow
	if err := s.db.WithContext(ctx).Where("name = ?", name).Take(&row).Error; err != nil {
		return "", notFound(err, "setting "+name)
	}
	return row.Value, nil
}

// InitSetting stores value under name unless a value is there already, and returns the value
// that is there after it: nodes starting at once agree on the first one written.
func (s *Store) InitSetting(ctx context.Context, name, value string) (string, error) {
	err := s.db.WithContext(ctx).Clauses(onConflictNothing()).Create(&metaRow{Name: name, Value: value}).Error
	if err != nil {
		return "", fmt.Errorf("init setting %s: %w", name, err)
	}
	return s.Setting(ctx, name)
}

// PutSetting stores value under name, replacing what was there.
func (s *Store) PutSetting(ctx context.Context, name, value string) error {
	res := s.db.WithContext(ctx).Model(&metaRow{}).Where("name = ?", name).Update("value", value)
	if res.Error != nil {
		return fmt.Errorf("put setting %s: %w", name, res.Error)
	}
	if res.RowsAffected == 0 {
		if _, err := s.InitSetting(ctx, name, value); err != nil {
			return err
		}
	}
	return nil
}

func (r *apiTokenRow) domain() APIToken {
	return APIToken{ID: r.ID, Name: r.Name, Hash: r.Hash, Prefix: r.Prefix, NamespaceID: r.NamespaceID,
		Role: r.Role, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.Time, LastUsedAt: r.LastUsedAt.Ptr(),
		RevokedAt: r.RevokedAt.Ptr()}
}

// CreateAPIToken stores a new API token and returns it with its id.
func (s *Store) CreateAPIToken(ctx context.Context, t APIToken) (APIToken, error) {
	row := apiTokenRow{Name: t.Name, Hash: t.Hash, Prefix: t.Prefix, NamespaceID: t.NamespaceID, Role: t.Role,
		CreatedBy: t.CreatedBy, CreatedAt: T(time.Now())}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return APIToken{}, fmt.Errorf("create api token %q: %w", t.Name, err)
	}
	return row.domain(), nil
}

// APIToken reads a token by id.
func (s *Store) APIToken(ctx context.Context, id int64) (APIToken, error) {
	var row apiTokenRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return APIToken{}, notFound(err, fmt.Sprintf("api token %d", id))
	}
	return row.domain(), nil
}

// APITokenByHash reads a token by the hash of its secret.
func (s *Store) APITokenByHash(ctx context.Context, hash string) (APIToken, error) {
	var row apiTokenRow
	if err := s.db.WithContext(ctx).Where("hash = ?", hash).Take(&row).Error; err != nil {
		return APIToken{}, notFound(err, "api token")
	}
	return row.domain(), nil
}

// ListAPITokens returns up to limit tokens with an id above after, by id; namespaces, when
// not nil, keeps the tokens of those namespaces.
func (s *Store) ListAPITokens(ctx context.Context, namespaces []int64, after int64, limit int) ([]APIToken, error) {
	q := s.db.WithContext(ctx).Where("id > ?", after)
	if namespaces != nil {
		if len(namespaces) == 0 {
			return nil, nil
		}
		q = q.Where("namespace_id IN ?", namespaces)
	}
	var rows []apiTokenRow
	if err := q.Order("id").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	out := make([]APIToken, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// RevokeAPIToken marks a token revoked (keeping the first revocation time); ErrNotFound when
// there is no such token.
func (s *Store) RevokeAPIToken(ctx context.Context, id int64) error {
	if _, err := s.APIToken(ctx, id); err != nil {
		return err
	}
	err := s.db.WithContext(ctx).Model(&apiTokenRow{}).Where("id = ? AND revoked_at IS NULL", id).
		Update("revoked_at", T(time.Now())).Error
	if err != nil {
		return fmt.Errorf("revoke api token %d: %w", id, err)
	}
	return nil
}

// TouchAPIToken records a use of the token at now, unless one was recorded after
// now-every: one conditional UPDATE that writes at most once per period per token.
func (s *Store) TouchAPIToken(ctx context.Context, id int64, now time.Time, every time.Duration) error {
	err := s.db.WithContext(ctx).Model(&apiTokenRow{}).
		Where("id = ? AND (last_used_at IS NULL OR last_used_at < ?)", id, T(now.Add(-every))).
		Update("last_used_at", T(now)).Error
	if err != nil {
		return fmt.Errorf("record use of api token %d: %w", id, err)
	}
	return nil
}

// AddAudit writes an audit entry.
func (s *Store) AddAudit(ctx context.Context, e AuditEntry) error {
	row := auditRowOf(e)
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return fmt.Errorf("write audit entry %s: %w", e.Action, err)
	}
	return nil
}

func auditRowOf(e AuditEntry) auditRow {
	return auditRow{At: T(e.At), Actor: clip(e.Actor, 128), ActorKind: e.ActorKind, Action: e.Action,
		Target: clip(e.Target, 255), NamespaceID: e.NamespaceID, Detail: clip(e.Detail, 4000),
		Outcome: e.Outcome, Status: e.Status, Remote: clip(e.Remote, 64)}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// AuditFilter narrows the audit list; zero fields do not.
type AuditFilter struct {
	Actor  string
	Action string
	Since  time.Time // at or after
	Until  time.Time // before
	Before int64     // ids below this one (the page key); 0 starts at the newest
}

// ListAudit returns up to limit entries matching f, newest (highest id) first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter, limit int) ([]AuditEntry, error) {
	q := s.db.WithContext(ctx).Model(&auditRow{})
	if f.Before > 0 {
		q = q.Where("id < ?", f.Before)
	}
	if f.Actor != "" {
		q = q.Where("actor = ?", f.Actor)
	}
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if !f.Since.IsZero() {
		q = q.Where("at >= ?", T(f.Since))
	}
	if !f.Until.IsZero() {
		q = q.Where("at < ?", T(f.Until))
	}
	var rows []auditRow
	if err := q.Order("id DESC").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	out := make([]AuditEntry, len(rows))
	for i, r := range rows {
		out[i] = AuditEntry{ID: r.ID, At: r.At.Time, Actor: r.Actor, ActorKind: r.ActorKind, Action: r.Action,
			Target: r.Target, NamespaceID: r.NamespaceID, Detail: r.Detail, Outcome: r.Outcome, Status: r.Status,
			Remote: r.Remote}
	}
	return out, nil
}
