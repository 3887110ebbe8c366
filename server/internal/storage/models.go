package storage

import (
	"database/sql/driver"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Time is a time column: UTC with millisecond precision, DATETIME(3) on MySQL and an ISO text
// on SQLite. Every time the store writes goes through it, so comparisons in SQL are the same on
// both databases.
type Time struct{ time.Time }

// T wraps a time for a column, truncated to milliseconds in UTC.
func T(t time.Time) Time { return Time{t.UTC().Truncate(time.Millisecond)} }

// TP wraps a time for a nullable column; nil stays nil.
func TP(t *time.Time) *Time {
	if t == nil {
		return nil
	}
	v := T(*t)
	return &v
}

// Ptr returns the time as a *time.Time, nil for a nil column.
func (t *Time) Ptr() *time.Time {
	if t == nil {
		return nil
	}
	v := t.Time
	return &v
}

// GormDBDataType gives the column type for each database.
func (Time) GormDBDataType(db *gorm.DB, _ *schema.Field) string {
	if db.Dialector.Name() == "mysql" {
		return "datetime(3)"
	}
	return "datetime"
}

// Scan reads a column value.
func (t *Time) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		t.Time = time.Time{}
	case time.Time:
		t.Time = x.UTC()
	case string:
		return t.parse(x)
	case []byte:
		return t.parse(string(x))
	default:
		return fmt.Errorf("scan time column: unsupported %T", v)
	}
	return nil
}

var timeFormats = []string{"2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999Z07:00"}

func (t *Time) parse(s string) error {
	for _, f := range timeFormats {
		if v, err := time.Parse(f, s); err == nil {
			t.Time = v.UTC()
			return nil
		}
	}
	return fmt.Errorf("scan time column: unreadable %q", s)
}

// Value writes the column value.
func (t Time) Value() (driver.Value, error) {
	return t.UTC().Truncate(time.Millisecond), nil
}

type metaRow struct {
	Name  string `gorm:"primaryKey;type:varchar(64)"`
	Value string `gorm:"type:varchar(255);not null"`
}

func (metaRow) TableName() string { return "rh_meta" }

type namespaceRow struct {
	ID          int64  `gorm:"primaryKey;autoIncrement"`
	Name        string `gorm:"type:varchar(64);not null;uniqueIndex:uk_namespace_name"`
	Description string `gorm:"type:varchar(512);not null;default:''"`
	Enabled     bool   `gorm:"not null"`
	CreatedAt   Time   `gorm:"not null"`
	UpdatedAt   Time   `gorm:"not null"`
}

func (namespaceRow) TableName() string { return "rh_namespace" }

type groupRow struct {
	ID               int64  `gorm:"primaryKey;autoIncrement"`
	NamespaceID      int64  `gorm:"not null;uniqueIndex:uk_group_name,priority:1"`
	Name             string `gorm:"type:varchar(64);not null;uniqueIndex:uk_group_name,priority:2"`
	Description      string `gorm:"type:varchar(512);not null;default:''"`
	Token            string `gorm:"type:varchar(128);not null"`
	Enabled          bool   `gorm:"not null"`
	AutoCreateScenes bool   `gorm:"not null;default:false"`
	// PrevToken is the token before the last rotation, accepted until PrevTokenUntil.
	PrevToken      string `gorm:"type:varchar(128);not null;default:''"`
	PrevTokenUntil *Time
	CreatedAt      Time `gorm:"not null"`
	UpdatedAt      Time `gorm:"not null"`
}

func (groupRow) TableName() string { return "rh_group" }

