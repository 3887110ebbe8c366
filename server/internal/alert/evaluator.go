package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/alert/notify"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// SenderFunc builds the sender of a stored channel (opening its sealed settings).
type SenderFunc func(ch storage.AlertChannel) (notify.Sender, error)

// Params configure an Evaluator.
type Params struct {
	Store *storage.Store
	// Leader says whether this node evaluates (the elector); nil evaluates on this node.
	Leader scheduler.Leader
	// Spec is the evaluation's cron spec (with seconds); empty runs no schedule (tests call
	// Evaluate).
	Spec string
	// Sender builds a channel's sender.
	Sender SenderFunc
	// PublicURL is the console's address for the links in messages (server.public_url); empty
	// sends no links.
	PublicURL string
	// Buckets is the cluster's bucket count (scheduler.buckets).
	Buckets int
	// History is how long sent messages are kept (alert.history_retention); zero keeps them.
	History time.Duration
	// SendTimeout bounds one send; zero means 30 s.
	SendTimeout time.Duration
	// Now reads the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Delivery: a message is tried up to maxAttempts times, the n-th retry after
// retryBase·2^(n-1), at most retryCap; a try whose outcome was never written (the node died
// mid-send) is tried again after claimLease.
const (
	maxAttempts = 12
	retryBase   = 30 * time.Second
	retryCap    = 30 * time.Minute
	claimLease  = 2 * time.Minute
	// deliverBatch bounds the messages one pass sends.
	deliverBatch = 200
	// maxItems bounds the subjects one message names.
	maxItems = 50
)

// Evaluator evaluates the alert rules on the leader on its schedule, and sends and retries
// their messages. Evaluate does one pass and is safe to run on several nodes at once: the
// rules' state is written conditionally, so of two passes deciding on the same state only one
// records (and sends) its messages.
type Evaluator struct {
	p    Params
	cron *scheduler.Cron
}

var _ service.Service = (*Evaluator)(nil)

// NewEvaluator returns an evaluator; Start runs it on its schedule. It fails on a spec it cannot parse.
func NewEvaluator(p Params) (*Evaluator, error) {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	if p.SendTimeout <= 0 {
		p.SendTimeout = 30 * time.Second
	}
	e := &Evaluator{p: p}
	if p.Spec != "" {
		c, err := scheduler.NewCron(p.Log, scheduler.Job{Name: "alert evaluation", Spec: p.Spec, Run: e.run})
		if err != nil {
			return nil, err
		}
		e.cron = c
	}
	return e, nil
}

// Start runs the evaluation on its schedule until Stop.
func (e *Evaluator) Start(ctx context.Context) error {
	if e.cron == nil {
		return nil
	}
	return e.cron.Start(ctx)
}

// Stop ends the schedule and waits, within ctx, for a pass under way (cancelled).
func (e *Evaluator) Stop(ctx context.Context) {
	if e.cron != nil {
		e.cron.Stop(ctx)
	}
}

// run is one scheduled pass, on the leader only.
func (e *Evaluator) run(ctx context.Context) {
	if e.p.Leader != nil && !e.p.Leader.IsLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := e.Evaluate(ctx, e.p.Now()); err != nil && !errors.Is(err, context.Canceled) {
		e.p.Log.Error("alert evaluation", "err", err)
	}
}

// Evaluate runs one pass as of now: every enabled rule is evaluated and its messages recorded,
// then the messages due are sent (new ones, and failed ones whose retry time has come), then
// history past its retention is deleted. A rule that cannot be evaluated is logged and skipped.
func (e *Evaluator) Evaluate(ctx context.Context, now time.Time) error {
	rules, err := e.p.Store.ListAlertRules(ctx, nil, true)
	if err != nil {
		return err
	}
	states, err := e.p.Store.AlertStates(ctx)
	if err != nil {
		return err
	}
	silences, err := e.p.Store.ListAlertSilences(ctx, nil, now)
	if err != nil {
		return err
	}
	channels, err := e.p.Store.ListAlertChannels(ctx, nil)
	if err != nil {
		return err
	}
	ps := &pass{e: e, now: now, silences: silences, channels: map[int64]storage.AlertChannel{},
		namespaces: map[int64]string{}, scenes: map[int64][]storage.AlertScene{}, overdue: map[time.Duration][]storage.OverdueTask{}}
	for _, ch := range channels {
		ps.channels[ch.ID] = ch
	}
	var errs []error
	for _, r := range rules {
		if err := ps.rule(ctx, r, states[r.ID]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.p.Log.Warn("alert rule not evaluated", "rule", r.ID, "name", r.Name, "err", err)
			errs = append(errs, fmt.Errorf("rule %d: %w", r.ID, err))
		}
	}
	if err := e.deliver(ctx, now); err != nil {
		errs = append(errs, err)
	}
	if e.p.History > 0 {
		if n, err := e.p.Store.DeleteAlertMessagesBefore(ctx, now.Add(-e.p.History), 1000); err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			e.p.Log.Info("retention deleted alert history", "count", n)
		}
	}
	return errors.Join(errs...)
}

