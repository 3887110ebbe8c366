package retryhub

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

func TestServerPolicyChangesLocalBehaviour(t *testing.T) {
	fs := newFakeServer(t, "secret")
	var calls atomic.Int32
	var f func(context.Context, int) error
	c := startClient(t, testConfig(fs.URL()), func(c *Client) {
		f = RetryableOn(c, "pol", failing(-1, &calls), WithMode(Local), WithLocalAttempts(2), WithLocalBackoff(fixed(time.Millisecond)))
	})
	run := func() (int32, error) {
		calls.Store(0)
		err := f(context.Background(), 1)
		return calls.Load(), err
	}
	if n, err := run(); n != 2 || errors.Is(err, ErrReported) {
		t.Fatalf("with code defaults ran %d times (%v), want 2 local", n, err)
	}

	setPolicy := func(etag string, sp protocol.ScenePolicy) {
		fs.set(func(fs *fakeServer) {
			fs.etag = etag
			fs.policies = []protocol.ScenePolicy{sp}
		})
	}
	base := protocol.ScenePolicy{Name: "pol", Enabled: true, Mode: protocol.Local, LocalAttempts: 4,
		LocalBackoff: backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Millisecond)}, Version: 2}
	setPolicy(`"v2"`, base)
	eventually(t, "the server's 4 local attempts", func() bool { n, _ := run(); return n == 4 })
	// Unchanged policies are answered 304.
	eventually(t, "a 304", func() bool {
		var nm int
		fs.get(func(fs *fakeServer) { nm = fs.notModified })
		return nm > 0
	})

	remote := base
	remote.Mode, remote.Version = protocol.Remote, 3
	setPolicy(`"v3"`, remote)
	eventually(t, "REMOTE from the server", func() bool { n, err := run(); return n == 1 && errors.Is(err, ErrReported) })

	disabled := remote
	disabled.Enabled, disabled.LocalAttempts, disabled.Version = false, 3, 4
	setPolicy(`"v4"`, disabled)
	eventually(t, "a disabled scene behaving as LOCAL", func() bool {
		n, err := run()
		return n == 3 && err != nil && !errors.Is(err, ErrReported)
	})

	timed := base
	timed.Timeout, timed.LocalAttempts, timed.Version = backoff.Duration(10*time.Millisecond), 1, 5
	setPolicy(`"v5"`, timed)
	eventually(t, "the server's timeout", func() bool { return c.scenePolicy("pol").timeout == 10*time.Millisecond })

	// A bad back-off from the server falls back to the code's.
	bad := base
	bad.LocalBackoff, bad.Version = backoff.Policy{Strategy: "sometimes"}, 6
	setPolicy(`"v6"`, bad)
	eventually(t, "the fallback back-off", func() bool {
		p := c.scenePolicy("pol")
		return p.version == 6 && p.backoff.Policy().Interval == backoff.Duration(time.Millisecond)
	})

	// The server forgets the scene: code defaults again.
	fs.set(func(fs *fakeServer) { fs.etag, fs.policies = `"v7"`, nil })
	eventually(t, "the code defaults", func() bool { n, _ := run(); return n == 2 })
}

func TestLateSceneGetsTheKnownPolicy(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) {
		fs.etag = `"v1"`
		fs.policies = []protocol.ScenePolicy{{Name: "late", Enabled: true, Mode: protocol.Local, LocalAttempts: 5, Version: 1}}
	})
	c := startClient(t, testConfig(fs.URL()), nil)
	RetryableOn(c, "late", func(context.Context, int) error { return nil })
	if p := c.scenePolicy("late"); p.attempts != 5 {
		t.Fatalf("a scene declared after start has %d local attempts, want the server's 5", p.attempts)
	}
	// The server learns of the new scene.
	eventually(t, "a registration naming the late scene", func() bool {
		var ok bool
		fs.get(func(fs *fakeServer) {
			last := fs.registers[len(fs.registers)-1]
			ok = len(last.Scenes) == 1 && last.Scenes[0] == "late"
		})
		return ok
	})
}
