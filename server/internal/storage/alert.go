package storage

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
)

// The alert tables: channels (where messages go), rules (what to watch), silences (when not to
// tell), the rules' evaluation state (so a new leader continues where the last left off) and
// the history of every message. The evaluator reads the figures through the reads at the end of
// this file: per-minute summaries and the cluster tables, and index-bounded reads of rh_task.

// alertChannelRow is a channel; its settings are sealed (encrypted) by the alert package.
type alertChannelRow struct {
	ID          int64  `gorm:"primaryKey;autoIncrement"`
	NamespaceID int64  `gorm:"not null;uniqueIndex:uk_alert_channel_name,priority:1"`
	Name        string `gorm:"type:varchar(64);not null;uniqueIndex:uk_alert_channel_name,priority:2"`
	Kind        string `gorm:"type:varchar(16);not null"`
	Settings    string `gorm:"type:text;not null"`
	Enabled     bool   `gorm:"not null"`
	CreatedAt   Time   `gorm:"not null"`
	UpdatedAt   Time   `gorm:"not null"`
}

func (alertChannelRow) TableName() string { return "rh_alert_channel" }

// alertRuleRow is a rule. Its id lists are JSON arrays; durations are milliseconds.
type alertRuleRow struct {
	ID          int64   `gorm:"primaryKey;autoIncrement"`
	NamespaceID int64   `gorm:"not null;uniqueIndex:uk_alert_rule_name,priority:1"`
	Name        string  `gorm:"type:varchar(64);not null;uniqueIndex:uk_alert_rule_name,priority:2"`
	Description string  `gorm:"type:varchar(512);not null;default:''"`
	Kind        string  `gorm:"type:varchar(32);not null"`
	GroupIDs    string  `gorm:"column:group_ids;type:text;not null"`
	SceneIDs    string  `gorm:"column:scene_ids;type:text;not null"`
	Threshold   float64 `gorm:"type:double;not null;default:0"`
	MinVolume   int64   `gorm:"not null;default:0"`
	WindowMs    int64   `gorm:"not null;default:0"`
	ForMs       int64   `gorm:"not null;default:0"`
	Severity    string  `gorm:"type:varchar(16);not null"`
	ChannelIDs  string  `gorm:"column:channel_ids;type:text;not null"`
	RepeatMs    int64   `gorm:"not null;default:0"`
	Enabled     bool    `gorm:"not null"`
	CreatedAt   Time    `gorm:"not null"`
	UpdatedAt   Time    `gorm:"not null"`
}

func (alertRuleRow) TableName() string { return "rh_alert_rule" }

// alertSilenceRow mutes a namespace's rules (or one rule), optionally for one scene.
type alertSilenceRow struct {
	ID          int64  `gorm:"primaryKey;autoIncrement"`
	NamespaceID int64  `gorm:"not null;index:idx_alert_silence_ns,priority:1"`
	RuleID      int64  `gorm:"not null;default:0"`
	SceneID     int64  `gorm:"not null;default:0"`
	StartsAt    Time   `gorm:"not null"`
	EndsAt      Time   `gorm:"not null;index:idx_alert_silence_ns,priority:2"`
	Reason      string `gorm:"type:varchar(512);not null"`
	CreatedBy   string `gorm:"type:varchar(128);not null"`
	CreatedAt   Time   `gorm:"not null"`
}

func (alertSilenceRow) TableName() string { return "rh_alert_silence" }

// alertStateRow is a rule's evaluation state; version changes with every write, so that of two
// evaluators that read the same state only one writes what it decided.
type alertStateRow struct {
	RuleID      int64 `gorm:"primaryKey;autoIncrement:false"`
	Firing      bool  `gorm:"not null"`
	Since       *Time
	LastSentAt  *Time
	Subjects    string `gorm:"type:mediumtext;not null"`
	Pending     string `gorm:"type:text;not null"`
	EvaluatedAt *Time
	Version     int64 `gorm:"not null;default:0"`
}

func (alertStateRow) TableName() string { return "rh_alert_state" }

