package alert

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/alert/notify"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Reads that bound what a message carries.
const (
	// overduePerBucket is how many of a bucket's longest overdue tasks oldest_waiting reads.
	overduePerBucket = 20
	// errorScan is how many of a scene's newest tasks per state are read for their errors.
	errorScan = 20
	// maxErrors and maxSampleIDs bound the distinct errors of an item and their task ids.
	maxErrors    = 5
	maxSampleIDs = 5
)

// scope returns the scenes the rule watches: the namespace's, narrowed to its groups and scenes
// (a scene is watched when its group or itself is named; neither named watches all).
func (ps *pass) scope(ctx context.Context, r storage.AlertRule) ([]storage.AlertScene, error) {
	all, ok := ps.scenes[r.NamespaceID]
	if !ok {
		var err error
		if all, err = ps.e.p.Store.AlertScenes(ctx, r.NamespaceID); err != nil {
			return nil, err
		}
		ps.scenes[r.NamespaceID] = all
	}
	if len(r.GroupIDs) == 0 && len(r.SceneIDs) == 0 {
		return all, nil
	}
	var out []storage.AlertScene
	for _, sc := range all {
		if slices.Contains(r.GroupIDs, sc.GroupID) || slices.Contains(r.SceneIDs, sc.ID) {
			out = append(out, sc)
		}
	}
	return out, nil
}

func sceneIDs(scs []storage.AlertScene) []int64 {
	ids := make([]int64, len(scs))
	for i, sc := range scs {
		ids[i] = sc.ID
	}
	return ids
}

// measure returns the rule's subjects in breach now. pending holds the subjects of a "for"
// condition with when each was first seen; measure keeps it up to date.
func (ps *pass) measure(ctx context.Context, r storage.AlertRule, nsName string, pending map[string]time.Time) ([]subject, error) {
	now := ps.now
	switch r.Kind {
	case TasksExhausted, FailedAttempts, FailureRatio, CallbacksExhausted:
		scs, err := ps.scope(ctx, r)
		if err != nil || len(scs) == 0 {
			return nil, err
		}
		totals, err := ps.e.p.Store.SummaryTotals(ctx, sceneIDs(scs), now.Add(-r.Window), now.Truncate(time.Minute).Add(time.Minute))
		if err != nil {
			return nil, err
		}
		var out []subject
		for _, sc := range scs {
			c := totals[sc.ID]
			var value float64
			var summary, state string
			win := shortDuration(r.Window)
			switch r.Kind {
			case TasksExhausted:
				value, state = float64(c.Exhausted), retry.Exhausted.String()
				summary = fmt.Sprintf("%d tasks exhausted in %s (threshold %s)", c.Exhausted, win, num(r.Threshold))
			case FailedAttempts:
				value = float64(c.Failed)
				summary = fmt.Sprintf("%d failed attempts in %s (threshold %s)", c.Failed, win, num(r.Threshold))
			case CallbacksExhausted:
				value = float64(c.CallbacksExhausted)
				summary = fmt.Sprintf("%d callbacks exhausted in %s (threshold %s)", c.CallbacksExhausted, win, num(r.Threshold))
			case FailureRatio:
				total := c.Succeeded + c.Failed
				if total < r.MinVolume || total == 0 {
					continue
				}
				value = float64(c.Failed) * 100 / float64(total)
				summary = fmt.Sprintf("%s%% of %d attempts failed in %s (threshold %s%%)", num(value), total, win, num(r.Threshold))
			}
			if value < r.Threshold || value == 0 {
				continue
			}
			out = append(out, ps.sceneSubject(nsName, sc, value, r.Threshold, kinds[r.Kind].unit, summary, state))
		}
		return out, nil
	case Backlog:
		return ps.backlog(ctx, r, nsName)
	case OldestWaiting:
		scs, err := ps.scope(ctx, r)
		if err != nil || len(scs) == 0 {
			return nil, err
		}
		overdue, ok := ps.overdue[r.For]
		if !ok {
			if overdue, err = ps.e.p.Store.OverdueTasks(ctx, ps.e.p.Buckets, now.Add(-r.For), overduePerBucket); err != nil {
				return nil, err
			}
			ps.overdue[r.For] = overdue
		}
		oldest := map[int64]time.Time{}
		for _, t := range overdue {
			if o, ok := oldest[t.SceneID]; !ok || t.NextAt.Before(o) {
				oldest[t.SceneID] = t.NextAt
			}
		}
		var out []subject
		for _, sc := range scs {
			at, ok := oldest[sc.ID]
			if !ok {
				continue
			}
			age := now.Sub(at)
			out = append(out, ps.sceneSubject(nsName, sc, age.Seconds(), r.For.Seconds(), "s",
				fmt.Sprintf("a waiting task has been due for %s (bound %s)", shortDuration(age), shortDuration(r.For)), retry.Waiting.String()))
		}
		return out, nil
	case NoLiveInstance:
		return ps.noLiveInstance(ctx, r, nsName, pending)
	case NodeLost:
		if !ps.nodesRead {
			nodes, err := ps.e.p.Store.Nodes(ctx, now)
			if err != nil {
				return nil, err
			}
			ps.nodes, ps.nodesRead = nodes, true
		}
		var out []subject
		for _, n := range ps.nodes {
			silent := now.Sub(n.HeartbeatAt)
			if silent < r.For {
				continue
			}
			out = append(out, subject{Key: "node:" + n.ID, Item: notify.Item{Subject: "node " + n.ID, Value: silent.Seconds(),
				Threshold: r.For.Seconds(), Unit: "s", Link: ps.e.link("/nodes", nil),
				Summary: fmt.Sprintf("server node %s (%s) has sent no heartbeat for %s", n.ID, n.Address, shortDuration(silent))}})
		}
		return out, nil
	case BucketsUnowned:
		return ps.bucketsUnowned(ctx, r, pending)
	}
	return nil, fmt.Errorf("unknown rule kind %q", r.Kind)
}

