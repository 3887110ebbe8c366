package retry

import (
	"fmt"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// Scene is one retryable operation of a group, with its policy.
type Scene struct {
	ID          int64
	GroupID     int64
	Name        string
	Description string
	// Enabled scenes are replayed; a paused scene's tasks wait until it is enabled again.
	Enabled bool
	Mode    protocol.Mode
	// LocalAttempts and LocalBackoff govern the SDK's in-process retries.
	LocalAttempts int
	LocalBackoff  backoff.Policy
	// MaxAttempts and Backoff govern the server's remote replays.
	MaxAttempts int
	Backoff     backoff.Policy
	// Timeout bounds one attempt; zero means the server's default.
	Timeout time.Duration
	// Deadline bounds a task's life from its creation; zero means none.
	Deadline time.Duration
	Routing  Routing
	// RateLimit bounds replays per second across the cluster; zero means no bound.
	RateLimit int
	Callback  protocol.CallbackPolicy
	// Version grows with every change; clients use it to notice edits.
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Limits on scene policies.
const (
	MaxLocalAttempts    = 100
	MaxRemoteAttempts   = 1000
	MaxCallbackAttempts = 1000
	MaxTimeout          = 24 * time.Hour
	MaxRateLimit        = 1_000_000
)

// DefaultScene returns a scene with the default policy: local then remote; three local
// attempts 100 ms apart growing to 2 s; sixteen remote replays on the delay-level ladder
// (10 s up to 2 h, about 4.5 hours in all); 30 s per attempt; round robin; callback off
// (8 attempts, exponential from 5 s to 10 min, when enabled).
func DefaultScene(groupID int64, name string) Scene {
	return Scene{
		GroupID:       groupID,
		Name:          name,
		Enabled:       true,
		Mode:          protocol.LocalRemote,
		LocalAttempts: 3,
		LocalBackoff: mustPolicy(backoff.Policy{Strategy: backoff.Exponential,
			Base: backoff.Duration(100 * time.Millisecond), Cap: backoff.Duration(2 * time.Second),
			Jitter: backoff.EqualJitter}),
		MaxAttempts: 16,
		Backoff:     backoff.Policy{Strategy: backoff.Levels},
		Timeout:     30 * time.Second,
		Routing:     RoundRobin,
		Callback: protocol.CallbackPolicy{
			MaxAttempts: 8,
			Backoff: mustPolicy(backoff.Policy{Strategy: backoff.Exponential,
				Base: backoff.Duration(5 * time.Second), Cap: backoff.Duration(10 * time.Minute)}),
		},
	}
}

// FromDeclaration returns the scene a client declared: the default policy with the mode, local
// attempts, local back-off, timeout and callback switch of the declaration, where those are
// valid (an invalid field keeps its default).
func FromDeclaration(groupID int64, d protocol.SceneDeclaration) Scene {
	sc := DefaultScene(groupID, d.Name)
	if d.Mode.Valid() {
		sc.Mode = d.Mode
	}
	if d.LocalAttempts >= 1 && d.LocalAttempts <= MaxLocalAttempts {
		sc.LocalAttempts = d.LocalAttempts
	}
	if _, err := d.LocalBackoff.Compile(); err == nil {
		sc.LocalBackoff = d.LocalBackoff
	}
	if t := time.Duration(d.Timeout); t > 0 && t <= MaxTimeout {
		sc.Timeout = t
	}
	sc.Callback.Enabled = d.Callback
	if r := d.Remote; r != nil {
		// Each declared value is taken when it passes the scene's rules, and left at the
		// server's default when not, as the local fields are.
		if r.MaxAttempts >= 1 && r.MaxAttempts <= MaxRemoteAttempts {
			sc.MaxAttempts = r.MaxAttempts
		}
		if r.Backoff != nil {
			if _, err := r.Backoff.Compile(); err == nil {
				sc.Backoff = *r.Backoff
			}
		}
		if r.CallbackMaxAttempts >= 1 && r.CallbackMaxAttempts <= MaxCallbackAttempts {
			sc.Callback.MaxAttempts = r.CallbackMaxAttempts
		}
		if r.CallbackBackoff != nil {
			if _, err := r.CallbackBackoff.Compile(); err == nil {
				sc.Callback.Backoff = *r.CallbackBackoff
			}
		}
	}
	return sc
}

// Validate checks every rule of a scene; the error names the field at fault.
func (s *Scene) Validate() error {
	if err := ValidateName("scene", s.Name); err != nil {
		return err
	}
	if len(s.Description) > 512 {
		return fmt.Errorf("%w description: %d bytes, at most 512", ErrInvalid, len(s.Description))
	}
	if !s.Mode.Valid() {
		return fmt.Errorf("%w mode %q: want LOCAL, REMOTE or LOCAL_REMOTE", ErrInvalid, s.Mode)
	}
	if s.LocalAttempts < 1 || s.LocalAttempts > MaxLocalAttempts {
		return fmt.Errorf("%w local_attempts %d: want 1 to %d (the first call counts)", ErrInvalid, s.LocalAttempts, MaxLocalAttempts)
	}
	if _, err := s.LocalBackoff.Compile(); err != nil {
		return fmt.Errorf("%w local_backoff: %v", ErrInvalid, err)
	}
	if s.MaxAttempts < 1 || s.MaxAttempts > MaxRemoteAttempts {
		return fmt.Errorf("%w max_attempts %d: want 1 to %d", ErrInvalid, s.MaxAttempts, MaxRemoteAttempts)
	}
	if _, err := s.Backoff.Compile(); err != nil {
		return fmt.Errorf("%w backoff: %v", ErrInvalid, err)
	}
	if s.Timeout < 0 || s.Timeout > MaxTimeout {
		return fmt.Errorf("%w timeout %s: want 0 (server default) to %s", ErrInvalid, s.Timeout, MaxTimeout)
	}
	if s.Deadline < 0 {
		return fmt.Errorf("%w deadline %s: must not be negative", ErrInvalid, s.Deadline)
	}
	if !s.Routing.Valid() {
		return fmt.Errorf("%w routing %q: want round_robin, random, consistent_hash or least_recently_used", ErrInvalid, s.Routing)
	}
	if s.RateLimit < 0 || s.RateLimit > MaxRateLimit {
		return fmt.Errorf("%w rate_limit %d: want 0 (no limit) to %d per second", ErrInvalid, s.RateLimit, MaxRateLimit)
	}
	if s.Callback.MaxAttempts < 1 || s.Callback.MaxAttempts > MaxCallbackAttempts {
		return fmt.Errorf("%w callback max_attempts %d: want 1 to %d", ErrInvalid, s.Callback.MaxAttempts, MaxCallbackAttempts)
	}
	if _, err := s.Callback.Backoff.Compile(); err != nil {
		return fmt.Errorf("%w callback backoff: %v", ErrInvalid, err)
	}
	return nil
}

// ClientPolicy is the scene's policy as clients see it.
func (s *Scene) ClientPolicy() protocol.ScenePolicy {
	return protocol.ScenePolicy{
		Name:          s.Name,
		Enabled:       s.Enabled,
		Mode:          s.Mode,
		LocalAttempts: s.LocalAttempts,
		LocalBackoff:  s.LocalBackoff,
		MaxAttempts:   s.MaxAttempts,
		Backoff:       s.Backoff,
		Timeout:       backoff.Duration(s.Timeout),
		Deadline:      backoff.Duration(s.Deadline),
		Callback:      s.Callback,
		Version:       s.Version,
	}
}