// alertMessageRow is one message to one channel and its delivery: the history. Payload is the
// message itself (JSON), so a failed send can be made again on a later evaluation.
type alertMessageRow struct {
	ID          int64  `gorm:"primaryKey;autoIncrement;index:idx_alert_message_ns,priority:2;index:idx_alert_message_rule,priority:2"`
	NamespaceID int64  `gorm:"not null;index:idx_alert_message_ns,priority:1"`
	RuleID      int64  `gorm:"not null;index:idx_alert_message_rule,priority:1"`
	RuleName    string `gorm:"type:varchar(64);not null"`
	Kind        string `gorm:"type:varchar(16);not null"`
	ChannelID   int64  `gorm:"not null"`
	Subject     string `gorm:"type:varchar(255);not null"`
	Payload     string `gorm:"type:mediumtext;not null"`
	Status      string `gorm:"type:varchar(16);not null;index:idx_alert_message_due,priority:1"`
	Error       string `gorm:"type:text;not null"`
	Attempts    int    `gorm:"size:32;not null;default:0"`
	NextRetryAt *Time  `gorm:"index:idx_alert_message_due,priority:2"`
	CreatedAt   Time   `gorm:"not null;index:idx_alert_message_created"`
	SentAt      *Time
}

func (alertMessageRow) TableName() string { return "rh_alert_message" }

// AlertChannel is where a rule's messages go. Settings are sealed: only the alert package
// reads them.
type AlertChannel struct {
	ID          int64
	NamespaceID int64
	Name        string
	Kind        string
	Settings    []byte
	Enabled     bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

func (r *alertChannelRow) domain() AlertChannel {
	return AlertChannel{ID: r.ID, NamespaceID: r.NamespaceID, Name: r.Name, Kind: r.Kind, Settings: []byte(r.Settings),
		Enabled: r.Enabled, CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
}

// CreateAlertChannel stores a new channel; ErrConflict when its name is taken in the namespace.
func (s *Store) CreateAlertChannel(ctx context.Context, c AlertChannel) (AlertChannel, error) {
	now := T(time.Now())
	row := alertChannelRow{NamespaceID: c.NamespaceID, Name: c.Name, Kind: c.Kind, Settings: string(c.Settings),
		Enabled: c.Enabled, CreatedAt: now, UpdatedAt: now}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if s.d.isDuplicate(err) {
			return c, fmt.Errorf("alert channel %q: %w", c.Name, ErrConflict)
		}
		return c, fmt.Errorf("create alert channel %q: %w", c.Name, err)
	}
	return row.domain(), nil
}

// AlertChannel reads a channel.
func (s *Store) AlertChannel(ctx context.Context, id int64) (AlertChannel, error) {
	var row alertChannelRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return AlertChannel{}, notFound(err, fmt.Sprintf("alert channel %d", id))
	}
	return row.domain(), nil
}