// backlog: a scene whose waiting tasks (held ones included: they wait for their scene, group
// or an instance) number at least Threshold, from the per-scene state totals.
func (ps *pass) backlog(ctx context.Context, r storage.AlertRule, nsName string) ([]subject, error) {
	scs, err := ps.scope(ctx, r)
	if err != nil || len(scs) == 0 {
		return nil, err
	}
	totals, err := ps.e.p.Store.SceneStateTotals(ctx, sceneIDs(scs))
	if err != nil {
		return nil, err
	}
	var out []subject
	for _, sc := range scs {
		waiting, held := totals[sc.ID][retry.Waiting], totals[sc.ID][retry.Held]
		n := waiting + held
		if n == 0 || float64(n) < r.Threshold {
			continue
		}
		summary := fmt.Sprintf("%d tasks waiting (threshold %s)", n, num(r.Threshold))
		if held > 0 {
			summary = fmt.Sprintf("%d tasks waiting, %d of them held (threshold %s)", n, held, num(r.Threshold))
		}
		out = append(out, ps.sceneSubject(nsName, sc, float64(n), r.Threshold, "tasks", summary, retry.Waiting.String()))
	}
	return out, nil
}

// noLiveInstance: a group of the rule's scope that has waiting or held tasks and whose newest
// instance heartbeat is older than For; a group without any instance row fires once it has
// been seen so for For.
func (ps *pass) noLiveInstance(ctx context.Context, r storage.AlertRule, nsName string, pending map[string]time.Time) ([]subject, error) {
	scs, err := ps.scope(ctx, r)
	if err != nil {
		return nil, err
	}
	work, err := ps.e.p.Store.ScenesWithWork(ctx, sceneIDs(scs), []retry.State{retry.Waiting, retry.Held})
	if err != nil {
		return nil, err
	}
	groups := map[int64]string{}
	var ids []int64
	for _, sc := range scs {
		if work[sc.ID] {
			if _, ok := groups[sc.GroupID]; !ok {
				ids = append(ids, sc.GroupID)
			}
			groups[sc.GroupID] = sc.Group
		}
	}
	beats, err := ps.e.p.Store.GroupHeartbeats(ctx, ids)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []subject
	for _, id := range ids {
		key := "group:" + strconv.FormatInt(id, 10)
		since, ok := beats[id]
		if ok && ps.now.Sub(since) < r.For {
			continue
		}
		if !ok {
			seen[key] = true
			first, had := pending[key]
			if !had {
				first = ps.now
				pending[key] = first
			}
			since = first
			if ps.now.Sub(first) < r.For {
				continue
			}
		}
		silent := ps.now.Sub(since)
		out = append(out, subject{Key: key, Item: notify.Item{Group: groups[id], Value: silent.Seconds(), Threshold: r.For.Seconds(),
			Unit: "s", Summary: fmt.Sprintf("group %s has waiting tasks and no live instance for %s", groups[id], shortDuration(silent)),
			Link: ps.e.link("/tasks", map[string]string{"namespace": nsName, "group_id": strconv.FormatInt(id, 10), "state": "waiting,held"})}})
	}
	for key := range pending {
		if strings.HasPrefix(key, "group:") && !seen[key] {
			delete(pending, key)
		}
	}
	return out, nil
}

