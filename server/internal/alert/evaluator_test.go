package alert_test

import (
	"context"
	"mime"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/alert"
	"github.com/retryhub/retryhub/server/internal/alert/notify"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// Two scenes exhausting tasks in one evaluation make ONE message with an item each: figures,
// the newest distinct errors with sample task ids, and console links; the mail has both parts,
// the recipients and the link. A second evaluation says nothing new; a reminder comes at the
// repeat interval; a resolved message when the window has no more dead letters.
func TestTasksExhaustedFiresRemindsAndResolves(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newWorld(t, target)
		mailSrv := newSMTP(t, "")
		mailCh := w.emailChannel(mailSrv.addr)
		r := w.rule(alert.TasksExhausted, func(r *storage.AlertRule) {
			r.Threshold, r.Window, r.Repeat = 2, 5*time.Minute, 10*time.Minute
			r.ChannelIDs = append(r.ChannelIDs, mailCh.ID)
		})
		ids := w.replay(w.notify, 3, "exhaust", "partner said 500")
		w.replay(w.refund, 2, "exhaust", "no such order")
		w.replay(w.refund, 1, "exhaust", "card declined")
		ev := w.evaluator(nil)
		t0 := time.Now()
		evaluate(t, ev, t0)

		got := w.hook.received()
		if len(got) != 1 || got[0].Kind != notify.Firing || got[0].RuleID != r.ID || len(got[0].Items) != 2 {
			t.Fatalf("webhook messages: %+v", got)
		}
		items := got[0].Items
		n, rf := items[0], items[1]
		if n.Scene != "notify" || n.Value != 3 || n.Threshold != 2 || rf.Scene != "refund" || rf.Value != 3 {
			t.Fatalf("items: %+v", items)
		}
		if len(n.Errors) != 1 || n.Errors[0].Error != "partner said 500" || len(n.Errors[0].TaskIDs) != 3 ||
			!slices.Contains(n.Errors[0].TaskIDs, ids[2]) {
			t.Fatalf("notify's errors: %+v (tasks %v)", n.Errors, ids)
		}
		if len(rf.Errors) != 2 || rf.Errors[0].Error != "card declined" || rf.Errors[1].Error != "no such order" {
			t.Fatalf("refund's errors, newest first: %+v", rf.Errors)
		}
		link, err := url.Parse(n.Link)
		if err != nil || !strings.HasPrefix(n.Link, publicURL+"/tasks?") || link.Query().Get("namespace") != w.ns.Name ||
			link.Query().Get("scene_id") != strconv.FormatInt(w.notify.ID, 10) ||
			link.Query().Get("group_id") != strconv.FormatInt(w.notify.GroupID, 10) || link.Query().Get("state") != "exhausted" {
			t.Fatalf("link %q", n.Link)
		}
		mails := mailSrv.mails()
		if len(mails) != 1 {
			t.Fatalf("%d mails", len(mails))
		}
		m := mails[0]
		if !slices.Equal(m.To, []string{"oncall@example.com", "payments@example.com"}) || m.From != "alerts@example.com" {
			t.Fatalf("envelope: %+v", m)
		}
		if subj := mailSubject(t, m.Data); !strings.HasPrefix(subj, "[CRITICAL] firing: "+r.Name) || !strings.Contains(subj, "scene notify (+1 more)") {
			t.Errorf("mail subject %q", subj)
		}
		for _, want := range []string{"text/plain", "text/html", "partner said 500"} {
			if !strings.Contains(m.Data, want) {
				t.Errorf("the mail has no %q:\n%s", want, m.Data)
			}
		}
		if !strings.Contains(strings.ReplaceAll(m.Data, "=\r\n", ""), "retryhub.example.com/tasks?") {
			t.Errorf("the mail has no console link:\n%s", m.Data)
		}
		hist := w.history()
		if len(hist) != 2 || hist[0].Status != storage.AlertSent || hist[1].Status != storage.AlertSent {
			t.Fatalf("history: %+v", hist)
		}

		evaluate(t, ev, t0.Add(time.Minute))
		if got := w.hook.received(); len(got) != 1 {
			t.Fatalf("a second evaluation sent again: %s", kinds(got))
		}
		evaluate(t, ev, t0.Add(4*time.Minute+30*time.Second)) // still in the window, before the repeat
		evaluate(t, ev, t0.Add(10*time.Minute))               // the counts left the window
		got = w.hook.received()
		if kinds(got) != "firing,resolved" || len(got[1].Items) != 2 {
			t.Fatalf("messages: %s %+v", kinds(got), got)
		}
		if len(mailSrv.mails()) != 2 || !strings.HasPrefix(mailSubject(t, mailSrv.mails()[1].Data), "[RESOLVED]") {
			t.Fatalf("mails: %d", len(mailSrv.mails()))
		}
	})
}

