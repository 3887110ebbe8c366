package bench

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

// sdkCapacity is how many replays the bench's SDK instance runs at once: the dispatcher's
// default concurrency, so that the instance never answers busy.
const sdkCapacity = 256

// startSDK starts a real SDK client for the bench's group at base, serving fn as the scene
// "notify" on its own executor listener on loopback, as an application would: the server's
// replays reach fn through the SDK's executor protocol, whatever it is today. The client shuts
// down when the benchmark ends.
func startSDK[T any](b *testing.B, base string, w world, fn func(context.Context, T) error, edit func(*retryhub.Config)) *retryhub.Client {
	b.Helper()
	c := startSDKClient(b, base, w, edit)
	retryhub.RetryableOn(c, w.scene.Name, fn, retryhub.WithMode(retryhub.Remote))
	startClient(b, c)
	return c
}

// startSDKClient makes (without starting it) an SDK client for the bench's group at base,
// listening for replays on loopback; edit changes its configuration.
func startSDKClient(b *testing.B, base string, w world, edit func(*retryhub.Config)) *retryhub.Client {
	b.Helper()
	cfg := retryhub.Config{Servers: []string{base}, Namespace: w.namespace, Group: w.group.Name, Token: token,
		ListenAddr: "127.0.0.1:0", Capacity: sdkCapacity, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&cfg)
	}
	c, err := retryhub.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// startClient starts c, shut down when the benchmark ends, and waits until the server lists
// it.
func startClient(b *testing.B, c *retryhub.Client) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			b.Logf("SDK client shutdown: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !c.Stats().Registered {
		if time.Now().After(deadline) {
			b.Fatal("the SDK client did not register within 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