// ListAlertChannels returns the channels of the namespaces (nil: every namespace), by id.
func (s *Store) ListAlertChannels(ctx context.Context, namespaceIDs []int64) ([]AlertChannel, error) {
	q := s.db.WithContext(ctx).Order("id")
	if namespaceIDs != nil {
		if len(namespaceIDs) == 0 {
			return nil, nil
		}
		q = q.Where("namespace_id IN ?", namespaceIDs)
	}
	var rows []alertChannelRow
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list alert channels: %w", err)
	}
	out := make([]AlertChannel, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// UpdateAlertChannel writes a channel's name, settings and state.
func (s *Store) UpdateAlertChannel(ctx context.Context, c AlertChannel) (AlertChannel, error) {
	res := s.db.WithContext(ctx).Model(&alertChannelRow{}).Where("id = ?", c.ID).Updates(map[string]any{
		"name": c.Name, "settings": string(c.Settings), "enabled": c.Enabled, "updated_at": T(time.Now())})
	if res.Error != nil {
		if s.d.isDuplicate(res.Error) {
			return c, fmt.Errorf("alert channel %q: %w", c.Name, ErrConflict)
		}
		return c, fmt.Errorf("update alert channel %d: %w", c.ID, res.Error)
	}
	return s.AlertChannel(ctx, c.ID)
}

// DeleteAlertChannel removes a channel. Rules that name it keep the id and skip it.
func (s *Store) DeleteAlertChannel(ctx context.Context, id int64) error {
	res := s.db.WithContext(ctx).Where("id = ?", id).Delete(&alertChannelRow{})
	if res.Error != nil {
		return fmt.Errorf("delete alert channel %d: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("alert channel %d: %w", id, ErrNotFound)
	}
	return nil
}

// AlertRule is what to watch in a namespace and whom to tell. The meaning of Threshold,
// MinVolume, Window and For depends on Kind (the alert package checks them).
type AlertRule struct {
	ID          int64
	NamespaceID int64
	Name        string
	Description string
	Kind        string
	// GroupIDs and SceneIDs narrow the rule; both empty watch the whole namespace.
	GroupIDs   []int64
	SceneIDs   []int64
	Threshold  float64
	MinVolume  int64
	Window     time.Duration
	For        time.Duration
	Severity   string
	ChannelIDs []int64
	// Repeat is the reminder interval while the rule fires; zero sends no reminders.
	Repeat    time.Duration
	Enabled   bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

func idList(ids []int64) string {
	if len(ids) == 0 {
		return "[]"
	}
	return "[" + intList(ids) + "]"
}

func parseIDList(s string) []int64 {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	if s == "" {
		return nil
	}
	var out []int64
	for _, part := range strings.Split(s, ",") {
		var id int64
		if _, err := fmt.Sscan(strings.TrimSpace(part), &id); err == nil {
			out = append(out, id)
		}
	}
	return out
}

func (r *alertRuleRow) domain() AlertRule {
	return AlertRule{ID: r.ID, NamespaceID: r.NamespaceID, Name: r.Name, Description: r.Description, Kind: r.Kind,
		GroupIDs: parseIDList(r.GroupIDs), SceneIDs: parseIDList(r.SceneIDs), Threshold: r.Threshold, MinVolume: r.MinVolume,
		Window: time.Duration(r.WindowMs) * time.Millisecond, For: time.Duration(r.ForMs) * time.Millisecond,
		Severity: r.Severity, ChannelIDs: parseIDList(r.ChannelIDs), Repeat: time.Duration(r.RepeatMs) * time.Millisecond,
		Enabled: r.Enabled, CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time}
}

func alertRuleFields(r AlertRule) map[string]any {
	return map[string]any{"name": r.Name, "description": r.Description, "kind": r.Kind,
		"group_ids": idList(r.GroupIDs), "scene_ids": idList(r.SceneIDs), "threshold": r.Threshold, "min_volume": r.MinVolume,
		"window_ms": r.Window.Milliseconds(), "for_ms": r.For.Milliseconds(), "severity": r.Severity,
		"channel_ids": idList(r.ChannelIDs), "repeat_ms": r.Repeat.Milliseconds(), "enabled": r.Enabled}
}

// CreateAlertRule stores a new rule; ErrConflict when its name is taken in the namespace.
func (s *Store) CreateAlertRule(ctx context.Context, r AlertRule) (AlertRule, error) {
	now := T(time.Now())
	row := alertRuleRow{NamespaceID: r.NamespaceID, Name: r.Name, Description: r.Description, Kind: r.Kind,
		GroupIDs: idList(r.GroupIDs), SceneIDs: idList(r.SceneIDs), Threshold: r.Threshold, MinVolume: r.MinVolume,
		WindowMs: r.Window.Milliseconds(), ForMs: r.For.Milliseconds(), Severity: r.Severity,
		ChannelIDs: idList(r.ChannelIDs), RepeatMs: r.Repeat.Milliseconds(), Enabled: r.Enabled, CreatedAt: now, UpdatedAt: now}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if s.d.isDuplicate(err) {
			return r, fmt.Errorf("alert rule %q: %w", r.Name, ErrConflict)
		}
		return r, fmt.Errorf("create alert rule %q: %w", r.Name, err)
	}
	return row.domain(), nil
}

// AlertRule reads a rule.
func (s *Store) AlertRule(ctx context.Context, id int64) (AlertRule, error) {
	var row alertRuleRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return AlertRule{}, notFound(err, fmt.Sprintf("alert rule %d", id))
	}
	return row.domain(), nil
}

// ListAlertRules returns the rules of the namespaces (nil: every namespace), by id; only the
// enabled ones when enabledOnly.
func (s *Store) ListAlertRules(ctx context.Context, namespaceIDs []int64, enabledOnly bool) ([]AlertRule, error) {
	q := s.db.WithContext(ctx).Order("id")
	if namespaceIDs != nil {
		if len(namespaceIDs) == 0 {
			return nil, nil
		}
		q = q.Where("namespace_id IN ?", namespaceIDs)
	}
	if enabledOnly {
		q = q.Where("enabled = ?", true)
	}
	var rows []alertRuleRow
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list alert rules: %w", err)
	}
	out := make([]AlertRule, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// UpdateAlertRule writes every field of a rule but its namespace.
func (s *Store) UpdateAlertRule(ctx context.Context, r AlertRule) (AlertRule, error) {
	set := alertRuleFields(r)
	set["updated_at"] = T(time.Now())
	res := s.db.WithContext(ctx).Model(&alertRuleRow{}).Where("id = ?", r.ID).Updates(set)
	if res.Error != nil {
		if s.d.isDuplicate(res.Error) {
			return r, fmt.Errorf("alert rule %q: %w", r.Name, ErrConflict)
		}
		return r, fmt.Errorf("update alert rule %d: %w", r.ID, res.Error)
	}
	return s.AlertRule(ctx, r.ID)
}

// DeleteAlertRule removes a rule and its evaluation state (its history stays).
func (s *Store) DeleteAlertRule(ctx context.Context, id int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM rh_alert_rule WHERE id = ?", id)
		if err != nil {
			return fmt.Errorf("delete alert rule %d: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("alert rule %d: %w", id, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM rh_alert_state WHERE rule_id = ?", id); err != nil {
			return fmt.Errorf("delete alert rule %d: %w", id, err)
		}
		return nil
	})
}

// AlertSilence mutes messages: of every rule of the namespace or of RuleID, about every
// subject or only SceneID, from StartsAt until EndsAt.
type AlertSilence struct {
	ID          int64
	NamespaceID int64
	RuleID      int64 // 0: every rule of the namespace
	SceneID     int64 // 0: every subject
	StartsAt    time.Time
	EndsAt      time.Time
	Reason      string
	CreatedBy   string
	CreatedAt   time.Time
}

func (r *alertSilenceRow) domain() AlertSilence {
	return AlertSilence{ID: r.ID, NamespaceID: r.NamespaceID, RuleID: r.RuleID, SceneID: r.SceneID, StartsAt: r.StartsAt.Time,
		EndsAt: r.EndsAt.Time, Reason: r.Reason, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.Time}
}

// CreateAlertSilence stores a silence.
func (s *Store) CreateAlertSilence(ctx context.Context, si AlertSilence) (AlertSilence, error) {
	row := alertSilenceRow{NamespaceID: si.NamespaceID, RuleID: si.RuleID, SceneID: si.SceneID, StartsAt: T(si.StartsAt),
		EndsAt: T(si.EndsAt), Reason: si.Reason, CreatedBy: si.CreatedBy, CreatedAt: T(time.Now())}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return si, fmt.Errorf("create alert silence: %w", err)
	}
	return row.domain(), nil
}