// Reminders come at the repeat interval while a rule fires; a scene joining a firing rule is
// sent at once in a message of its own.
func TestReminderAndJoiningSubject(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newWorld(t, target)
		w.rule(alert.FailedAttempts, func(r *storage.AlertRule) { r.Window, r.Repeat = time.Hour, 10*time.Minute })
		w.replay(w.notify, 2, "fail", "timeout")
		ev := w.evaluator(nil)
		t0 := time.Now()
		evaluate(t, ev, t0)
		evaluate(t, ev, t0.Add(5*time.Minute))
		w.replay(w.refund, 1, "fail", "timeout")
		evaluate(t, ev, t0.Add(6*time.Minute))
		evaluate(t, ev, t0.Add(12*time.Minute))
		evaluate(t, ev, t0.Add(16*time.Minute)) // within 10m of the last message
		got := w.hook.received()
		if kinds(got) != "firing,firing,reminder" {
			t.Fatalf("messages: %s", kinds(got))
		}
		if len(got[1].Items) != 1 || got[1].Items[0].Scene != "refund" || len(got[2].Items) != 2 || got[0].Items[0].Value != 2 {
			t.Fatalf("items: %+v", got)
		}
	})
}

// A silence of one scene leaves it out of the message; a silence of the whole rule sends
// nothing; once the silence ends the rule fires.
func TestSilences(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newWorld(t, target)
		r := w.rule(alert.TasksExhausted, nil)
		w.replay(w.notify, 1, "exhaust", "gone")
		w.replay(w.refund, 1, "exhaust", "gone")
		ctx := context.Background()
		t0 := time.Now()
		all, err := w.store.CreateAlertSilence(ctx, storage.AlertSilence{NamespaceID: w.ns.ID, RuleID: r.ID,
			StartsAt: t0.Add(-time.Minute), EndsAt: t0.Add(2 * time.Minute), Reason: "deploy", CreatedBy: "test"})
		if err != nil {
			t.Fatal(err)
		}
		ev := w.evaluator(nil)
		evaluate(t, ev, t0)
		if got := w.hook.received(); len(got) != 0 {
			t.Fatalf("a silenced rule sent %s", kinds(got))
		}
		if len(w.history()) != 0 {
			t.Fatalf("a silenced rule recorded %+v", w.history())
		}
		if err := w.store.DeleteAlertSilence(ctx, all.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := w.store.CreateAlertSilence(ctx, storage.AlertSilence{NamespaceID: w.ns.ID, SceneID: w.notify.ID,
			StartsAt: t0.Add(-time.Minute), EndsAt: t0.Add(2 * time.Minute), Reason: "known", CreatedBy: "test"}); err != nil {
			t.Fatal(err)
		}
		evaluate(t, ev, t0.Add(time.Minute))
		got := w.hook.received()
		if len(got) != 1 || len(got[0].Items) != 1 || got[0].Items[0].Scene != "refund" {
			t.Fatalf("with notify silenced: %+v", got)
		}
		evaluate(t, ev, t0.Add(3*time.Minute)) // the silence ended: notify joins
		got = w.hook.received()
		if len(got) != 2 || got[1].Kind != notify.Firing || len(got[1].Items) != 1 || got[1].Items[0].Scene != "notify" {
			t.Fatalf("after the silence: %+v", got)
		}
	})
}