type sceneRow struct {
	ID                  int64  `gorm:"primaryKey;autoIncrement"`
	GroupID             int64  `gorm:"not null;uniqueIndex:uk_scene_name,priority:1"`
	Name                string `gorm:"type:varchar(64);not null;uniqueIndex:uk_scene_name,priority:2"`
	Description         string `gorm:"type:varchar(512);not null;default:''"`
	Enabled             bool   `gorm:"not null"`
	Mode                string `gorm:"type:varchar(16);not null"`
	LocalAttempts       int    `gorm:"size:32;not null"`
	LocalBackoff        string `gorm:"type:text;not null"`
	MaxAttempts         int    `gorm:"size:32;not null"`
	Backoff             string `gorm:"type:text;not null"`
	TimeoutMs           int64  `gorm:"not null;default:0"`
	DeadlineMs          int64  `gorm:"not null;default:0"`
	Routing             string `gorm:"type:varchar(32);not null"`
	RateLimit           int    `gorm:"size:32;not null;default:0"`
	CallbackEnabled     bool   `gorm:"not null;default:false"`
	CallbackMaxAttempts int    `gorm:"size:32;not null"`
	CallbackBackoff     string `gorm:"type:text;not null"`
	Version             int64  `gorm:"not null;default:1"`
	CreatedAt           Time   `gorm:"not null"`
	UpdatedAt           Time   `gorm:"not null"`
}

func (sceneRow) TableName() string { return "rh_scene" }

// taskRow is a retry task. Its indexes serve, in order: claiming due replays, reading back a
// claim, and sweeping stuck ones (bucket, state, claim_token, next_at), where claim_token is 0
// unless the task is running; claiming due callbacks (bucket, cb_state, cb_next_at), whose
// read-back scans the few running callbacks of the node's buckets; one active task per key and
// merging (scene_id, active_key), where active_key holds the key only while the task is active;
// listing a scene's tasks by state (scene_id, state, id); retention (state, ended_at), so a
// retention batch reads only what it deletes, never the dead letters it keeps; the console's
// search by key (idem_key) and by creation time (created_at), columns no replay changes.
// Every index is rewritten when a column of it changes, and a replay changes state,
// claim_token and next_at twice (claim, settle): only the indexes that need them hold those
// columns. (So the console's
// list by due time has no index of its own: a (next_at, id) index would be rewritten by every
// replay; it merges the runs of idx_task_due of every bucket, see ListTaskPage.)
type taskRow struct {
	ID            int64   `gorm:"primaryKey;autoIncrement;index:idx_task_scene,priority:3"`
	GroupID       int64   `gorm:"not null"`
	SceneID       int64   `gorm:"not null;uniqueIndex:uk_task_active,priority:1;index:idx_task_scene,priority:1"`
	Bucket        int     `gorm:"size:32;not null;index:idx_task_due,priority:1;index:idx_task_cb_next,priority:1"`
	IdemKey       string  `gorm:"type:varchar(191);not null;index:idx_task_key"`
	ActiveKey     *string `gorm:"type:varchar(191);uniqueIndex:uk_task_active,priority:2"`
	Args          string  `gorm:"type:mediumtext;not null"`
	State         int8    `gorm:"type:tinyint;not null;index:idx_task_due,priority:2;index:idx_task_scene,priority:2;index:idx_task_ended,priority:1"`
	Attempts      int     `gorm:"size:32;not null;default:0"`
	LocalAttempts int     `gorm:"size:32;not null;default:0"`
	Merges        int     `gorm:"size:32;not null;default:0"`
	NextAt        Time    `gorm:"not null;index:idx_task_due,priority:4"`
	DeadlineAt    *Time
	ClaimToken    int64 `gorm:"not null;default:0;index:idx_task_due,priority:3"`
	RunDeadline   *Time
	ClaimedBy     string `gorm:"type:varchar(64);not null;default:''"`
	LastError     string `gorm:"type:text;not null"`
	CbState       int8   `gorm:"type:tinyint;not null;default:0;index:idx_task_cb_next,priority:2"`
	CbAttempts    int    `gorm:"size:32;not null;default:0"`
	CbNextAt      *Time  `gorm:"index:idx_task_cb_next,priority:3"`
	CbError       string `gorm:"type:text;not null"`
	ReportID      int64  `gorm:"not null;default:0"`
	CreatedAt     Time   `gorm:"not null;index:idx_task_created"`
	UpdatedAt     Time   `gorm:"not null"`
	EndedAt       *Time  `gorm:"index:idx_task_ended,priority:2"`
}