// AlertSilence reads a silence.
func (s *Store) AlertSilence(ctx context.Context, id int64) (AlertSilence, error) {
	var row alertSilenceRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return AlertSilence{}, notFound(err, fmt.Sprintf("alert silence %d", id))
	}
	return row.domain(), nil
}

// ListAlertSilences returns the silences of the namespaces (nil: every namespace) that end
// after endsAfter (zero: all of them), by id.
func (s *Store) ListAlertSilences(ctx context.Context, namespaceIDs []int64, endsAfter time.Time) ([]AlertSilence, error) {
	q := s.db.WithContext(ctx).Order("id")
	if namespaceIDs != nil {
		if len(namespaceIDs) == 0 {
			return nil, nil
		}
		q = q.Where("namespace_id IN ?", namespaceIDs)
	}
	if !endsAfter.IsZero() {
		q = q.Where("ends_at > ?", T(endsAfter))
	}
	var rows []alertSilenceRow
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list alert silences: %w", err)
	}
	out := make([]AlertSilence, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// UpdateAlertSilence writes a silence's rule, scene, window and reason.
func (s *Store) UpdateAlertSilence(ctx context.Context, si AlertSilence) (AlertSilence, error) {
	res := s.db.WithContext(ctx).Model(&alertSilenceRow{}).Where("id = ?", si.ID).Updates(map[string]any{
		"rule_id": si.RuleID, "scene_id": si.SceneID, "starts_at": T(si.StartsAt), "ends_at": T(si.EndsAt), "reason": si.Reason})
	if res.Error != nil {
		return si, fmt.Errorf("update alert silence %d: %w", si.ID, res.Error)
	}
	return s.AlertSilence(ctx, si.ID)
}

// DeleteAlertSilence removes a silence.
func (s *Store) DeleteAlertSilence(ctx context.Context, id int64) error {
	res := s.db.WithContext(ctx).Where("id = ?", id).Delete(&alertSilenceRow{})
	if res.Error != nil {
		return fmt.Errorf("delete alert silence %d: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("alert silence %d: %w", id, ErrNotFound)
	}
	return nil
}

// AlertState is a rule's evaluation state. Subjects and Pending are the alert package's JSON.
type AlertState struct {
	RuleID     int64
	Firing     bool
	Since      *time.Time // when the rule started firing
	LastSentAt *time.Time // the last firing or reminder message
	// Subjects are the subjects firing at the last evaluation, with their figures.
	Subjects []byte
	// Pending are the subjects seen in a condition that must last a while before they fire,
	// with when each was first seen.
	Pending []byte
	// EvaluatedAt is the evaluation cursor: the time of the last evaluation written.
	EvaluatedAt *time.Time
	// Version is the state's version as read; 0 when the rule has never been evaluated.
	Version int64
}

// AlertStates returns the state of every rule that has one, by rule id.
func (s *Store) AlertStates(ctx context.Context) (map[int64]AlertState, error) {
	var rows []alertStateRow
	if err := s.db.WithContext(ctx).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read alert states: %w", err)
	}
	out := make(map[int64]AlertState, len(rows))
	for _, r := range rows {
		out[r.RuleID] = AlertState{RuleID: r.RuleID, Firing: r.Firing, Since: r.Since.Ptr(), LastSentAt: r.LastSentAt.Ptr(),
			Subjects: []byte(r.Subjects), Pending: []byte(r.Pending), EvaluatedAt: r.EvaluatedAt.Ptr(), Version: r.Version}
	}
	return out, nil
}

// CommitAlert writes a rule's new state and the messages it decided to send, in one
// transaction, only when the state is still at st.Version (the version the evaluation read):
// of two evaluators that decided on the same state, one writes and the other learns
// (committed false) that its decision is void. The messages are stored as pending with their
// ids set in msgs.
func (s *Store) CommitAlert(ctx context.Context, st AlertState, msgs []AlertMessage) (committed bool, err error) {
	err = s.retryTx(ctx, func(tx *sql.Tx) error {
		committed = false
		vals := []any{st.Firing, TP(st.Since), TP(st.LastSentAt), string(st.Subjects), string(st.Pending), TP(st.EvaluatedAt)}
		if st.Version == 0 {
			_, err := tx.ExecContext(ctx, "INSERT INTO rh_alert_state (rule_id, firing, since, last_sent_at, subjects, pending, "+
				"evaluated_at, version) VALUES (?,?,?,?,?,?,?,1)", append([]any{st.RuleID}, vals...)...)
			if s.d.isDuplicate(err) {
				return nil
			}
			if err != nil {
				return err
			}
		} else {
			res, err := tx.ExecContext(ctx, "UPDATE rh_alert_state SET firing = ?, since = ?, last_sent_at = ?, subjects = ?, "+
				"pending = ?, evaluated_at = ?, version = version + 1 WHERE rule_id = ? AND version = ?",
				append(vals, st.RuleID, st.Version)...)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return err
			}
		}
		for i := range msgs {
			id, err := insertAlertMessage(ctx, tx, &msgs[i])
			if err != nil {
				return err
			}
			msgs[i].ID = id
		}
		committed = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("write the state of alert rule %d: %w", st.RuleID, err)
	}
	return committed, nil
}

// Statuses of a message.
const (
	AlertPending  = "pending"  // not sent yet, or being sent
	AlertSent     = "sent"     // delivered
	AlertFailed   = "failed"   // the last try failed; tried again at NextRetryAt unless it is nil
	AlertRecorded = "recorded" // the rule has no channel: recorded, not sent
)

// AlertMessage is one message to one channel and its delivery.
type AlertMessage struct {
	ID          int64
	NamespaceID int64
	RuleID      int64 // 0 for a test
	RuleName    string
	Kind        string // firing, reminder, resolved, test
	ChannelID   int64  // 0 when the rule has no channel
	Subject     string
	Payload     []byte
	Status      string
	Error       string
	Attempts    int
	NextRetryAt *time.Time
	CreatedAt   time.Time
	SentAt      *time.Time
}

func (r *alertMessageRow) domain() AlertMessage {
	return AlertMessage{ID: r.ID, NamespaceID: r.NamespaceID, RuleID: r.RuleID, RuleName: r.RuleName, Kind: r.Kind,
		ChannelID: r.ChannelID, Subject: r.Subject, Payload: []byte(r.Payload), Status: r.Status, Error: r.Error,
		Attempts: r.Attempts, NextRetryAt: r.NextRetryAt.Ptr(), CreatedAt: r.CreatedAt.Time, SentAt: r.SentAt.Ptr()}
}

const alertMessageCols = "namespace_id, rule_id, rule_name, kind, channel_id, subject, payload, status, error, attempts, next_retry_at, created_at, sent_at"

func insertAlertMessage(ctx context.Context, tx dbtx, m *AlertMessage) (int64, error) {
	if len(m.Subject) > 255 {
		m.Subject = m.Subject[:252] + "..."
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now()
	}
	res, err := tx.ExecContext(ctx, "INSERT INTO rh_alert_message ("+alertMessageCols+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
		m.NamespaceID, m.RuleID, m.RuleName, m.Kind, m.ChannelID, m.Subject, string(m.Payload), m.Status, m.Error,
		m.Attempts, TP(m.NextRetryAt), T(m.CreatedAt), TP(m.SentAt))
	if err != nil {
		return 0, fmt.Errorf("record alert message: %w", err)
	}
	return res.LastInsertId()
}

// AddAlertMessage records a message outside an evaluation (a test send) and returns its id.
func (s *Store) AddAlertMessage(ctx context.Context, m AlertMessage) (int64, error) {
	return insertAlertMessage(ctx, s.sql, &m)
}

// AlertMessage reads a message.
func (s *Store) AlertMessage(ctx context.Context, id int64) (AlertMessage, error) {
	var row alertMessageRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return AlertMessage{}, notFound(err, fmt.Sprintf("alert message %d", id))
	}
	return row.domain(), nil
}