// A channel that is down: the send is recorded failed with its reason and a retry time; the
// message arrives, once, when the channel is back, on a later evaluation. Email likewise, with
// the SMTP server started only after the failure.
func TestFailedSendIsRetried(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newWorld(t, target)
		addr := testkit.FreeAddr(t) // nothing listens there yet
		mailCh := w.emailChannel(addr)
		w.rule(alert.TasksExhausted, func(r *storage.AlertRule) { r.ChannelIDs = []int64{w.hookCh.ID, mailCh.ID} })
		w.replay(w.notify, 1, "exhaust", "gone")
		w.hook.setDown(true)
		ev := w.evaluator(nil)
		t0 := time.Now()
		evaluate(t, ev, t0)
		hist := w.history()
		if len(hist) != 2 {
			t.Fatalf("history: %+v", hist)
		}
		for _, m := range hist {
			if m.Status != storage.AlertFailed || m.Error == "" || m.Attempts != 1 || m.NextRetryAt == nil ||
				!m.NextRetryAt.Equal(t0.Add(alert.Backoff(1)).Truncate(time.Millisecond)) {
				t.Fatalf("a failed send: %+v", m)
			}
		}
		if !strings.Contains(hist[1].Error, "503") {
			t.Errorf("the webhook's reason: %q", hist[1].Error)
		}
		evaluate(t, ev, t0.Add(10*time.Second)) // before the retry time: no try
		if hist = w.history(); hist[0].Attempts != 1 || hist[1].Attempts != 1 {
			t.Fatalf("tried before its time: %+v", hist)
		}
		w.hook.setDown(false)
		mailSrv := newSMTP(t, addr)
		evaluate(t, ev, t0.Add(time.Minute))
		if got := w.hook.received(); len(got) != 1 || got[0].Kind != notify.Firing {
			t.Fatalf("after the channel came back: %s", kinds(got))
		}
		if len(mailSrv.mails()) != 1 {
			t.Fatalf("mails after the server came up: %d", len(mailSrv.mails()))
		}
		for _, m := range w.history() {
			if m.Status != storage.AlertSent || m.Attempts != 2 || m.SentAt == nil {
				t.Fatalf("after the retry: %+v", m)
			}
		}
		evaluate(t, ev, t0.Add(2*time.Minute))
		if got := w.hook.received(); len(got) != 1 {
			t.Fatalf("sent twice: %s", kinds(got))
		}
	})
}

// Two nodes evaluating at the same moment send one message, and a node taking over continues
// where the other left off: no second firing message, and the resolved one when it clears.
func TestTwoEvaluatorsSendOnceAndTakeoverContinues(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newWorld(t, target)
		w.rule(alert.TasksExhausted, nil)
		w.rule(alert.FailedAttempts, nil)
		w.replay(w.notify, 1, "exhaust", "gone")
		w.replay(w.refund, 1, "fail", "slow")
		other := storagetest.Open(t, target) // a second node's connections
		a, b := w.evaluator(nil), w.evaluator(other)
		t0 := time.Now()
		var wg sync.WaitGroup
		for _, ev := range []*alert.Evaluator{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := ev.Evaluate(context.Background(), t0); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if got := w.hook.received(); kinds(got) != "firing,firing" || got[0].RuleID == got[1].RuleID {
			t.Fatalf("two evaluators sent %s", kinds(got))
		}
		if n := len(w.history()); n != 2 {
			t.Fatalf("history: %d rows", n)
		}
		// b takes over: it knows the rules fire.
		evaluate(t, b, t0.Add(time.Minute))
		if got := w.hook.received(); len(got) != 2 {
			t.Fatalf("the new leader sent %s", kinds(got))
		}
		evaluate(t, b, t0.Add(10*time.Minute))
		if got := w.hook.received(); kinds(got) != "firing,firing,resolved,resolved" {
			t.Fatalf("after clearing: %s", kinds(got))
		}
	})
}

// Only the leader evaluates on the schedule: two nodes, each with an elector and an
// evaluator on a one-second schedule, send one message.
func TestOnlyTheLeaderEvaluates(t *testing.T) {
	w := newWorld(t, storagetest.SQLite(t))
	w.rule(alert.TasksExhausted, nil)
	w.replay(w.notify, 1, "exhaust", "gone")
	var evaluators []*alert.Evaluator
	for i, store := range []*storage.Store{w.store, storagetest.Open(t, w.target)} {
		el := scheduler.NewElector(scheduler.ElectorParams{Store: store, NodeID: []string{"n1", "n2"}[i], Interval: 100 * time.Millisecond,
			LeaseDuration: time.Minute, Log: testkit.Logger(t)})
		if err := el.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		ev, err := alert.NewEvaluator(alert.Params{Store: store, Leader: el, Spec: "* * * * * *", Sender: w.channels.Sender,
			Buckets: storagetest.Buckets, Log: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := ev.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ev.Stop(context.Background()) })
		evaluators = append(evaluators, ev)
	}
	testkit.WaitUntil(t, 10*time.Second, "the firing message", func() bool { return len(w.hook.received()) > 0 })
	// Several more passes, then still one message.
	first := evaluatedAt(t, w.store)
	testkit.WaitUntil(t, 10*time.Second, "two more evaluations", func() bool {
		return evaluatedAt(t, w.store).After(first.Add(1500 * time.Millisecond))
	})
	if got := w.hook.received(); len(got) != 1 {
		t.Fatalf("two nodes sent %s", kinds(got))
	}
}

