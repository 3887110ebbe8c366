package retryhub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/retryhub/retryhub/client-sdk/internal/recovery"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// policySync keeps the scenes' policies in step with the server: it asks for the group's scene
// policies every interval (a 304 when nothing changed) and swaps each scene's policy, so an edit
// in the console reaches running calls within an interval. Scenes the server does not know keep
// their code defaults. While the server cannot answer, it asks every interval or rec's back-off,
// whichever is longer.
type policySync struct {
	api      *serverAPI
	reg      *registry
	log      *slog.Logger
	interval time.Duration
	// rec logs an outage once and spaces the tries; Start uses it before run does.
	rec *recovery.Tracker

	mu    sync.Mutex
	etag  string
	known map[string]protocol.ScenePolicy // by scene name; nil before the first answer
}

// refresh asks the server once and applies what changed.
func (p *policySync) refresh(ctx context.Context) error {
	p.mu.Lock()
	etag := p.etag
	p.mu.Unlock()
	var hdr http.Header
	if etag != "" {
		hdr = http.Header{"If-None-Match": []string{etag}}
	}
	resp, err := p.api.do(ctx, http.MethodGet, protocol.PathScenes, nil, hdr)
	if err != nil {
		return fmt.Errorf("fetch scene policies: %w", err)
	}
	switch resp.status {
	case http.StatusNotModified:
		return nil
	case http.StatusOK:
	default:
		return fmt.Errorf("fetch scene policies: %w", resp.asError("GET "+protocol.PathScenes))
	}
	var sr protocol.ScenesResponse
	if err := json.Unmarshal(resp.body, &sr); err != nil {
		return fmt.Errorf("fetch scene policies: GET %s on %s: %w: %v", protocol.PathScenes, resp.server, errMalformedAnswer, err)
	}
	known := make(map[string]protocol.ScenePolicy, len(sr.Scenes))
	for _, sp := range sr.Scenes {
		known[sp.Name] = sp
	}
	p.mu.Lock()
	p.etag = resp.header.Get("ETag")
	p.known = known
	for _, s := range p.reg.all() {
		p.applyLocked(s)
	}
	p.mu.Unlock()
	return nil
}

// apply sets s's policy from the last answer, for a scene declared after it.
func (p *policySync) apply(s *scene) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applyLocked(s)
}

func (p *policySync) applyLocked(s *scene) {
	if p.known == nil {
		return
	}
	sp, ok := p.known[s.name]
	if !ok {
		if cur := s.pol.Load(); cur != s.code {
			p.log.Info("retryhub: the server no longer has a policy for the scene; using the code defaults", "scene", s.name)
			s.pol.Store(s.code)
		}
		return
	}
	np := p.fromServer(s, sp)
	s.pol.Store(np)
	p.log.Debug("retryhub: scene policy applied", "scene", s.name, "version", sp.Version, "mode", np.mode,
		"local_attempts", np.attempts, "timeout", np.timeout)
}

// fromServer builds a scene's policy from the server's; parts the SDK cannot use fall back to
// the code defaults, with a warning.
func (p *policySync) fromServer(s *scene, sp protocol.ScenePolicy) *policy {
	np := &policy{
		mode:     sp.Mode,
		attempts: max(sp.LocalAttempts, 1),
		backoff:  s.code.backoff,
		timeout:  time.Duration(sp.Timeout),
		version:  sp.Version,
	}
	if !sp.Mode.Valid() {
		p.log.Warn("retryhub: the server's policy names an unknown mode; using the code's", "scene", s.name, "mode", sp.Mode)
		np.mode = s.code.mode
	}
	if !sp.Enabled {
		np.mode = Local
	}
	if sp.LocalBackoff.Strategy != "" {
		b, err := sp.LocalBackoff.Compile()
		if err != nil {
			p.log.Warn("retryhub: the server's local back-off is invalid; using the code's", "scene", s.name, "err", err)
		} else {
			np.backoff = b
		}
	}
	if np.timeout < 0 {
		np.timeout = 0
	}
	return np
}

// run refreshes the policies every interval (longer while the server fails, by rec) until ctx
// ends.
func (p *policySync) run(ctx context.Context) {
	t := time.NewTimer(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.refresh(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := p.interval
		if err != nil {
			kind, fix := classify(err)
			wait = max(wait, p.rec.Failed(err, kind, fix))
		} else {
			p.rec.Succeeded()
		}
		t.Reset(wait)
	}
}