// subject is one thing a rule fires for: a scene, a group, a node, the buckets.
type subject struct {
	Key     string      `json:"key"`
	SceneID int64       `json:"scene_id,omitempty"`
	Item    notify.Item `json:"item"`
}

// pass is one evaluation: what it read once for every rule.
type pass struct {
	e          *Evaluator
	now        time.Time
	silences   []storage.AlertSilence
	channels   map[int64]storage.AlertChannel
	namespaces map[int64]string
	scenes     map[int64][]storage.AlertScene
	overdue    map[time.Duration][]storage.OverdueTask
	nodes      []storage.NodeInfo
	nodesRead  bool
	leases     []storage.Lease
	leasesRead bool
}

func (ps *pass) namespace(ctx context.Context, id int64) (string, error) {
	if n, ok := ps.namespaces[id]; ok {
		return n, nil
	}
	ns, err := ps.e.p.Store.Namespace(ctx, id)
	if err != nil {
		return "", err
	}
	ps.namespaces[id] = ns.Name
	return ns.Name, nil
}

// silenced reports whether a silence in force mutes the rule's subject.
func (ps *pass) silenced(r storage.AlertRule, s subject) bool {
	for _, si := range ps.silences {
		if si.NamespaceID != r.NamespaceID || si.StartsAt.After(ps.now) || !si.EndsAt.After(ps.now) {
			continue
		}
		if si.RuleID != 0 && si.RuleID != r.ID {
			continue
		}
		if si.SceneID != 0 && si.SceneID != s.SceneID {
			continue
		}
		return true
	}
	return false
}

// rule evaluates one rule and records what it decided.
func (ps *pass) rule(ctx context.Context, r storage.AlertRule, st storage.AlertState) error {
	var pending map[string]time.Time
	if len(st.Pending) > 0 {
		if err := json.Unmarshal(st.Pending, &pending); err != nil {
			pending = nil // an unreadable state starts afresh
		}
	}
	if pending == nil {
		pending = map[string]time.Time{}
	}
	var prev []subject
	if len(st.Subjects) > 0 {
		_ = json.Unmarshal(st.Subjects, &prev)
	}
	nsName, err := ps.namespace(ctx, r.NamespaceID)
	if err != nil {
		return err
	}
	all, err := ps.measure(ctx, r, nsName, pending)
	if err != nil {
		return err
	}
	var visible []subject
	for _, s := range all {
		if !ps.silenced(r, s) {
			visible = append(visible, s)
		}
	}
	d := decide(st, prev, all, visible, r.Repeat, ps.now)
	next := storage.AlertState{RuleID: r.ID, Firing: d.firing, Since: d.since, LastSentAt: d.lastSent,
		EvaluatedAt: &ps.now, Version: st.Version}
	if next.Subjects, err = json.Marshal(d.subjects); err != nil {
		return err
	}
	if next.Pending, err = json.Marshal(pending); err != nil {
		return err
	}
	var msgs []storage.AlertMessage
	if d.kind != "" {
		if d.kind != notify.Resolved {
			ps.enrich(ctx, r, nsName, d.items)
		}
		msgs, err = ps.messages(r, nsName, d.kind, d.items)
		if err != nil {
			return err
		}
	}
	committed, err := ps.e.p.Store.CommitAlert(ctx, next, msgs)
	if err != nil {
		return err
	}
	if !committed {
		ps.e.p.Log.Info("alert rule evaluated by another node at the same time; its decision stands", "rule", r.ID)
		return nil
	}
	if d.kind != "" {
		ps.e.p.Log.Info("alert", "rule", r.ID, "name", r.Name, "message", d.kind, "subjects", len(d.items), "channels", len(msgs))
	}
	return nil
}

