package scheduler_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// A cron runs its job on the schedule; Stop cancels a run under way and waits for it.
func TestCronRunsJobsAndStopCancelsTheRunUnderWay(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	running := make(chan struct{}, 1)
	ended := make(chan error, 1)
	c, err := scheduler.NewCron(testkit.Logger(t), scheduler.Job{Name: "test", Spec: "@every 10ms", Run: func(ctx context.Context) {
		if runs.Add(1) < 3 {
			return
		}
		running <- struct{}{}
		<-ctx.Done() // a long run: it ends only when the cron stops
		ended <- ctx.Err()
	}})
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	<-running
	c.Stop(context.Background())
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the run's context did not end")
		}
	default:
		t.Fatal("Stop returned before the run under way ended")
	}
	if err := c.Start(context.Background()); err == nil {
		t.Fatal("a stopped cron started again")
	}
}

func TestCronRefusesABadSpec(t *testing.T) {
	t.Parallel()
	if _, err := scheduler.NewCron(testkit.Logger(t), scheduler.Job{Name: "bad", Spec: "every minute"}); err == nil {
		t.Fatal("a bad spec was accepted")
	}
}
