package scheduler

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// LeaderName is the leadership the singleton work (retention, bringing held tasks back, and the
// alert evaluation and summary compaction to come) runs under.
const LeaderName = "singleton"

// ElectorParams configure an Elector.
type ElectorParams struct {
	Store  *storage.Store
	NodeID string
	// Name is the leadership's name; empty means LeaderName.
	Name string
	// Interval is how often the leadership is renewed or sought.
	Interval time.Duration
	// LeaseDuration is how long the leadership lasts unrenewed.
	LeaseDuration time.Duration
	// Now reads the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Elector makes one node of the cluster the leader, through a lease row with the rules of the
// bucket leases: every interval the leader renews it, and the others try to take it, which
// succeeds only when it is free or expired. A leader that stops releases it, so another takes
// over on its next pass; one that crashes loses it when the lease expires. Singleton work
// checks IsLeader before each run; it is idempotent, so a change of leader mid-run repeats work
// and never loses it.
type Elector struct {
	p    ElectorParams
	loop loop
	// until is when this node's leadership expires, Unix nanoseconds; zero when not the leader.
	until atomic.Int64
}

var _ service.Killer = (*Elector)(nil)

// NewElector returns an elector; Start runs it.
func NewElector(p ElectorParams) *Elector {
	if p.Name == "" {
		p.Name = LeaderName
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	e := &Elector{p: p}
	e.loop = loop{interval: p.Interval, exec: e.exec, log: p.Log, finish: passTimeout}
	return e
}

// IsLeader reports whether this node holds the leadership now: it took or renewed it, and the
// lease has not expired since.
func (e *Elector) IsLeader() bool {
	until := e.until.Load()
	return until != 0 && e.p.Now().UnixNano() < until
}

// Exec runs one pass: take or renew the leadership where possible.
func (e *Elector) Exec(ctx context.Context) error {
	now := e.p.Now()
	expires := now.Add(e.p.LeaseDuration)
	was := e.IsLeader()
	held, err := e.p.Store.AcquireLeader(ctx, e.p.Name, e.p.NodeID, now, expires)
	if err != nil {
		return err
	}
	if held {
		e.until.Store(expires.UnixNano())
	} else {
		e.until.Store(0)
	}
	switch {
	case held && !was:
		e.p.Log.Info("this node leads the singleton work", "leadership", e.p.Name)
	case !held && was:
		e.p.Log.Info("this node no longer leads the singleton work", "leadership", e.p.Name)
	}
	return nil
}

func (e *Elector) exec(ctx context.Context) {
	if err := e.Exec(ctx); err != nil { // stop never cancels a pass: an error is real
		// A leadership not renewed ends by itself at its expiry (IsLeader checks it).
		e.p.Log.Warn("renew leadership", "leadership", e.p.Name, "err", err)
	}
}

// Start seeks the leadership every interval until Stop, the first time at once.
func (e *Elector) Start(context.Context) error { return e.loop.start() }

// Stop ends the elector (letting a pass under way land first) and releases the leadership when
// this node holds it, so another node takes it on its next pass.
func (e *Elector) Stop(ctx context.Context) {
	running, ended := e.loop.stop(ctx)
	if !running {
		return
	}
	e.until.Store(0)
	if !ended {
		e.p.Log.Warn("shutdown: a leadership pass still under way at the deadline; the leadership is left to expire", "leadership", e.p.Name)
		return
	}
	if err := e.p.Store.ReleaseLeader(ctx, e.p.Name, e.p.NodeID); err != nil {
		e.p.Log.Warn("release leadership", "leadership", e.p.Name, "err", err)
	}
}

// Kill ends the elector and leaves the leadership to expire, as a crash would.
func (e *Elector) Kill() {
	e.loop.stop(context.Background())
	e.until.Store(0)
}