// decision is what an evaluation does with a rule.
type decision struct {
	kind     string    // the message to send; "" for none
	items    []subject // the message's subjects
	firing   bool
	since    *time.Time
	lastSent *time.Time
	subjects []subject // the state's subjects afterwards
}

// decide applies the rule's transitions: a rule that starts firing sends a firing message
// naming every subject; while it fires, subjects that join are sent in a firing message of
// their own (once per incident), and otherwise a reminder names those firing once the repeat
// interval has passed since the last message; a rule whose subjects all cleared sends one
// resolved message naming what fired. A rule whose every subject is silenced sends nothing and keeps its state.
func decide(st storage.AlertState, prev, all, visible []subject, repeat time.Duration, now time.Time) decision {
	d := decision{firing: st.Firing, since: st.Since, lastSent: st.LastSentAt, subjects: prev}
	switch {
	case len(visible) > 0 && !st.Firing:
		d.kind, d.items, d.firing, d.since, d.lastSent = notify.Firing, visible, true, &now, &now
		d.subjects = visible
	case len(visible) > 0:
		known := map[string]bool{}
		for _, s := range prev {
			known[s.Key] = true
		}
		var joined []subject
		for _, s := range visible {
			if !known[s.Key] {
				joined = append(joined, s)
			}
		}
		switch {
		case len(joined) > 0:
			d.kind, d.items, d.lastSent = notify.Firing, joined, &now
		case repeat > 0 && (st.LastSentAt == nil || !now.Before(st.LastSentAt.Add(repeat))):
			d.kind, d.items, d.lastSent = notify.Reminder, visible, &now
		}
		// A subject that clears while others fire stays known until the whole rule resolves,
		// so one that flaps around its threshold is not announced again at every return; the
		// resolved message names every subject of the incident.
		d.subjects = slices.Clone(visible)
		for _, s := range prev {
			if !slices.ContainsFunc(visible, func(v subject) bool { return v.Key == s.Key }) {
				d.subjects = append(d.subjects, s)
			}
		}
	case len(all) > 0:
		// Everything firing is silenced: nothing is said, and nothing is forgotten.
	case st.Firing:
		d.kind, d.items = notify.Resolved, prev
		d.firing, d.since, d.subjects = false, nil, nil
	}
	return d
}

// messages builds the rule's message, one history row per channel (one "recorded" row when
// the rule has no usable channel).
func (ps *pass) messages(r storage.AlertRule, nsName, kind string, items []subject) ([]storage.AlertMessage, error) {
	m := notify.Message{Kind: kind, Severity: r.Severity, RuleID: r.ID, Rule: r.Name, RuleKind: r.Kind, Namespace: nsName,
		At: ps.now, Window: r.Window, ConsoleURL: ps.consoleURL(r, nsName)}
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b subject) int { return strings.Compare(a.Key, b.Key) })
	for i, s := range sorted {
		if i == maxItems {
			m.Items = append(m.Items, notify.Item{Subject: fmt.Sprintf("and %d more", len(sorted)-maxItems),
				Summary: fmt.Sprintf("%d more subjects are firing; see the console", len(sorted)-maxItems)})
			break
		}
		m.Items = append(m.Items, s.Item)
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	row := storage.AlertMessage{NamespaceID: r.NamespaceID, RuleID: r.ID, RuleName: r.Name, Kind: kind,
		Subject: notify.Subject(m), Payload: payload, Status: storage.AlertPending, NextRetryAt: &ps.now, CreatedAt: ps.now}
	var out []storage.AlertMessage
	for _, id := range r.ChannelIDs {
		ch, ok := ps.channels[id]
		if !ok || !ch.Enabled || ch.NamespaceID != r.NamespaceID {
			continue
		}
		m := row
		m.ChannelID = id
		out = append(out, m)
	}
	if len(out) == 0 {
		row.Status, row.NextRetryAt, row.Error = storage.AlertRecorded, nil, "the rule has no enabled channel"
		out = append(out, row)
	}
	return out, nil
}

