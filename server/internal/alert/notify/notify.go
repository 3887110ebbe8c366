// Package notify delivers alert messages through channels: email over SMTP, a generic signed
// JSON webhook, and the DingTalk, Lark/Feishu and WeCom robots in their documented shapes.
//
// A channel is a kind and its settings (a JSON object). Settings hold secrets (SMTP password,
// webhook and robot signing secrets) that are stored sealed (Sealer) and never shown again:
// Redact blanks them for the API. New builds a Sender from settings after checking them, so a
// bad setting is refused when the channel is saved, not when an alert fires.
//
// The life of a channel's settings: saving runs Merge(kind, stored, edited) (secrets the edit
// left empty keep their stored value), New (checks them), then Sealer.Seal for the database;
// showing runs Sealer.Open then Redact; sending runs Sealer.Open then New and Sender.Send.
package notify

import (
	"context"
	"time"
)

// Kinds of channel.
const (
	KindEmail    = "email"
	KindWebhook  = "webhook"
	KindDingTalk = "dingtalk"
	KindLark     = "lark"
	KindWeCom    = "wecom"
)

// Kinds of message.
const (
	Firing   = "firing"   // the rule started firing
	Reminder = "reminder" // still firing after the rule's repeat interval
	Resolved = "resolved" // the rule cleared
	Test     = "test"     // "send a test" from the console
)

// Message is one notification of one rule: every subject (scene, group, node) the rule fired
// for in one evaluation goes into the same message, so one incident never floods a channel.
type Message struct {
	Kind      string    // Firing, Reminder, Resolved or Test
	Severity  string    // "critical", "warning" or "info"
	RuleID    int64     // 0 for a test
	Rule      string    // the rule's name
	RuleKind  string    // what the rule measures, e.g. "tasks_exhausted"
	Namespace string    // the namespace's name
	At        time.Time // when the evaluation saw it
	Window    time.Duration
	Items     []Item // the subjects, at least one for Firing and Reminder
	// ConsoleURL links to the console's view of the whole incident ("" without server.public_url).
	ConsoleURL string
}

// Item is one subject of a message with its figures.
type Item struct {
	Group string // "" when the subject is not a group or a scene (a server node, buckets)
	Scene string // "" when the subject is a group or the cluster
	// Subject names what fired when it is neither a group nor a scene (a node's name).
	Subject string
	// Value is the measured figure and Threshold the rule's bound, in the rule's unit
	// (tasks, attempts, percent, seconds).
	Value, Threshold float64
	Unit             string
	// Summary says it in one line, e.g. "12 tasks exhausted in 5m (threshold 10)".
	Summary string
	// Errors are the newest distinct errors with sample task ids.
	Errors []ErrorSample
	// Link opens the console's task list filtered to the affected tasks ("" without a public URL).
	Link string
}

// ErrorSample is one distinct error and some tasks that ended with it.
type ErrorSample struct {
	Error   string
	TaskIDs []int64
}

// Sender sends messages through one channel. Send returns an error saying why a message was
// not delivered (the caller records it and retries on a later evaluation); it honours ctx.
type Sender interface {
	Send(ctx context.Context, m Message) error
}
