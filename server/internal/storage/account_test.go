package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

func TestUsersGrantsAndSessions(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		u, err := s.CreateUser(ctx, storage.User{Username: "ann", PasswordHash: "h1",
			Grants: []storage.Grant{{NamespaceID: 3, Role: "viewer"}, {NamespaceID: storage.AllNamespaces, Role: "admin"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateUser(ctx, storage.User{Username: "ann", PasswordHash: "h"}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("a second ann: %v, want ErrConflict", err)
		}
		got, err := s.UserByName(ctx, "ann")
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != u.ID || got.TokenGen != 1 || len(got.Grants) != 2 || got.Grants[0] != (storage.Grant{NamespaceID: 0, Role: "admin"}) {
			t.Fatalf("read back %+v", got)
		}
		disabled, hash, grants := true, "h2", []storage.Grant{{NamespaceID: 5, Role: "operator"}}
		got, err = s.UpdateUser(ctx, u.ID, storage.UserChange{Disabled: &disabled, PasswordHash: &hash, Grants: &grants, EndSessions: true})
		if err != nil {
			t.Fatal(err)
		}
		if !got.Disabled || got.PasswordHash != "h2" || got.TokenGen != 2 || len(got.Grants) != 1 || got.Grants[0].NamespaceID != 5 {
			t.Fatalf("after update %+v", got)
		}
		if _, err := s.UpdateUser(ctx, u.ID+100, storage.UserChange{EndSessions: true}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("update of an unknown user: %v", err)
		}
		if err := s.EndAllSessions(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ = s.User(ctx, u.ID); got.TokenGen != 3 {
			t.Fatalf("token_gen %d after ending all sessions, want 3", got.TokenGen)
		}
	})
}

func TestListUsersPagesByKeyAndFiltersByName(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		for i := range 5 {
			if _, err := s.CreateUser(ctx, storage.User{Username: fmt.Sprintf("op_%d", i), PasswordHash: "h"}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.CreateUser(ctx, storage.User{Username: "opXs", PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
		// "_" is not a wildcard: "op_" matches the five, not opXs.
		var names []string
		after := int64(0)
		for {
			page, err := s.ListUsers(ctx, "op_", after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, u := range page {
				names = append(names, u.Username)
			}
			after = page[len(page)-1].ID
		}
		if fmt.Sprint(names) != "[op_0 op_1 op_2 op_3 op_4]" {
			t.Fatalf("pages gave %v", names)
		}
	})
}

func TestAPITokensAndSettings(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tok, err := s.CreateAPIToken(ctx, storage.APIToken{Name: "ci", Hash: fmt.Sprintf("%064d", 1), Prefix: "rh_abc",
			NamespaceID: 2, Role: "operator", CreatedBy: "admin"})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for range 3 {
			if err := s.TouchAPIToken(ctx, tok.ID, now, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		// A use within the minute does not move last_used_at; one after it does.
		if err := s.TouchAPIToken(ctx, tok.ID, now.Add(30*time.Second), time.Minute); err != nil {
			t.Fatal(err)
		}
		got, err := s.APITokenByHash(ctx, tok.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if got.LastUsedAt == nil || !got.LastUsedAt.Equal(storage.T(now).Time) {
			t.Fatalf("last used %v, want %v", got.LastUsedAt, now)
		}
		if err := s.TouchAPIToken(ctx, tok.ID, now.Add(61*time.Second), time.Minute); err != nil {
			t.Fatal(err)
		}
		if got, _ = s.APIToken(ctx, tok.ID); !got.LastUsedAt.Equal(storage.T(now.Add(61 * time.Second)).Time) {
			t.Fatalf("last used %v after a minute", got.LastUsedAt)
		}
		if err := s.RevokeAPIToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ = s.APIToken(ctx, tok.ID); got.RevokedAt == nil {
			t.Fatal("not revoked")
		}
		if err := s.RevokeAPIToken(ctx, tok.ID+9); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("revoke unknown: %v", err)
		}
		if list, _ := s.ListAPITokens(ctx, []int64{7}, 0, 10); len(list) != 0 {
			t.Fatalf("namespace 7 has %d tokens", len(list))
		}

		v, err := s.InitSetting(ctx, "k", "first")
		if err != nil || v != "first" {
			t.Fatalf("init: %q %v", v, err)
		}
		if v, _ = s.InitSetting(ctx, "k", "second"); v != "first" {
			t.Fatalf("a second init replaced the value: %q", v)
		}
		if err := s.PutSetting(ctx, "k", "third"); err != nil {
			t.Fatal(err)
		}
		if v, _ = s.Setting(ctx, "k"); v != "third" {
			t.Fatalf("after put: %q", v)
		}
	})
}

func TestAuditListsNewestFirstWithFilters(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		base := time.Now().Add(-time.Hour)
		for i := range 6 {
			actor := "ann"
			if i%2 == 1 {
				actor = "bob"
			}
			if err := s.AddAudit(ctx, storage.AuditEntry{At: base.Add(time.Duration(i) * time.Minute), Actor: actor,
				ActorKind: "user", Action: fmt.Sprintf("act-%d", i%3), Outcome: "ok", Status: 200}); err != nil {
				t.Fatal(err)
			}
		}
		all, err := s.ListAudit(ctx, storage.AuditFilter{}, 100)
		if err != nil || len(all) != 6 || all[0].ID < all[5].ID {
			t.Fatalf("all: %d %v", len(all), err)
		}
		page, _ := s.ListAudit(ctx, storage.AuditFilter{Actor: "ann", Before: all[0].ID}, 100)
		if len(page) != 3 || page[0].Actor != "ann" {
			t.Fatalf("ann's: %+v", page)
		}
		page, _ = s.ListAudit(ctx, storage.AuditFilter{Action: "act-0", Since: base.Add(time.Minute), Until: base.Add(4 * time.Minute)}, 100)
		if len(page) != 1 || page[0].Action != "act-0" || !page[0].At.Equal(storage.T(base.Add(3*time.Minute)).Time) {
			t.Fatalf("act-0 in range: %+v", page)
		}
	})
}
