package retryhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// enqueue queues a report, checking its size against the server's limit.
func (c *Client) enqueue(ctx context.Context, item protocol.ReportItem) error {
	if l := c.limits.Load(); l != nil && l.MaxPayloadBytes > 0 && int64(len(item.Args)) > l.MaxPayloadBytes {
		return fmt.Errorf("%w: %d bytes of JSON, the server accepts %d", ErrArgsTooLarge, len(item.Args), l.MaxPayloadBytes)
	}
	q := c.q.Load()
	if q == nil {
		return ErrNotStarted
	}
	if err := q.push(item); err != nil {
		if errors.Is(err, ErrQueueFull) {
			c.warnQueueFull(ctx, item)
		}
		return err
	}
	return nil
}

// queueFullLogEvery spaces the warnings about a full queue; every refused call gets its error.
const queueFullLogEvery = 10 * time.Second

func (c *Client) warnQueueFull(ctx context.Context, item protocol.ReportItem) {
	now := time.Now().UnixNano()
	last := c.queueFullLogged.Load()
	if now-last < int64(queueFullLogEvery) || !c.queueFullLogged.CompareAndSwap(last, now) {
		return
	}
	c.log.WarnContext(ctx, "retryhub: report queue full; failed calls are returned to their callers unreported until it drains",
		"scene", item.Scene, "key", item.IdempotencyKey, "max", c.cfg.MaxQueuedReports)
}

// Report hands a failed call to the server for remote retry, as a Retryable does after its
// local attempts: the manual mode, for code that retries by itself and reports what still
// fails. args are the arguments the scene's function (declared on some instance of the group)
// takes, encoded as JSON; key is the idempotency key ("" means the default, the hex SHA-256 of
// scene, a newline and the JSON arguments); cause is the last failure, which happened now (the
// report carries the time of the call, and the server schedules the first replay from it). The
// report counts one local attempt.
//
// Report returns nil once the report is queued (in memory, or in the spool when there is
// one). It returns an error, and reports nothing, when cause is Permanent, when args do not
// encode, when they exceed the server's payload limit (ErrArgsTooLarge), when the queue is full
// (ErrQueueFull), or when the client is not running (ErrNotStarted, ErrClosed). ctx is used for
// logging only: queueing waits for nothing but the local disk.
func (c *Client) Report(ctx context.Context, scene string, args any, key string, cause error) error {
	if msg := validSceneName(scene); msg != "" {
		return fmt.Errorf("retryhub: Report(%q): %s", scene, msg)
	}
	if IsPermanent(cause) {
		return fmt.Errorf("retryhub: Report(%q): a permanent failure is not reported: %w", scene, cause)
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("retryhub: Report(%q): encode arguments: %w", scene, err)
	}
	if key == "" {
		key = defaultKey(scene, raw)
	} else if err := checkKey(key); err != nil {
		return fmt.Errorf("retryhub: Report(%q): not reported: %w", scene, err)
	}
	item := protocol.ReportItem{Scene: scene, IdempotencyKey: key, Args: raw, LocalAttempts: 1, FailedAt: c.now().UnixMilli()}
	if cause != nil {
		item.Error = errorText(cause)
	}
	if err := c.enqueue(ctx, item); err != nil {
		return fmt.Errorf("retryhub: Report(%q): not reported: %w", scene, err)
	}
	return nil
}

// Report is Client.Report on the process-wide client started with Start.
func Report(ctx context.Context, scene string, args any, key string, cause error) error {
	c := defaultRegistry.client.Load()
	if c == nil {
		return fmt.Errorf("retryhub: Report(%q): not reported: %w", scene, ErrNotStarted)
	}
	return c.Report(ctx, scene, args, key, cause)
}