func (taskRow) TableName() string { return "rh_task" }

type attemptRow struct {
	ID         int64  `gorm:"primaryKey;autoIncrement;index:idx_attempt_task,priority:2"`
	TaskID     int64  `gorm:"not null;index:idx_attempt_task,priority:1"`
	Kind       int8   `gorm:"type:tinyint;not null"`
	Number     int    `gorm:"size:32;not null"`
	NodeID     string `gorm:"type:varchar(64);not null"`
	InstanceID string `gorm:"type:varchar(64);not null"`
	StartedAt  Time   `gorm:"not null;index:idx_attempt_started"`
	DurationMs int64  `gorm:"not null"`
	Outcome    int8   `gorm:"type:tinyint;not null"`
	Error      string `gorm:"type:text;not null"`
}

func (attemptRow) TableName() string { return "rh_attempt" }

type instanceRow struct {
	ID          string `gorm:"primaryKey;type:varchar(64)"`
	GroupID     int64  `gorm:"not null;index:idx_instance_group"`
	ExecutorURL string `gorm:"type:varchar(512);not null"`
	Capacity    int    `gorm:"size:32;not null"`
	SDKVersion  string `gorm:"column:sdk_version;type:varchar(32);not null"`
	Host        string `gorm:"type:varchar(255);not null"`
	StartedAt   Time   `gorm:"not null"`
	HeartbeatAt Time   `gorm:"not null;index:idx_instance_heartbeat"`
	// InFlight is how many replays and callbacks the instance was running at its last heartbeat.
	InFlight int `gorm:"size:32;not null;default:0"`
	// MaxBatch is how many tasks the instance takes in one batched call (0: single calls only).
	MaxBatch int `gorm:"size:32;not null;default:0"`
}

func (instanceRow) TableName() string { return "rh_client_instance" }

type nodeRow struct {
	ID          string `gorm:"primaryKey;type:varchar(64)"`
	Address     string `gorm:"type:varchar(255);not null"`
	Version     string `gorm:"type:varchar(32);not null"`
	StartedAt   Time   `gorm:"not null"`
	HeartbeatAt Time   `gorm:"not null;index:idx_node_heartbeat"`
}

func (nodeRow) TableName() string { return "rh_server_node" }

type leaseRow struct {
	Bucket    int    `gorm:"primaryKey;autoIncrement:false;size:32"`
	NodeID    string `gorm:"type:varchar(64);not null;default:'';index:idx_lease_node"`
	ExpiresAt Time   `gorm:"not null"`
}

func (leaseRow) TableName() string { return "rh_bucket_lease" }

// obsoleteIndex is an index an earlier version made; migration drops it where it finds it.
type obsoleteIndex struct {
	model any
	name  string
}

// obsoleteIndexes lists the indexes earlier versions made that this one does not.
func obsoleteIndexes() []obsoleteIndex {
	return []obsoleteIndex{
		{&taskRow{}, "idx_task_cb_due"}, // was (bucket, cb_state, claim_token, cb_next_at)
	}
}

// allModels are migrated in this order.
var allModels = []any{&metaRow{}, &namespaceRow{}, &groupRow{}, &sceneRow{}, &taskRow{},
	&attemptRow{}, &instanceRow{}, &nodeRow{}, &leaseRow{}, &nonceRow{}, &leaderRow{},
	&userRow{}, &userRoleRow{}, &apiTokenRow{}, &auditRow{},
	&summaryRow{}, &summaryHourRow{},
	&sceneStateRow{}, &jobRow{},
	&alertChannelRow{}, &alertRuleRow{}, &alertSilenceRow{}, &alertStateRow{}, &alertMessageRow{}}