// DueAlertMessages returns up to limit messages to send now: pending or failed, with a retry
// time at or before now, oldest first (so a channel that comes back gets them in order).
func (s *Store) DueAlertMessages(ctx context.Context, now time.Time, limit int) ([]AlertMessage, error) {
	var rows []alertMessageRow
	err := s.db.WithContext(ctx).Where("status IN ? AND next_retry_at <= ?", []string{AlertPending, AlertFailed}, T(now)).
		Order("id").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read alert messages to send: %w", err)
	}
	out := make([]AlertMessage, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// ClaimAlertMessage takes a message for one try: it counts the attempt and moves its retry
// time to until (when the try's outcome is not written by then, a later evaluation tries
// again), only while it still has the attempts count the caller read. It reports whether the
// caller took it: of two evaluators only one sends.
func (s *Store) ClaimAlertMessage(ctx context.Context, id int64, attempts int, until time.Time) (bool, error) {
	res, err := s.sql.ExecContext(ctx, "UPDATE rh_alert_message SET attempts = attempts + 1, next_retry_at = ? "+
		"WHERE id = ? AND attempts = ? AND status IN (?, ?)", T(until), id, attempts, AlertPending, AlertFailed)
	if err != nil {
		return false, fmt.Errorf("claim alert message %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim alert message %d: %w", id, err)
	}
	return n > 0, nil
}

// FinishAlertMessage writes the outcome of a try: sent (at sentAt), or failed with the reason
// and the next retry (nil: no more tries).
func (s *Store) FinishAlertMessage(ctx context.Context, id int64, status, reason string, sentAt, nextRetry *time.Time) error {
	if len(reason) > 4000 {
		reason = reason[:4000]
	}
	_, err := s.sql.ExecContext(ctx, "UPDATE rh_alert_message SET status = ?, error = ?, sent_at = ?, next_retry_at = ? WHERE id = ?",
		status, reason, TP(sentAt), TP(nextRetry), id)
	if err != nil {
		return fmt.Errorf("write the outcome of alert message %d: %w", id, err)
	}
	return nil
}

// AlertMessageFilter selects history rows.
type AlertMessageFilter struct {
	// NamespaceIDs limits them to these namespaces; nil means every one.
	NamespaceIDs []int64
	RuleID       int64  // 0: any
	ChannelID    int64  // 0: any
	Status       string // "": any
	Since        time.Time
	// Before is the last id of the previous page (0: the newest).
	Before int64
}

// ListAlertMessages returns up to limit history rows, newest first.
func (s *Store) ListAlertMessages(ctx context.Context, f AlertMessageFilter, limit int) ([]AlertMessage, error) {
	q := s.db.WithContext(ctx).Model(&alertMessageRow{})
	if f.NamespaceIDs != nil {
		if len(f.NamespaceIDs) == 0 {
			return nil, nil
		}
		q = q.Where("namespace_id IN ?", f.NamespaceIDs)
	}
	if f.RuleID != 0 {
		q = q.Where("rule_id = ?", f.RuleID)
	}
	if f.ChannelID != 0 {
		q = q.Where("channel_id = ?", f.ChannelID)
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if !f.Since.IsZero() {
		q = q.Where("created_at >= ?", T(f.Since))
	}
	if f.Before > 0 {
		q = q.Where("id < ?", f.Before)
	}
	var rows []alertMessageRow
	if err := q.Order("id DESC").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list alert messages: %w", err)
	}
	out := make([]AlertMessage, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// DeleteAlertMessagesBefore deletes up to limit history rows created before before (none still
// waiting for a retry) and returns how many.
func (s *Store) DeleteAlertMessagesBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	res, err := s.sql.ExecContext(ctx, s.d.deleteLimit("rh_alert_message",
		"created_at < ? AND (status NOT IN ('pending', 'failed') OR next_retry_at IS NULL)", limit), T(before))
	if err != nil {
		return 0, fmt.Errorf("delete old alert messages: %w", err)
	}
	return res.RowsAffected()
}

// AlertScene is a scene with its group, as rules see it.
type AlertScene struct {
	ID, GroupID int64
	Scene       string
	Group       string
}

// AlertScenes returns the scenes of a namespace's groups, by id.
func (s *Store) AlertScenes(ctx context.Context, namespaceID int64) ([]AlertScene, error) {
	rows, err := s.sql.QueryContext(ctx, "SELECT sc.id, sc.group_id, sc.name, g.name FROM rh_scene sc JOIN rh_group g ON g.id = sc.group_id "+
		"WHERE g.namespace_id = ? ORDER BY sc.id", namespaceID)
	if err != nil {
		return nil, fmt.Errorf("list the scenes of namespace %d: %w", namespaceID, err)
	}
	defer rows.Close()
	var out []AlertScene
	for rows.Next() {
		var sc AlertScene
		if err := rows.Scan(&sc.ID, &sc.GroupID, &sc.Scene, &sc.Group); err != nil {
			return nil, fmt.Errorf("list the scenes of namespace %d: %w", namespaceID, err)
		}
		out = append(out, sc)
	}
	return out, rows.Err()
}

// SummaryTotals adds up the per-minute summaries of the scenes (nil: every scene) over the
// minutes from (the start of from's minute) until (exclusive), per scene. It reads the minute
// table's key range only.
func (s *Store) SummaryTotals(ctx context.Context, sceneIDs []int64, from, until time.Time) (map[int64]SummaryCounts, error) {
	if sceneIDs != nil && len(sceneIDs) == 0 {
		return map[int64]SummaryCounts{}, nil
	}
	sums := make([]string, len(summaryCols))
	for i, c := range summaryCols {
		sums[i] = "SUM(" + c + ")"
	}
	q := "SELECT scene_id, " + strings.Join(sums, ", ") + " FROM rh_summary_minute WHERE minute >= ? AND minute < ?"
	args := []any{minuteOf(from), T(until)}
	if sceneIDs != nil {
		q += " AND scene_id IN (" + intList(sceneIDs) + ")"
	}
	q += " GROUP BY scene_id"
	rows, err := s.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("add up summaries: %w", err)
	}
	defer rows.Close()
	out := map[int64]SummaryCounts{}
	for rows.Next() {
		var id int64
		var c SummaryCounts
		if err := rows.Scan(append([]any{&id}, c.fields()...)...); err != nil {
			return nil, fmt.Errorf("add up summaries: %w", err)
		}
		out[id] = c
	}
	return out, rows.Err()
}

// OverdueTask is a waiting task past its due time.
type OverdueTask struct {
	ID, SceneID int64
	NextAt      time.Time
}

// OverdueTasks returns, for each of the buckets, up to perBucket waiting tasks due at or before
// dueBy, the longest overdue first. Each bucket's part is the claim's own read of
// idx_task_due (bucket, state, claim_token, next_at) — an index range in next_at order that
// stops after perBucket rows — so its cost follows the buckets, not the backlog.
func (s *Store) OverdueTasks(ctx context.Context, buckets int, dueBy time.Time, perBucket int) ([]OverdueTask, error) {
	var out []OverdueTask
	for start := 0; start < buckets; start += maxCompound {
		var union strings.Builder
		var args []any
		for b := start; b < min(start+maxCompound, buckets); b++ {
			if b > start {
				union.WriteString(" UNION ALL ")
			}
			union.WriteString(s.d.unionPart(fmt.Sprintf("SELECT id, scene_id, next_at FROM rh_task WHERE bucket = %d AND state = %d "+
				"AND claim_token = 0 AND next_at <= ? ORDER BY next_at LIMIT %d", b, retry.Waiting, perBucket)))
			args = append(args, T(dueBy))
		}
		rows, err := s.sql.QueryContext(ctx, union.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("read overdue tasks: %w", err)
		}
		for rows.Next() {
			var t OverdueTask
			var at Time
			if err := rows.Scan(&t.ID, &t.SceneID, &at); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read overdue tasks: %w", err)
			}
			t.NextAt = at.Time
			out = append(out, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read overdue tasks: %w", err)
		}
	}
	return out, nil
}

// OverdueQuery is the statement OverdueTasks runs for one bucket (for EXPLAIN in tests).
func OverdueQuery(bucket, perBucket int) string {
	return fmt.Sprintf("SELECT id, scene_id, next_at FROM rh_task WHERE bucket = %d AND state = %d "+
		"AND claim_token = 0 AND next_at <= ? ORDER BY next_at LIMIT %d", bucket, retry.Waiting, perBucket)
}

// ScenesWithWork returns which of the scenes have a task in one of the states: for each scene
// one read of idx_task_scene (scene_id, state, id) that stops at the first row.
func (s *Store) ScenesWithWork(ctx context.Context, sceneIDs []int64, states []retry.State) (map[int64]bool, error) {
	out := map[int64]bool{}
	for start := 0; start < len(sceneIDs); start += maxCompound {
		var union strings.Builder
		for i, id := range sceneIDs[start:min(start+maxCompound, len(sceneIDs))] {
			if i > 0 {
				union.WriteString(" UNION ALL ")
			}
			union.WriteString(s.d.unionPart(fmt.Sprintf("SELECT scene_id FROM rh_task WHERE scene_id = %d AND state IN (%s) LIMIT 1",
				id, intList(states))))
		}
		rows, err := s.sql.QueryContext(ctx, union.String())
		if err != nil {
			return nil, fmt.Errorf("find scenes with tasks: %w", err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("find scenes with tasks: %w", err)
			}
			out[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("find scenes with tasks: %w", err)
		}
	}
	return out, nil
}

// GroupHeartbeats returns the newest instance heartbeat of each of the groups that has an
// instance row (idx_instance_group).
func (s *Store) GroupHeartbeats(ctx context.Context, groupIDs []int64) (map[int64]time.Time, error) {
	out := map[int64]time.Time{}
	if len(groupIDs) == 0 {
		return out, nil
	}
	rows, err := s.sql.QueryContext(ctx, "SELECT group_id, MAX(heartbeat_at) FROM rh_client_instance WHERE group_id IN ("+
		intList(groupIDs)+") GROUP BY group_id")
	if err != nil {
		return nil, fmt.Errorf("read instance heartbeats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var at Time
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("read instance heartbeats: %w", err)
		}
		out[id] = at.Time
	}
	return out, rows.Err()
}

// TaskError is a task's error text.
type TaskError struct {
	TaskID int64
	Error  string
}

// RecentTaskErrors returns the errors of the newest tasks of the scene in each of the states,
// newest first: at most scan tasks per state are read (idx_task_scene, newest id first), and
// of those the ones with an error kept. callback reads the callback's error of the tasks whose
// callback is exhausted instead of the task's last error.
func (s *Store) RecentTaskErrors(ctx context.Context, sceneID int64, states []retry.State, callback bool, scan int) ([]TaskError, error) {
	var out []TaskError
	for _, st := range states {
		col, extra := "last_error", ""
		if callback {
			col, extra = "cb_error", fmt.Sprintf(" AND cb_state = %d", retry.CallbackExhausted)
		}
		q := fmt.Sprintf("SELECT id, %s FROM (SELECT id, cb_state, %s FROM rh_task WHERE scene_id = ? AND state = %d "+
			"ORDER BY id DESC LIMIT %d) x WHERE %s <> ''%s", col, col, st, scan, col, extra)
		rows, err := s.sql.QueryContext(ctx, q, sceneID)
		if err != nil {
			return nil, fmt.Errorf("read the errors of scene %d: %w", sceneID, err)
		}
		for rows.Next() {
			var e TaskError
			if err := rows.Scan(&e.TaskID, &e.Error); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read the errors of scene %d: %w", sceneID, err)
			}
			out = append(out, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read the errors of scene %d: %w", sceneID, err)
		}
	}
	slices.SortFunc(out, func(a, b TaskError) int {
		switch {
		case a.TaskID > b.TaskID:
			return -1
		case a.TaskID < b.TaskID:
			return 1
		}
		return 0
	})
	return out, nil
}

// Explain returns the database's plan of a read (EXPLAIN on MySQL, EXPLAIN QUERY PLAN on
// SQLite), a line per row with its columns, for tests and diagnostics.
func (s *Store) Explain(ctx context.Context, query string, args ...any) (string, error) {
	prefix := "EXPLAIN "
	if s.d.name() == config.SQLite {
		prefix = "EXPLAIN QUERY PLAN "
	}
	for i, a := range args {
		if t, ok := a.(time.Time); ok {
			args[i] = T(t)
		}
	}
	rows, err := s.sql.QueryContext(ctx, prefix+query, args...)
	if err != nil {
		return "", fmt.Errorf("explain: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", fmt.Errorf("explain: %w", err)
	}
	var b strings.Builder
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", fmt.Errorf("explain: %w", err)
		}
		for i, v := range vals {
			fmt.Fprintf(&b, "%s=%s ", cols[i], v.String)
		}
		b.WriteByte('\n')
	}
	return b.String(), rows.Err()
}