// bucketsUnowned: buckets whose lease lapsed For ago, or that were released and have been
// seen free for For; the rule fires, as one subject, when at least Threshold of them are.
func (ps *pass) bucketsUnowned(ctx context.Context, r storage.AlertRule, pending map[string]time.Time) ([]subject, error) {
	if !ps.leasesRead {
		leases, err := ps.e.p.Store.Leases(ctx)
		if err != nil {
			return nil, err
		}
		ps.leases, ps.leasesRead = leases, true
	}
	seen := map[string]bool{}
	var unowned []int
	var longest time.Duration
	for _, l := range ps.leases {
		if l.NodeID != "" && l.ExpiresAt.After(ps.now) {
			continue
		}
		since := l.ExpiresAt
		if l.NodeID == "" { // released: free since the evaluation first saw it so
			key := "bucket:" + strconv.Itoa(l.Bucket)
			seen[key] = true
			first, ok := pending[key]
			if !ok {
				first = ps.now
				pending[key] = first
			}
			since = first
		}
		if d := ps.now.Sub(since); d >= r.For {
			unowned = append(unowned, l.Bucket)
			longest = max(longest, d)
		}
	}
	for key := range pending {
		if strings.HasPrefix(key, "bucket:") && !seen[key] {
			delete(pending, key)
		}
	}
	if len(unowned) == 0 || float64(len(unowned)) < r.Threshold {
		return nil, nil
	}
	list := make([]string, 0, min(len(unowned), 20))
	for i, b := range unowned {
		if i == 20 {
			list = append(list, "…")
			break
		}
		list = append(list, strconv.Itoa(b))
	}
	return []subject{{Key: "buckets", Item: notify.Item{Subject: "buckets", Value: float64(len(unowned)), Threshold: r.Threshold,
		Unit: "buckets", Link: ps.e.link("/nodes", nil),
		Summary: fmt.Sprintf("%d of %d buckets have had no live lease for up to %s (buckets %s): their tasks are not claimed",
			len(unowned), len(ps.leases), shortDuration(longest), strings.Join(list, ", "))}}}, nil
}

func (ps *pass) sceneSubject(nsName string, sc storage.AlertScene, value, threshold float64, unit, summary, state string) subject {
	q := map[string]string{"namespace": nsName, "group_id": strconv.FormatInt(sc.GroupID, 10), "scene_id": strconv.FormatInt(sc.ID, 10)}
	if state != "" {
		q["state"] = state
	}
	return subject{Key: "scene:" + strconv.FormatInt(sc.ID, 10), SceneID: sc.ID, Item: notify.Item{Group: sc.Group, Scene: sc.Scene,
		Value: value, Threshold: threshold, Unit: unit, Summary: summary, Link: ps.e.link("/tasks", q)}}
}

// enrich adds to the items of scenes the newest distinct errors of their tasks, with sample
// task ids: a bounded read of the scene's newest tasks in the states the rule is about.
func (ps *pass) enrich(ctx context.Context, r storage.AlertRule, nsName string, items []subject) {
	var states []retry.State
	callback := false
	switch r.Kind {
	case TasksExhausted:
		states = []retry.State{retry.Exhausted}
	case FailedAttempts, FailureRatio, OldestWaiting, Backlog:
		states = []retry.State{retry.Waiting, retry.Exhausted}
	case CallbacksExhausted:
		states, callback = []retry.State{retry.Succeeded, retry.Exhausted}, true
	default:
		return
	}
	for i := range items {
		if items[i].SceneID == 0 || i >= maxItems {
			continue
		}
		errs, err := ps.e.p.Store.RecentTaskErrors(ctx, items[i].SceneID, states, callback, errorScan)
		if err != nil {
			ps.e.p.Log.Warn("alert: read the errors of a scene", "scene", items[i].SceneID, "err", err)
			continue
		}
		items[i].Item.Errors = distinctErrors(errs)
	}
}

// distinctErrors groups errors (newest first) by their text: the first maxErrors texts, each
// with up to maxSampleIDs task ids.
func distinctErrors(errs []storage.TaskError) []notify.ErrorSample {
	var out []notify.ErrorSample
	index := map[string]int{}
	for _, e := range errs {
		text := e.Error
		if len(text) > 500 {
			text = text[:500] + "…"
		}
		i, ok := index[text]
		if !ok {
			if len(out) == maxErrors {
				continue
			}
			i = len(out)
			index[text] = i
			out = append(out, notify.ErrorSample{Error: text})
		}
		if len(out[i].TaskIDs) < maxSampleIDs {
			out[i].TaskIDs = append(out[i].TaskIDs, e.TaskID)
		}
	}
	return out
}

// link is the console's page path with the query, under server.public_url; "" without it.
func (e *Evaluator) link(path string, query map[string]string) string {
	if e.p.PublicURL == "" {
		return ""
	}
	u := strings.TrimRight(e.p.PublicURL, "/") + path
	if len(query) > 0 {
		v := url.Values{}
		for k, val := range query {
			v.Set(k, val)
		}
		u += "?" + v.Encode()
	}
	return u
}

// consoleURL links to the console's view of the rule's whole incident.
func (ps *pass) consoleURL(r storage.AlertRule, nsName string) string {
	switch r.Kind {
	case NodeLost, BucketsUnowned:
		return ps.e.link("/nodes", nil)
	case TasksExhausted:
		return ps.e.link("/tasks", map[string]string{"namespace": nsName, "state": retry.Exhausted.String()})
	}
	return ps.e.link("/tasks", map[string]string{"namespace": nsName})
}

// num writes a figure without needless decimals.
func num(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

// shortDuration writes a duration as people say it: 5m, 1h30m, 45s.
func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
