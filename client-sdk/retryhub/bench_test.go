package retryhub

import (
	"context"
	"testing"
)

type benchArgs struct {
	OrderID int64
	Email   string
}

//go:noinline
func benchTarget(_ context.Context, a benchArgs) error {
	if a.OrderID < 0 {
		return context.Canceled
	}
	return nil
}

var benchWrapped = Retryable("bench-success-path", benchTarget)

var benchSink error

func BenchmarkDirectCall(b *testing.B) {
	ctx := context.Background()
	a := benchArgs{OrderID: 42, Email: "a@example.com"}
	b.ReportAllocs()
	for b.Loop() {
		benchSink = benchTarget(ctx, a)
	}
}

func BenchmarkSuccessPath(b *testing.B) {
	ctx := context.Background()
	a := benchArgs{OrderID: 42, Email: "a@example.com"}
	b.ReportAllocs()
	for b.Loop() {
		benchSink = benchWrapped(ctx, a)
	}
}

func TestSuccessPathDoesNotAllocate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := benchArgs{OrderID: 42, Email: "a@example.com"}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := benchWrapped(ctx, a); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("the success path allocates %v times per call, want 0", allocs)
	}
}
