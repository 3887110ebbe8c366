// Package retry is retryhub's domain: namespaces, groups, scenes and their policies, retry
// tasks, their attempts, and the rules that move a task from state to state. It imports no
// database and no HTTP code, so its rules are tested in microseconds and read in minutes.
package retry

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// Routing says how dispatch picks a live client instance for a replay.
type Routing string

// The routing strategies.
const (
	RoundRobin        Routing = "round_robin"
	Random            Routing = "random"
	ConsistentHash    Routing = "consistent_hash"
	LeastRecentlyUsed Routing = "least_recently_used"
)

// Valid reports whether r is one of the defined strategies.
func (r Routing) Valid() bool {
	return r == RoundRobin || r == Random || r == ConsistentHash || r == LeastRecentlyUsed
}

// Namespace groups the business services of one team or domain.
type Namespace struct {
	ID          int64
	Name        string
	Description string
	Enabled     bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Group is one business service. Its token signs client traffic in both directions.
type Group struct {
	ID          int64
	NamespaceID int64
	// Namespace is the namespace's name.
	Namespace   string
	Name        string
	Description string
	Token       string
	// PrevToken is the token before the last rotation, still accepted until PrevTokenUntil
	// (empty or nil: none).
	PrevToken      string
	PrevTokenUntil *time.Time
	Enabled        bool
	// NamespaceEnabled is whether the group's namespace is enabled.
	NamespaceEnabled bool
	// AutoCreateScenes lets reports for unknown scenes create them with the default policy.
	AutoCreateScenes bool
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Active reports whether the group and its namespace are both enabled: only then are its clients
// served and its tasks dispatched.
func (g Group) Active() bool { return g.Enabled && g.NamespaceEnabled }

// Tokens returns the tokens a client of the group may sign with at now: the current one, then
// the previous one while its grace period lasts.
func (g Group) Tokens(now time.Time) []string {
	if g.PrevToken != "" && g.PrevTokenUntil != nil && now.Before(*g.PrevTokenUntil) {
		return []string{g.Token, g.PrevToken}
	}
	return []string{g.Token}
}

// Task is one failed call kept for remote retry.
type Task struct {
	ID             int64
	GroupID        int64
	SceneID        int64
	Bucket         int
	IdempotencyKey string
	Args           []byte
	State          State
	// Attempts counts remote replays so far.
	Attempts int
	// LocalAttempts is how many times the call ran in the business process before the report.
	LocalAttempts int
	// Merges counts reports with the same key that merged into this task.
	Merges int
	// NextAt is the next trigger time (while running: the one it was claimed for).
	NextAt     time.Time
	DeadlineAt *time.Time
	// ClaimToken is the running claim's token, 0 when no claim holds the task.
	ClaimToken int64
	ClaimedBy  string
	// RunDeadline is when a running claim lapses.
	RunDeadline *time.Time
	LastError   string

	CallbackState    CallbackState
	CallbackAttempts int
	// CallbackNextAt is the callback's next trigger time.
	CallbackNextAt *time.Time
	CallbackError  string

	CreatedAt time.Time
	UpdatedAt time.Time
	EndedAt   *time.Time
}

// AttemptKind says what an attempt ran.
type AttemptKind int8

// The attempt kinds. Stored in the database: never renumber them.
const (
	KindReplay   AttemptKind = 1
	KindCallback AttemptKind = 2
)

// String returns "replay" or "callback".
func (k AttemptKind) String() string {
	if k == KindCallback {
		return protocol.KindCallback
	}
	return protocol.KindReplay
}

// Outcome is how an attempt ended.
type Outcome int8

// The attempt outcomes. Stored in the database: never renumber them.
const (
	// OutcomeSucceeded: the client ran the call without error.
	OutcomeSucceeded Outcome = 1
	// OutcomeFailed: the client answered with an error, or the call failed on the way.
	OutcomeFailed Outcome = 2
	// OutcomeTimedOut: no answer within the attempt's time, or the claim's deadline passed.
	OutcomeTimedOut Outcome = 3
)

// String returns the outcome's lower-case name.
func (o Outcome) String() string {
	switch o {
	case OutcomeSucceeded:
		return "succeeded"
	case OutcomeFailed:
		return "failed"
	case OutcomeTimedOut:
		return "timed_out"
	}
	return fmt.Sprintf("outcome(%d)", int8(o))
}

// Attempt records one replay or callback call.
type Attempt struct {
	ID         int64
	TaskID     int64
	Kind       AttemptKind
	Number     int
	NodeID     string
	InstanceID string
	StartedAt  time.Time
	Duration   time.Duration
	Outcome    Outcome
	Error      string
}

// Instance is a live process of a group that can run replays.
type Instance struct {
	ID          string
	GroupID     int64
	ExecutorURL string
	Capacity    int
	// MaxBatch, above 1, is how many tasks the instance takes in one batched call.
	MaxBatch    int
	SDKVersion  string
	Host        string
	StartedAt   time.Time
	HeartbeatAt time.Time
}

// Node is a server process of the cluster.
type Node struct {
	ID          string
	Address     string
	Version     string
	StartedAt   time.Time
	HeartbeatAt time.Time
}

// MaxErrorLen bounds stored error texts, in bytes.
const MaxErrorLen = 2000

// TruncateError makes an error text fit for storage: bytes that are not UTF-8 (an error page
// in another encoding, say) become U+FFFD, which MySQL's utf8mb4 columns would otherwise
// refuse, and the text is cut to MaxErrorLen bytes without splitting a character.
func TruncateError(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxErrorLen {
		return s
	}
	cut := MaxErrorLen - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// BucketOf is the bucket of a task with the given idempotency key.
func BucketOf(key string, buckets int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(buckets))
}

// MaxKeyLen bounds an idempotency key, in bytes.
const MaxKeyLen = protocol.MaxKeyLen

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid")

// ValidateName checks the name of a namespace, group or scene: 1 to 64 letters, digits, '.',
// '_' or '-', starting with a letter or digit.
func ValidateName(kind, name string) error {
	if !protocol.ValidName(name) {
		return fmt.Errorf("%w %s name %q: use %s", ErrInvalid, kind, name, protocol.NameRule)
	}
	return nil
}

// ValidateKey checks an idempotency key.
func ValidateKey(key string) error {
	if err := protocol.CheckKey(key); err != nil {
		return fmt.Errorf("%w idempotency key: %v", ErrInvalid, err)
	}
	return nil
}

// Truncate returns t cut to whole milliseconds in UTC, the precision every database stores.
func Truncate(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// mustPolicy returns a policy known to be valid, compiled once to check it.
func mustPolicy(p backoff.Policy) backoff.Policy {
	p.MustCompile()
	return p
}
