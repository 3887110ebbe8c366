package retryhub

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRegisterAndHeartbeat(t *testing.T) {
	fs := newFakeServer(t, "secret")
	cfg := testConfig(fs.URL())
	cfg.InstanceID = "orders-1"
	cfg.Capacity = 4
	cfg.ExecutorURL = "http://10.0.0.5:7070" + ExecutorPath
	c := startClient(t, cfg, func(c *Client) {
		RetryableOn(c, "b-scene", func(context.Context, int) error { return nil })
		RetryableOn(c, "a-scene", func(context.Context, int) error { return nil })
	})
	fs.get(func(fs *fakeServer) {
		if len(fs.registers) != 1 {
			t.Fatalf("%d registrations at start, want 1", len(fs.registers))
		}
		r := fs.registers[0]
		if r.InstanceID != "orders-1" || r.Capacity != 4 || r.SDKVersion != Version || r.Host == "" ||
			r.ExecutorURL != cfg.ExecutorURL || len(r.Scenes) != 2 || r.Scenes[0] != "a-scene" {
			t.Fatalf("registration %+v", r)
		}
	})
	if !c.Stats().Registered {
		t.Fatal("not registered after start")
	}
	// The server asked for a heartbeat every 50ms.
	eventually(t, "heartbeats", func() bool {
		var n int
		fs.get(func(fs *fakeServer) { n = fs.heartbeats })
		return n >= 2
	})
	// The server forgets the instance: the next heartbeat registers it again.
	fs.set(func(fs *fakeServer) { delete(fs.instances, "orders-1") })
	eventually(t, "a new registration", func() bool {
		var n int
		fs.get(func(fs *fakeServer) { n = len(fs.registers) })
		return n == 2
	})
}

func TestStartWithTheServerDown(t *testing.T) {
	fs := newFakeServer(t, "secret")
	fs.set(func(fs *fakeServer) { fs.down = true })
	var f func(context.Context, int) error
	c := startClient(t, testConfig(fs.URL()), func(c *Client) {
		f = RetryableOn(c, "early", func(context.Context, int) error { return errBoom }, WithMode(Remote))
	})
	if c.Stats().Registered {
		t.Fatal("registered with the server down")
	}
	// Calls work meanwhile with the code defaults, and queue their reports.
	if err := f(context.Background(), 1); !errors.Is(err, ErrReported) {
		t.Fatal(err)
	}
	fs.set(func(fs *fakeServer) { fs.down = false })
	eventually(t, "registration and delivery", func() bool {
		st := c.Stats()
		return st.Registered && st.Delivered == 1
	})
}

// processWide is declared as business code declares its scenes: once, at package level.
var processWide = Retryable("process-wide", func(context.Context, int) error { return errBoom }, WithMode(Remote))

func TestProcessWideClient(t *testing.T) {
	fs := newFakeServer(t, "secret")
	send := processWide
	if err := send(context.Background(), 1); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("before Start: %v, want ErrNotStarted", err)
	}
	c, err := Start(context.Background(), testConfig(fs.URL()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), testConfig(fs.URL())); err == nil {
		t.Fatal("a second process-wide client started")
	}
	if err := send(context.Background(), 2); !errors.Is(err, ErrReported) {
		t.Fatalf("after Start: %v, want ErrReported", err)
	}
	if err := Report(context.Background(), "process-wide", 3, "", errBoom); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivery", func() bool { return c.Stats().Delivered == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The process-wide client can start again after Shutdown.
	c2, err := Start(context.Background(), testConfig(fs.URL()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
