package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/robfig/cron/v3"

	"github.com/retryhub/retryhub/server/internal/service"
)

// Job is work a Cron runs on a schedule.
type Job struct {
	Name string
	// Spec is a cron spec with an optional seconds field, or a descriptor (@every 1m).
	Spec string
	// Run does the work once; its ctx ends when the Cron stops.
	Run func(ctx context.Context)
}

// Cron runs jobs on their schedules until Stop; a run that falls due while the previous one of
// the same job is still going is skipped.
type Cron struct {
	c      *cron.Cron
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	start  bool
}

var _ service.Service = (*Cron)(nil)

var specParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// NewCron returns a cron of the jobs; it fails on a spec it cannot parse.
func NewCron(log *slog.Logger, jobs ...Job) (*Cron, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cron{ctx: ctx, cancel: cancel, c: cron.New(cron.WithParser(specParser),
		cron.WithLogger(cron.DiscardLogger), cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))}
	for _, j := range jobs {
		run := j.Run
		if _, err := c.c.AddFunc(j.Spec, func() { run(ctx) }); err != nil {
			cancel()
			return nil, fmt.Errorf("schedule %s %q: %w", j.Name, j.Spec, err)
		}
	}
	return c, nil
}

// Start runs the schedules.
func (c *Cron) Start(context.Context) error {
	if c.start {
		return service.ErrStarted
	}
	c.start = true
	c.c.Start()
	return nil
}

// Stop ends the schedules, cancels the runs under way and waits for them until ctx ends.
func (c *Cron) Stop(ctx context.Context) {
	if !c.start {
		return
	}
	c.once.Do(func() {
		c.cancel()
		select {
		case <-c.c.Stop().Done():
		case <-ctx.Done():
		}
	})
}
