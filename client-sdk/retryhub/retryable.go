package retryhub

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// policy is a scene's policy as a call uses it: the code defaults, or the server's policy once
// it arrived. It is immutable; a scene swaps it whole.
type policy struct {
	// mode is Local for a scene the server disabled.
	mode     protocol.Mode
	attempts int
	backoff  *backoff.Backoff
	timeout  time.Duration
	// version is the server's version of the scene; 0 for code defaults.
	version int64
}

// scene is one registered retryable operation, without its argument type.
type scene struct {
	name string
	reg  *registry
	code *policy
	pol  atomic.Pointer[policy]

	// replay runs the function once with JSON arguments; decodeErr says the arguments did not
	// decode.
	replay func(ctx context.Context, args json.RawMessage) (decodeErr, err error)
	// callback runs the scene's callback; nil when the scene has none.
	callback func(ctx context.Context, req *protocol.ExecuteRequest) (decodeErr, err error)
	// remote is the declared default of the server's policy (WithRemotePolicy), or nil.
	remote *protocol.RemotePolicy
}

// registry holds the scenes one Client serves.
type registry struct {
	mu     sync.RWMutex
	scenes map[string]*scene
	// client is the started Client serving the registry, nil when none.
	client atomic.Pointer[Client]
	// calls counts the calls of the registry's scenes (Stats).
	calls callCounters
}

// callCounters count what the retryable functions did.
type callCounters struct {
	calls, failed, localRetries atomic.Uint64
}

func newRegistry() *registry { return &registry{scenes: make(map[string]*scene)} }

// defaultRegistry holds the scenes declared with Retryable; Start serves it.
var defaultRegistry = newRegistry()

func (r *registry) add(s *scene) {
	r.mu.Lock()
	if _, dup := r.scenes[s.name]; dup {
		r.mu.Unlock()
		panic(fmt.Sprintf("retryhub: scene %q is declared twice; each scene name may be declared once per client", s.name))
	}
	r.scenes[s.name] = s
	c := r.client.Load()
	r.mu.Unlock()
	if c != nil {
		c.sceneAdded(s)
	}
}

func (r *registry) get(name string) *scene {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.scenes[name]
}

// names returns the registered scene names, sorted.
func (r *registry) names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.scenes))
	for n := range r.scenes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// declarations describes the registered scenes as the code declared them, sorted by name.
func (r *registry) declarations() []protocol.SceneDeclaration {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]protocol.SceneDeclaration, 0, len(r.scenes))
	for _, s := range r.scenes {
		d := protocol.SceneDeclaration{Name: s.name, Mode: s.code.mode, LocalAttempts: s.code.attempts,
			Timeout: backoff.Duration(s.code.timeout), Callback: s.callback != nil, Remote: s.remote}
		if s.code.backoff != nil {
			d.LocalBackoff = s.code.backoff.Policy()
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b protocol.SceneDeclaration) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// all returns the registered scenes.
func (r *registry) all() []*scene {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*scene, 0, len(r.scenes))
	for _, s := range r.scenes {
		out = append(out, s)
	}
	return out
}

// attach makes c the registry's client; it fails when another client serves it.
func (r *registry) attach(c *Client) ([]*scene, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.client.CompareAndSwap(nil, c) {
		return nil, false
	}
	out := make([]*scene, 0, len(r.scenes))
	for _, s := range r.scenes {
		out = append(out, s)
	}
	return out, true
}

func (r *registry) detach(c *Client) { r.client.CompareAndSwap(c, nil) }