// deliver sends the messages due: new ones and failed ones whose retry time has come, oldest
// first. A channel that fails is not tried again in the same pass: its other messages wait for
// the next, in order.
func (e *Evaluator) deliver(ctx context.Context, now time.Time) error {
	due, err := e.p.Store.DueAlertMessages(ctx, now, deliverBatch)
	if err != nil {
		return err
	}
	down := map[int64]bool{}
	for _, m := range due {
		if down[m.ChannelID] {
			continue
		}
		ok, err := e.p.Store.ClaimAlertMessage(ctx, m.ID, m.Attempts, now.Add(claimLease))
		if err != nil {
			return err
		}
		if !ok {
			continue // another node took it
		}
		m.Attempts++
		sendErr, final := e.send(ctx, m)
		if ctx.Err() != nil {
			return ctx.Err() // the claim lapses and a later pass tries again
		}
		if sendErr == nil {
			sent := e.p.Now()
			if err := e.p.Store.FinishAlertMessage(ctx, m.ID, storage.AlertSent, "", &sent, nil); err != nil {
				return err
			}
			continue
		}
		down[m.ChannelID] = true
		var next *time.Time
		if !final && m.Attempts < maxAttempts {
			at := now.Add(Backoff(m.Attempts))
			next = &at
		}
		e.p.Log.Warn("alert message not sent", "message", m.ID, "channel", m.ChannelID, "attempt", m.Attempts,
			"retry_at", next, "err", sendErr)
		if err := e.p.Store.FinishAlertMessage(ctx, m.ID, storage.AlertFailed, sendErr.Error(), nil, next); err != nil {
			return err
		}
	}
	return nil
}

// Backoff is the wait before the retry that follows the attempts-th failed try.
func Backoff(attempts int) time.Duration {
	d := retryBase
	for i := 1; i < attempts && d < retryCap; i++ {
		d *= 2
	}
	return min(d, retryCap)
}

// send makes one try of a message; final reports a failure no retry can mend (the channel is
// gone or disabled).
func (e *Evaluator) send(ctx context.Context, m storage.AlertMessage) (err error, final bool) {
	ch, err := e.p.Store.AlertChannel(ctx, m.ChannelID)
	if errors.Is(err, storage.ErrNotFound) {
		return errors.New("the channel was deleted"), true
	}
	if err != nil {
		return err, false
	}
	if !ch.Enabled {
		return errors.New("the channel is disabled"), true
	}
	var msg notify.Message
	if err := json.Unmarshal(m.Payload, &msg); err != nil {
		return fmt.Errorf("unreadable message: %w", err), true
	}
	return e.sendTo(ctx, ch, msg), false
}

// sendTo sends msg through the channel within the send timeout.
func (e *Evaluator) sendTo(ctx context.Context, ch storage.AlertChannel, msg notify.Message) error {
	if e.p.Sender == nil {
		return errors.New("no channel is configured on this server")
	}
	s, err := e.p.Sender(ch)
	if err != nil {
		return fmt.Errorf("channel %s: %w", ch.Name, err)
	}
	sctx, cancel := context.WithTimeout(ctx, e.p.SendTimeout)
	defer cancel()
	return s.Send(sctx, msg)
}

// SendTest sends a test message through the channel now and records it in the history (sent,
// or failed with the reason; a test is not tried again). It returns the history row.
func (e *Evaluator) SendTest(ctx context.Context, ch storage.AlertChannel, namespace, by string) (storage.AlertMessage, error) {
	now := e.p.Now()
	msg := notify.Message{Kind: notify.Test, Severity: Info, Rule: "test message of channel " + ch.Name + ", sent by " + by,
		Namespace: namespace, At: now, ConsoleURL: e.link("/alerts", map[string]string{"namespace": namespace})}
	payload, err := json.Marshal(msg)
	if err != nil {
		return storage.AlertMessage{}, err
	}
	row := storage.AlertMessage{NamespaceID: ch.NamespaceID, RuleName: "test", Kind: notify.Test, ChannelID: ch.ID,
		Subject: notify.Subject(msg), Payload: payload, Attempts: 1, CreatedAt: now}
	if serr := e.sendTo(ctx, ch, msg); serr != nil {
		row.Status, row.Error = storage.AlertFailed, serr.Error()
	} else {
		sent := e.p.Now()
		row.Status, row.SentAt = storage.AlertSent, &sent
	}
	// The outcome is recorded even when the caller has gone: the message may have been sent.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	id, err := e.p.Store.AddAlertMessage(wctx, row)
	if err != nil {
		return row, err
	}
	row.ID = id
	return row, nil
}