// mailSubject is a mail's decoded Subject header.
func mailSubject(t *testing.T, data string) string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	return subj
}

func evaluatedAt(t *testing.T, s *storage.Store) time.Time {
	t.Helper()
	states, err := s.AlertStates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var at time.Time
	for _, st := range states {
		if st.EvaluatedAt != nil && st.EvaluatedAt.After(at) {
			at = *st.EvaluatedAt
		}
	}
	return at
}

// Each of the other kinds fires with the right items, from the summaries and cluster tables.
func TestRuleKinds(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		ctx := context.Background()
		t.Run("failure_ratio", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.FailureRatio, func(r *storage.AlertRule) { r.Threshold, r.MinVolume = 50, 4 })
			w.replay(w.notify, 3, "fail", "slow")
			w.replay(w.notify, 1, "ok", "")
			w.replay(w.refund, 1, "fail", "slow") // 100 % of too few attempts
			evaluate(t, w.evaluator(nil), time.Now())
			got := w.hook.received()
			if len(got) != 1 || len(got[0].Items) != 1 || got[0].Items[0].Scene != "notify" || got[0].Items[0].Value != 75 ||
				got[0].Items[0].Unit != "%" {
				t.Fatalf("%+v", got)
			}
		})
		t.Run("callbacks_exhausted", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.CallbacksExhausted, nil)
			w.replay(w.notify, 2, "ok", "")
			f := &testkit.Fixture{T: t, Store: w.store, Group: w.orders.Group, Scene: w.notify}
			w.settle(f.Claim(retry.KindCallback, "node-1", time.Now().Add(time.Hour), time.Now().Add(time.Hour)), w.notify, "exhaust", "callback refused")
			evaluate(t, w.evaluator(nil), time.Now())
			got := w.hook.received()
			if len(got) != 1 || got[0].Items[0].Value != 2 || len(got[0].Items[0].Errors) != 1 ||
				got[0].Items[0].Errors[0].Error != "callback refused" {
				t.Fatalf("%+v", got)
			}
		})
		t.Run("oldest_waiting", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.OldestWaiting, func(r *storage.AlertRule) { r.For = 5 * time.Minute })
			now := time.Now()
			w.orders.Add(now.Add(-20*time.Minute), "late-1", "late-2")
			f := &testkit.Fixture{T: t, Store: w.store, Group: w.orders.Group, Scene: w.refund}
			f.Add(now.Add(-time.Minute), "recent") // due, but not for long
			evaluate(t, w.evaluator(nil), now)
			got := w.hook.received()
			if len(got) != 1 || len(got[0].Items) != 1 || got[0].Items[0].Scene != "notify" || got[0].Items[0].Value < 1199 {
				t.Fatalf("%+v", got)
			}
		})
		t.Run("no_live_instance", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.NoLiveInstance, func(r *storage.AlertRule) { r.For = 2 * time.Minute })
			w.orders.Add(time.Now().Add(time.Hour), "waits")
			ev := w.evaluator(nil)
			t0 := time.Now()
			evaluate(t, ev, t0) // no instance row: seen now, fires after For
			evaluate(t, ev, t0.Add(time.Minute))
			if got := w.hook.received(); len(got) != 0 {
				t.Fatalf("fired before For: %+v", got)
			}
			evaluate(t, ev, t0.Add(2*time.Minute))
			got := w.hook.received()
			if len(got) != 1 || got[0].Items[0].Group != "orders" || got[0].Items[0].Value != 120 {
				t.Fatalf("%+v", got)
			}
			// An instance registers: resolved.
			if err := w.store.UpsertInstance(ctx, retry.Instance{ID: "i-1", GroupID: w.orders.Group.ID, ExecutorURL: "http://127.0.0.1:1/x",
				Capacity: 1, SDKVersion: "t", Host: "h"}, time.Now()); err != nil {
				t.Fatal(err)
			}
			evaluate(t, ev, time.Now())
			if got := w.hook.received(); kinds(got) != "firing,resolved" {
				t.Fatalf("%s", kinds(got))
			}
			// Its heartbeat stops: fires again For after it.
			evaluate(t, ev, time.Now().Add(3*time.Minute))
			if got := w.hook.received(); kinds(got) != "firing,resolved,firing" {
				t.Fatalf("%s", kinds(got))
			}
		})
		t.Run("node_lost", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.NodeLost, func(r *storage.AlertRule) { r.For = time.Minute })
			if err := w.store.HeartbeatNode(ctx, retry.Node{ID: "node-a", Address: "10.0.0.1:8080", Version: "t", StartedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			ev := w.evaluator(nil)
			evaluate(t, ev, time.Now())
			evaluate(t, ev, time.Now().Add(2*time.Minute))
			got := w.hook.received()
			if len(got) != 1 || got[0].Items[0].Subject != "node node-a" {
				t.Fatalf("%+v", got)
			}
			if err := w.store.DeleteNode(ctx, "node-a"); err != nil { // the node is forgotten
				t.Fatal(err)
			}
			evaluate(t, ev, time.Now().Add(3*time.Minute))
			if got := w.hook.received(); kinds(got) != "firing,resolved" {
				t.Fatalf("%s", kinds(got))
			}
		})
		t.Run("buckets_unowned", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.BucketsUnowned, func(r *storage.AlertRule) { r.For = time.Minute })
			ev := w.evaluator(nil)
			t0 := time.Now()
			evaluate(t, ev, t0) // every bucket free since the start
			evaluate(t, ev, t0.Add(time.Minute))
			got := w.hook.received()
			if len(got) != 1 || got[0].Items[0].Value != storagetest.Buckets {
				t.Fatalf("%+v", got)
			}
			if _, err := w.store.AcquireBuckets(ctx, "n1", testkit.AllBuckets(), time.Now(), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			evaluate(t, ev, t0.Add(2*time.Minute))
			if got := w.hook.received(); kinds(got) != "firing,resolved" {
				t.Fatalf("%s", kinds(got))
			}
		})
		t.Run("backlog", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.Backlog, func(r *storage.AlertRule) { r.Threshold = 3 })
			w.orders.Add(time.Now().Add(time.Hour), "w1", "w2", "w3")
			f := &testkit.Fixture{T: t, Store: w.store, Group: w.orders.Group, Scene: w.refund}
			f.Add(time.Now().Add(time.Hour), "r1", "r2")
			ev := w.evaluator(nil)
			evaluate(t, ev, time.Now())
			got := w.hook.received()
			if len(got) != 1 || len(got[0].Items) != 1 || got[0].Items[0].Scene != "notify" || got[0].Items[0].Value != 3 {
				t.Fatalf("%+v", got)
			}
			ids, err := w.store.TaskIDs(ctx, storage.TaskFilter{SceneIDs: []int64{w.notify.ID}}, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.store.Apply(ctx, storage.Cancel, ids[:1], time.Now()); err != nil {
				t.Fatal(err)
			}
			evaluate(t, ev, time.Now().Add(time.Minute))
			if got := w.hook.received(); kinds(got) != "firing,resolved" {
				t.Fatalf("%s", kinds(got))
			}
		})
		t.Run("no_channel_records", func(t *testing.T) {
			w := newWorld(t, target)
			w.rule(alert.TasksExhausted, func(r *storage.AlertRule) { r.ChannelIDs = nil })
			w.replay(w.notify, 1, "exhaust", "gone")
			evaluate(t, w.evaluator(nil), time.Now())
			hist := w.history()
			if len(hist) != 1 || hist[0].Status != storage.AlertRecorded || hist[0].ChannelID != 0 {
				t.Fatalf("%+v", hist)
			}
		})
	})
}

// The query of oldest_waiting reads idx_task_due in next_at order and stops after its rows:
// no scan, no sort.
func TestOldestWaitingQueryUsesTheIndex(t *testing.T) {
	target := storagetest.MySQL(t)
	w := newWorld(t, target)
	for b := 0; b < 4; b++ {
		w.orders.AddInBucket(b, time.Now().Add(-time.Hour), storagetest.RandomName("a"), storagetest.RandomName("b"))
	}
	plan, err := w.store.Explain(context.Background(), storage.OverdueQuery(1, 20), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Log(plan)
	if !strings.Contains(plan, "idx_task_due") || strings.Contains(plan, "filesort") || strings.Contains(plan, "ALL") {
		t.Fatalf("plan: %s", plan)
	}
}
