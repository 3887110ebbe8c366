package retryhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/client-sdk/internal/recovery"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// defaultHeartbeat is the heartbeat interval until the server names one.
const defaultHeartbeat = 10 * time.Second

// errUnknownInstance is the server's answer to a heartbeat of an instance it forgot.
var errUnknownInstance = errors.New("the server does not know this instance")

// heartbeat keeps the instance listed on the server: it registers (again whenever the server
// forgot the instance or the scenes changed), then sends a heartbeat every interval.
type heartbeat struct {
	api         *serverAPI
	reg         *registry
	log         *slog.Logger
	limits      *atomic.Pointer[protocol.RegisterResponse]
	instance    string
	executorURL string
	capacity    int
	inFlight    func() int

	interval time.Duration // Config.HeartbeatInterval; 0 means the server's
	// rec spaces the tries while the server cannot be reached or refuses the instance, and logs
	// the outage. Start uses it before run does, never at the same time.
	rec *recovery.Tracker
	// retryIn is how long run waits before its first try when Start could not register.
	retryIn time.Duration

	registered atomic.Bool
	// rescan asks for a new registration because scenes were declared.
	rescan chan struct{}
}

// maxBatch is the batch size the instance registers: batched calls reach an executor only.
func (h *heartbeat) maxBatch() int {
	if h.executorURL == "" {
		return 0
	}
	return min(h.capacity, MaxBatch)
}

// register announces the instance and stores the server's limits.
func (h *heartbeat) register(ctx context.Context) error {
	host, _ := os.Hostname()
	req := protocol.RegisterRequest{
		InstanceID:  h.instance,
		ExecutorURL: h.executorURL,
		Capacity:    h.capacity,
		MaxBatch:    h.maxBatch(),
		SDKVersion:  Version,
		Host:        host,
		Scenes:      h.reg.names(),
		// The server creates the scenes it does not have from these, so that a first report
		// does not turn a scene declared Remote into one with the server's default mode.
		Declarations: h.reg.declarations(),
	}
	resp, err := h.api.postJSON(ctx, protocol.PathRegister, req)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if resp.status != http.StatusOK && resp.status != http.StatusCreated {
		return fmt.Errorf("register: %w", resp.asError("POST "+protocol.PathRegister))
	}
	var rr protocol.RegisterResponse
	if err := json.Unmarshal(resp.body, &rr); err != nil {
		return fmt.Errorf("register: POST %s on %s: %w: %v", protocol.PathRegister, resp.server, errMalformedAnswer, err)
	}
	h.limits.Store(&rr)
	h.registered.Store(true)
	h.log.Info("retryhub: instance registered", "server", resp.server, "executor_url", h.executorURL,
		"scenes", len(req.Scenes), "heartbeat", time.Duration(rr.HeartbeatInterval))
	return nil
}

// beat sends one heartbeat.
func (h *heartbeat) beat(ctx context.Context) error {
	resp, err := h.api.postJSON(ctx, protocol.PathHeartbeat, protocol.HeartbeatRequest{InstanceID: h.instance, InFlight: h.inFlight()})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	switch {
	case resp.status >= 200 && resp.status < 300:
		return nil
	case resp.status == http.StatusNotFound:
		ae := resp.asError("POST " + protocol.PathHeartbeat)
		if ae.code == "unknown_instance" {
			return fmt.Errorf("heartbeat: %w: %w", errUnknownInstance, ae)
		}
		return fmt.Errorf("heartbeat: %w", ae)
	default:
		return fmt.Errorf("heartbeat: %w", resp.asError("POST "+protocol.PathHeartbeat))
	}
}

// deregister removes the instance from the server's list.
func (h *heartbeat) deregister(ctx context.Context) error {
	if !h.registered.Load() {
		return nil
	}
	resp, err := h.api.postJSON(ctx, protocol.PathDeregister, protocol.DeregisterRequest{InstanceID: h.instance})
	if err != nil {
		return fmt.Errorf("deregister: %w", err)
	}
	if resp.status >= 300 && resp.status != http.StatusNotFound {
		return fmt.Errorf("deregister: %w", resp.asError("POST "+protocol.PathDeregister))
	}
	h.registered.Store(false)
	return nil
}

// currentInterval is the heartbeat interval in force.
func (h *heartbeat) currentInterval() time.Duration {
	if h.interval > 0 {
		return h.interval
	}
	if l := h.limits.Load(); l != nil && l.HeartbeatInterval > 0 {
		return time.Duration(l.HeartbeatInterval)
	}
	return defaultHeartbeat
}

// run registers the instance when it is not registered, then beats every interval, until ctx
// ends.
func (h *heartbeat) run(ctx context.Context) {
	wait := h.retryIn
	if h.registered.Load() {
		wait = h.currentInterval()
	}
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-h.rescan:
				t.Stop()
				h.registered.Store(false)
			case <-t.C:
			}
		}
		var err error
		if h.registered.Load() {
			err = h.beat(ctx)
			if errors.Is(err, errUnknownInstance) {
				h.log.Warn("retryhub: the server forgot this instance; registering again", "err", err)
				h.registered.Store(false)
				wait = 0
				continue
			}
		} else {
			err = h.register(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		wait = h.currentInterval()
		if err != nil {
			kind, fix := classify(err)
			d := h.rec.Failed(err, kind, fix)
			if h.registered.Load() && kind == recovery.Transient {
				// A listed instance keeps beating at least every interval.
				d = min(d, wait)
			}
			wait = d
			continue
		}
		h.rec.Succeeded()
	}
}

// scenesChanged asks for a new registration with the current scene list.
func (h *heartbeat) scenesChanged() {
	select {
	case h.rescan <- struct{}{}:
	default:
	}
}
