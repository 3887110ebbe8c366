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
// The history keeps it as JSON with these tags; the console shows it so.
type Message struct {
	Kind      string        `json:"kind"`      // Firing, Reminder, Resolved or Test
	Severity  string        `json:"severity"`  // "critical", "warning" or "info"
	RuleID    int64         `json:"rule_id"`   // 0 for a test
	Rule      string        `json:"rule"`      // the rule's name
	RuleKind  string        `json:"rule_kind"` // what the rule measures, e.g. "tasks_exhausted"
	Namespace string        `json:"namespace"` // the namespace's name
	At        time.Time     `json:"at"`        // when the evaluation saw it
	Window    time.Duration `json:"window"`
	Items     []Item        `json:"items"` // the subjects, at least one for Firing and Reminder
	// ConsoleURL links to the console's view of the whole incident ("" without server.public_url).
	ConsoleURL string `json:"console_url"`
}

// Item is one subject of a message with its figures.
type Item struct {
	Group string `json:"group"` // "" when the subject is not a group or a scene (a server node, buckets)
	Scene string `json:"scene"` // "" when the subject is a group or the cluster
	// Subject names what fired when it is neither a group nor a scene (a node's name).
	Subject string `json:"subject"`
	// Value is the measured figure and Threshold the rule's bound, in the rule's unit
	// (tasks, attempts, percent, seconds).
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Unit      string  `json:"unit"`
	// Summary says it in one line, e.g. "12 tasks exhausted in 5m (threshold 10)".
	Summary string `json:"summary"`
	// Errors are the newest distinct errors with sample task ids.
	Errors []ErrorSample `json:"errors"`
	// Link opens the console's task list filtered to the affected tasks ("" without a public URL).
	Link string `json:"link"`
}

// ErrorSample is one distinct error and some tasks that ended with it.
type ErrorSample struct {
	Error   string  `json:"error"`
	TaskIDs []int64 `json:"task_ids"`
}

// Sender sends messages through one channel. Send returns an error saying why a message was
// not delivered (the caller records it and retries on a later evaluation); it honours ctx.
type Sender interface {
	Send(ctx context.Context, m Message) error
}
