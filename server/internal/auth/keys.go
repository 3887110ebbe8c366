package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/retryhub/retryhub/server/internal/storage"
)

// keySetting is the rh_meta row that holds the signing key as "<kid>:<hex secret>".
const keySetting = "auth.jwt_key"

// configuredKID is the key id of a key that comes from the configuration.
const configuredKID = "config"

// ErrFixedKey is returned by Rotate when the key comes from the configuration.
var ErrFixedKey = errors.New("the signing key comes from the configuration (auth.jwt_secret); change it there and restart the nodes")

// Keys holds the signing key. A configured key is used as it is; otherwise the key lives in
// the database, created by the first node that starts. A node signs with the key it reads at
// that moment, and checks tokens against a copy it keeps for cacheTTL or until a token names
// another key id (a rotation on another node), whichever comes first.
type Keys struct {
	store    *storage.Store
	fixed    []byte
	cacheTTL time.Duration

	mu     sync.Mutex
	kid    string
	secret []byte
	loaded time.Time
}

func newKeys(store *storage.Store, fixed string, cacheTTL time.Duration) *Keys {
	k := &Keys{store: store, cacheTTL: cacheTTL}
	if fixed != "" {
		k.fixed = []byte(fixed)
	}
	return k
}

// init creates the key in the database unless it is there or configured.
func (k *Keys) init(ctx context.Context) error {
	if k.fixed != nil {
		return nil
	}
	v, err := k.store.InitSetting(ctx, keySetting, newKeyValue())
	if err != nil {
		return fmt.Errorf("create the signing key: %w", err)
	}
	return k.set(v)
}

func newKeyValue() string {
	var id [8]byte
	var secret [32]byte
	rand.Read(id[:])
	rand.Read(secret[:])
	return hex.EncodeToString(id[:]) + ":" + hex.EncodeToString(secret[:])
}

func (k *Keys) set(v string) error {
	kid, sec, ok := strings.Cut(v, ":")
	secret, err := hex.DecodeString(sec)
	if !ok || err != nil || len(secret) < 32 {
		return fmt.Errorf("the signing key in rh_meta (%s) is unreadable", keySetting)
	}
	k.mu.Lock()
	k.kid, k.secret, k.loaded = kid, secret, time.Now()
	k.mu.Unlock()
	return nil
}

// signing returns the key to sign with, read from the database each time (a login is rare),
// so that no node signs with a key another node has rotated away.
func (k *Keys) signing(ctx context.Context) (string, []byte, error) {
	if k.fixed != nil {
		return configuredKID, k.fixed, nil
	}
	if err := k.reload(ctx); err != nil {
		return "", nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kid, k.secret, nil
}

// current returns the key tokens are checked with: the node's copy while it is fresh.
func (k *Keys) current(ctx context.Context) (string, []byte, error) {
	if k.fixed != nil {
		return configuredKID, k.fixed, nil
	}
	k.mu.Lock()
	kid, secret, fresh := k.kid, k.secret, time.Since(k.loaded) < k.cacheTTL
	k.mu.Unlock()
	if fresh && secret != nil {
		return kid, secret, nil
	}
	if err := k.reload(ctx); err != nil {
		return "", nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kid, k.secret, nil
}

func (k *Keys) reload(ctx context.Context) error {
	v, err := k.store.Setting(ctx, keySetting)
	if err != nil {
		return fmt.Errorf("read the signing key: %w", err)
	}
	return k.set(v)
}

// lookup returns the secret of key id kid, reading the database again when the copy is stale
// or names another key.
func (k *Keys) lookup(ctx context.Context, kid string) ([]byte, error) {
	if k.fixed != nil {
		if kid != configuredKID {
			return nil, errors.New("token signed with another key")
		}
		return k.fixed, nil
	}
	cur, secret, err := k.current(ctx)
	if err != nil {
		return nil, err
	}
	if cur == kid {
		return secret, nil
	}
	if err := k.reload(ctx); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.kid != kid {
		return nil, errors.New("token signed with a key that is no longer in use")
	}
	return k.secret, nil
}

// rotate replaces the key in the database; tokens signed with the old one stop working here
// at once and on other nodes when they next read the key.
func (k *Keys) rotate(ctx context.Context) error {
	if k.fixed != nil {
		return ErrFixedKey
	}
	v := newKeyValue()
	if err := k.store.PutSetting(ctx, keySetting, v); err != nil {
		return fmt.Errorf("rotate the signing key: %w", err)
	}
	return k.set(v)
}
