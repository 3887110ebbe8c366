package retryhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/client-sdk/internal/recovery"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// sender delivers queued reports to the server in batches: a full batch at once, a partial
// one every interval, and everything on a flush. It re-sends with back-off while the server is
// unreachable or answers 5xx, and slowly while it refuses the client's configuration (rec
// spaces the tries and logs the outage).
type sender struct {
	q        *queue
	api      *serverAPI
	log      *slog.Logger
	limits   *atomic.Pointer[protocol.RegisterResponse]
	stats    *counters
	instance string
	rec      *recovery.Tracker

	batch    int
	interval time.Duration

	// flush asks for everything pending to be sent now.
	flush chan struct{}
	// draining says the client shuts down: every wake sends what is pending, full batch or not.
	draining atomic.Bool
}

// counters are the client's delivery statistics.
type counters struct {
	delivered atomic.Uint64
	merged    atomic.Uint64
	rejected  atomic.Uint64
}

// errMalformedAnswer is a 200 answer the sender cannot use.
var errMalformedAnswer = errors.New("malformed answer")

func (s *sender) run(ctx context.Context) {
	ticker := time.NewTicker(s.interval)
	defer ticker.Stop()
	for {
		all := false
		select {
		case <-ctx.Done():
			return
		case <-s.q.wake:
			all = s.draining.Load()
		case <-ticker.C:
			all = true
		case <-s.flush:
			all = true
		}
		for {
			batchSize, maxBytes := s.batchLimits()
			batch := s.q.take(batchSize, maxBytes, !all)
			if len(batch) == 0 {
				break
			}
			left, err := s.post(ctx, batch)
			s.q.putBack(left)
			if err == nil {
				s.rec.Succeeded()
				continue
			}
			if ctx.Err() != nil {
				return
			}
			kind, fix := classify(err)
			t := time.NewTimer(s.rec.Failed(err, kind, fix, "held", s.q.len()))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-s.flush:
				// Shutdown asks once: try now rather than after a long back-off.
				t.Stop()
			}
			all = true
		}
	}
}

// batchLimits returns the batch size and body size to use, the server's limits applied.
func (s *sender) batchLimits() (int, int64) {
	n, maxBytes := s.batch, int64(0)
	if l := s.limits.Load(); l != nil {
		if l.MaxBatch > 0 {
			n = min(n, l.MaxBatch)
		}
		if l.MaxBodyBytes > 2048 {
			maxBytes = l.MaxBodyBytes - 1024 // room for the envelope
		}
	}
	return n, maxBytes
}

// post sends one batch and settles what the server answered for. It returns the entries still
// to be delivered and, when there are any, why.
func (s *sender) post(ctx context.Context, batch []*entry) ([]*entry, error) {
	req := protocol.ReportRequest{InstanceID: s.instance, Items: make([]protocol.ReportItem, len(batch))}
	for i, e := range batch {
		req.Items[i] = e.item
	}
	resp, err := s.api.postJSON(ctx, protocol.PathReports, req)
	if err != nil {
		return batch, err
	}
	switch resp.status {
	case http.StatusOK, http.StatusUnprocessableEntity:
		// 200: the batch is committed, with a result per item. 422: none of its items could be
		// stored, and the results say why for each.
		var rr protocol.ReportResponse
		if resp.status == http.StatusUnprocessableEntity {
			if err := json.Unmarshal(resp.body, &rr); err != nil || len(rr.Results) != len(batch) {
				return batch, resp.asError("POST " + protocol.PathReports)
			}
		} else if err := json.Unmarshal(resp.body, &rr); err != nil {
			return batch, fmt.Errorf("POST %s on %s: %w: %v", protocol.PathReports, resp.server, errMalformedAnswer, err)
		}
		if len(rr.Results) != len(batch) {
			return batch, fmt.Errorf("POST %s on %s: %w: %d results for %d items", protocol.PathReports, resp.server, errMalformedAnswer, len(rr.Results), len(batch))
		}
		s.settle(batch, rr.Results)
		return nil, nil
	case http.StatusRequestEntityTooLarge:
		if len(batch) == 1 {
			s.reject(batch[0], "the server refused it as too large (413): "+resp.asError("POST "+protocol.PathReports).Error())
			s.settleLogged(batch)
			return nil, nil
		}
		h := len(batch) / 2
		left, err := s.post(ctx, batch[:h])
		if err != nil {
			return slices.Concat(left, batch[h:]), err
		}
		return s.post(ctx, batch[h:])
	default:
		return batch, resp.asError("POST " + protocol.PathReports)
	}
}

// settle counts and forgets a batch the server committed.
func (s *sender) settle(batch []*entry, results []protocol.ReportResult) {
	for i, r := range results {
		e := batch[i]
		switch r.Status {
		case protocol.ReportCreated:
			s.stats.delivered.Add(1)
		case protocol.ReportMerged:
			s.stats.delivered.Add(1)
			s.stats.merged.Add(1)
		case protocol.ReportRejected:
			s.reject(e, r.Reason)
		default:
			s.log.Warn("retryhub: the server answered a report with an unknown status; counting it delivered since the batch was committed",
				"scene", e.item.Scene, "key", e.item.IdempotencyKey, "status", r.Status)
			s.stats.delivered.Add(1)
		}
	}
	s.settleLogged(batch)
}

// reject logs and counts a report the server will never accept.
func (s *sender) reject(e *entry, reason string) {
	s.stats.rejected.Add(1)
	s.log.Error("retryhub: the server rejected a report; it is dropped since sending it again cannot succeed",
		"scene", e.item.Scene, "key", e.item.IdempotencyKey, "reason", reason, "error", e.item.Error)
}

// settleLogged settles entries; a spool that cannot record it is logged, since the reports will
// be sent again after a restart (and merge while their tasks are active).
func (s *sender) settleLogged(es []*entry) {
	if err := s.q.settle(es); err != nil {
		s.log.Error("retryhub: cannot record delivered reports in the spool; they will be sent again after a restart",
			"err", err, "count", len(es))
	}
}
