package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// A rule's state is written only at the version the evaluation read, with its messages; the
// history pages by id with filters, and retention deletes only old rows not waiting for a retry.
func TestAlertStateAndHistory(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		now := time.Now()
		msg := func(rule int64, status string) storage.AlertMessage {
			return storage.AlertMessage{NamespaceID: 1, RuleID: rule, RuleName: "r", Kind: "firing", ChannelID: 3,
				Subject: "s", Payload: []byte("{}"), Status: status, NextRetryAt: &now, CreatedAt: now}
		}
		st := storage.AlertState{RuleID: 7, Firing: true, Since: &now, Subjects: []byte("[]"), Pending: []byte("{}"), EvaluatedAt: &now}
		ok, err := s.CommitAlert(ctx, st, []storage.AlertMessage{msg(7, storage.AlertPending)})
		if err != nil || !ok {
			t.Fatalf("first write: %v %v", ok, err)
		}
		// Another evaluator that read no state either: its decision is void, its messages unwritten.
		if ok, err = s.CommitAlert(ctx, st, []storage.AlertMessage{msg(7, storage.AlertPending)}); err != nil || ok {
			t.Fatalf("a second first write: %v %v", ok, err)
		}
		states, err := s.AlertStates(ctx)
		if err != nil || states[7].Version != 1 || !states[7].Firing {
			t.Fatalf("states %+v (%v)", states, err)
		}
		st.Version, st.Firing = 1, false
		if ok, err = s.CommitAlert(ctx, st, []storage.AlertMessage{msg(7, storage.AlertPending), msg(8, storage.AlertRecorded)}); err != nil || !ok {
			t.Fatalf("write at version 1: %v %v", ok, err)
		}
		if ok, _ = s.CommitAlert(ctx, st, nil); ok {
			t.Fatal("a write at a stale version was taken")
		}
		all, err := s.ListAlertMessages(ctx, storage.AlertMessageFilter{}, 10)
		if err != nil || len(all) != 3 || all[0].ID < all[1].ID {
			t.Fatalf("history %+v (%v)", all, err)
		}
		page, _ := s.ListAlertMessages(ctx, storage.AlertMessageFilter{RuleID: 7, Before: all[1].ID}, 10)
		if len(page) != 1 || page[0].ID != all[2].ID {
			t.Fatalf("rule 7 before %d: %+v", all[1].ID, page)
		}
		// Two senders claim one message: one gets it.
		due, _ := s.DueAlertMessages(ctx, now, 10)
		if len(due) != 2 {
			t.Fatalf("due: %+v", due)
		}
		a, _ := s.ClaimAlertMessage(ctx, due[0].ID, due[0].Attempts, now.Add(time.Minute))
		b, _ := s.ClaimAlertMessage(ctx, due[0].ID, due[0].Attempts, now.Add(time.Minute))
		if !a || b {
			t.Fatalf("claims %v %v", a, b)
		}
		if err := s.FinishAlertMessage(ctx, due[0].ID, storage.AlertSent, "", &now, nil); err != nil {
			t.Fatal(err)
		}
		n, err := s.DeleteAlertMessagesBefore(ctx, now.Add(time.Hour), 100)
		if err != nil || n != 2 { // the sent and the recorded one; the pending one waits
			t.Fatalf("retention deleted %d (%v)", n, err)
		}
	})
}
