package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// NewToken returns a random group token.
func NewToken() string {
	var b [24]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// bootstrap creates the configured namespace and group, with scene auto-creation on, in a
// database that has no namespace yet, so that a first start can take reports at once. A
// generated token is logged once.
func bootstrap(ctx context.Context, store *storage.Store, b config.Bootstrap, log *slog.Logger) error {
	if b.Namespace == "" {
		return nil
	}
	existing, err := store.ListNamespaces(ctx)
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		return nil
	}
	ns, err := store.CreateNamespace(ctx, retry.Namespace{Name: b.Namespace, Description: "created on first start", Enabled: true})
	if errors.Is(err, storage.ErrConflict) {
		// Another node starting on the same empty database created it a moment ago: the
		// group is made by whichever node gets to it first.
		ns, err = store.NamespaceByName(ctx, b.Namespace)
	}
	if err != nil {
		return fmt.Errorf("bootstrap namespace: %w", err)
	}
	token, generated := b.GroupToken, false
	if token == "" {
		token, generated = NewToken(), true
	}
	g, err := store.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: b.Group, Description: "created on first start",
		Token: token, Enabled: true, AutoCreateScenes: true})
	if errors.Is(err, storage.ErrConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config bootstrap.group_token: %w", err)
	}
	if generated {
		log.Warn("created the first group; its token is shown only now, keep it for your services",
			"namespace", ns.Name, "group", g.Name, "token", token)
	} else {
		log.Info("created the first group with the configured token", "namespace", ns.Name, "group", g.Name)
	}
	return nil
}

// bootstrapAdmin creates the user admin, admin of every namespace, in a database that has no
// user yet. Its password is the configured one (bootstrap.admin_password), or a generated one
// that is logged once. Nodes starting together on an empty database create it once: the
// others find the name taken and leave it.
func bootstrapAdmin(ctx context.Context, store *storage.Store, svc *auth.Service, password string, log *slog.Logger) error {
	n, err := store.CountUsers(ctx)
	if err != nil || n > 0 {
		return err
	}
	generated := password == ""
	if generated {
		password = auth.NewPassword()
	}
	hash, err := svc.HashPassword(password)
	if err != nil {
		return fmt.Errorf("config bootstrap.admin_password: %w", err)
	}
	_, err = store.CreateUser(ctx, storage.User{Username: "admin", PasswordHash: hash,
		Grants: []storage.Grant{{NamespaceID: storage.AllNamespaces, Role: auth.Admin.String()}}})
	if errors.Is(err, storage.ErrConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bootstrap admin user: %w", err)
	}
	if generated {
		log.Warn("created the user admin; its password is shown only now, sign in and change it",
			"user", "admin", "password", password)
	} else {
		log.Info("created the user admin with the configured password (bootstrap.admin_password)")
	}
	return nil
}