// Retryable declares a retryable operation, the scene, in the process-wide registry that Start
// serves, and returns a function with fn's signature that runs fn under the scene's policy:
//
//	var SendEmail = retryhub.Retryable("send-email", sendEmail, retryhub.WithMode(retryhub.LocalRemote))
//
//	err := SendEmail(ctx, email)
//
// A call runs fn; on failure it retries in-process (local attempts, spaced by the local
// back-off, never sleeping past ctx's deadline) and, in Remote and LocalRemote modes, reports
// what still fails to the server, returning an error for which errors.Is(err, ErrReported)
// holds. Errors marked with Permanent are neither retried nor reported. Cancelling ctx stops the
// local retries but not the remote ones: the failure is still reported (the report does not
// wait on ctx).
//
// Retry storms are contained: a retryable called inside a retry flow (a local retry of another
// retryable, or a replay by the server, or a request whose caller marked it with Transport)
// runs once and returns its error unchanged to the flow that owns the retry; it neither retries
// nor reports. To keep the success path free of allocations, the outer call's first attempt
// runs with the caller's ctx unmarked; only its later attempts (and every replay) carry the
// mark. A retryable nested in another therefore runs at most its own attempts plus the outer's
// remaining attempts, never their product.
//
// The success path (fn returns nil) allocates nothing and adds a few nanoseconds to the call,
// unless the scene has a per-attempt timeout (WithTimeout, or the server's policy), which
// costs a context per call.
//
// T is the argument type; it must survive a JSON round trip, because a reported call's
// arguments travel to the server as JSON and come back decoded into T for a replay. Scene
// names are unique per registry: declaring one twice panics, as do invalid options.
func Retryable[T any](scene string, fn func(context.Context, T) error, opts ...Option) func(context.Context, T) error {
	return declare(defaultRegistry, scene, fn, opts)
}

// RetryableOn is Retryable for an explicit Client made with NewClient: the scene is served by c
// (and reported through c) rather than by the process-wide client.
func RetryableOn[T any](c *Client, scene string, fn func(context.Context, T) error, opts ...Option) func(context.Context, T) error {
	if c == nil {
		panic(fmt.Sprintf("retryhub: RetryableOn(%q): nil client", scene))
	}
	return declare(c.reg, scene, fn, opts)
}

// validSceneName reports why name is not a usable scene name, or "".
func validSceneName(name string) string {
	if !protocol.ValidName(name) {
		return "a scene name is " + protocol.NameRule
	}
	return ""
}

// MaxKeyLen is the longest idempotency key the server accepts, in bytes.
const MaxKeyLen = protocol.MaxKeyLen

// checkKey says why key is not an idempotency key the server accepts.
func checkKey(key string) error {
	if err := protocol.CheckKey(key); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return nil
}

func declare[T any](reg *registry, name string, fn func(context.Context, T) error, opts []Option) func(context.Context, T) error {
	if msg := validSceneName(name); msg != "" {
		panic(fmt.Sprintf("retryhub: Retryable(%q): %s", name, msg))
	}
	if fn == nil {
		panic(fmt.Sprintf("retryhub: Retryable(%q): nil function", name))
	}
	cfg := sceneConfig{mode: DefaultMode, attempts: DefaultLocalAttempts, backoff: DefaultLocalBackoff()}
	for _, o := range opts {
		o(&cfg)
	}
	var zero T
	if _, err := json.Marshal(zero); err != nil {
		cfg.errs = append(cfg.errs, fmt.Sprintf("argument type %T does not encode as JSON: %v", zero, err))
	}
	w := &wrapped[T]{fn: fn}
	if cfg.key != nil {
		k, ok := cfg.key.(func(T) string)
		if !ok {
			cfg.errs = append(cfg.errs, fmt.Sprintf("WithKey takes a %s, the scene's arguments are %s", reflect.TypeOf(cfg.key), typeName[T]()))
		}
		w.key = k
	}
	if cfg.callback != nil {
		cb, ok := cfg.callback.(func(context.Context, CallbackEvent[T]) error)
		if !ok {
			cfg.errs = append(cfg.errs, fmt.Sprintf("WithCallback takes a %s, the scene's arguments are %s", reflect.TypeOf(cfg.callback), typeName[T]()))
		}
		w.cb = cb
	}
	if len(cfg.errs) > 0 {
		panic(fmt.Sprintf("retryhub: Retryable(%q): %s", name, strings.Join(cfg.errs, "; ")))
	}
	s := &scene{
		name: name,
		reg:  reg,
		code: &policy{
			mode:     cfg.mode,
			attempts: cfg.attempts,
			backoff:  cfg.backoff.MustCompile(),
			timeout:  cfg.timeout,
		},
	}
	s.remote = cfg.remote
	s.pol.Store(s.code)
	w.s = s
	s.replay = w.replay
	if w.cb != nil {
		s.callback = w.callback
	}
	reg.add(s)
	return w.call
}

func typeName[T any]() string { return reflect.TypeFor[T]().String() }
