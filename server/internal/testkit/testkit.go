// Package testkit is the scaffolding the server's tests share: a fixture of a namespace, a group
// and a scene in a test database, with readers of its tasks; a fake client instance that plays an
// executor; signed client API calls; a logger and a poll. Only _test.go files import it.
package testkit

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// Logger writes warnings and errors to the test's output.
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// WaitUntil polls cond every 5 ms until it holds, failing with what after timeout.
func WaitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitEvery(t, 5*time.Millisecond, timeout, what, cond)
}

// WaitEvery is WaitUntil polling every interval.
func WaitEvery(t testing.TB, interval, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitDescribed(t, interval, timeout, func() string { return what }, cond)
}

// WaitDescribed is WaitEvery naming what it waited for, and what it found instead, with
// describe, called once on failure.
func WaitDescribed(t testing.TB, interval, timeout time.Duration, describe func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, describe())
		}
		time.Sleep(interval)
	}
}

// AllBuckets lists every bucket of a test store.
func AllBuckets() []int {
	b := make([]int, storagetest.Buckets)
	for i := range b {
		b[i] = i
	}
	return b
}

// FreeAddr returns a loopback address nothing listens on (yet).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
