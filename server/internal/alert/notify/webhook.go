package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Headers of a generic webhook request.
const (
	// SignatureHeader carries "sha256=" and the hex HMAC-SHA256, keyed with the channel's
	// secret, of the timestamp header's value, a dot and the raw body.
	SignatureHeader = "X-Retryhub-Signature"
	// TimestampHeader carries the Unix time in seconds at which the request was signed.
	TimestampHeader = "X-Retryhub-Timestamp"
)

// WebhookPayload is the JSON body a generic webhook receives (Content-Type application/json).
// Field names are stable; new fields may be added, none renamed or removed while Version is 1.
//
// A signed request (the channel has a secret) carries X-Retryhub-Timestamp: the Unix seconds
// at signing, and X-Retryhub-Signature: "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." +
// body)). A receiver verifies it over the raw body before decoding it, and refuses old
// timestamps so a captured request cannot be replayed:
//
//	ts := r.Header.Get("X-Retryhub-Timestamp")
//	body, _ := io.ReadAll(r.Body)
//	mac := hmac.New(sha256.New, []byte(secret))
//	mac.Write([]byte(ts + "." + string(body)))
//	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
//	sec, err := strconv.ParseInt(ts, 10, 64)
//	ok := err == nil && hmac.Equal([]byte(want), []byte(r.Header.Get("X-Retryhub-Signature"))) &&
//		time.Since(time.Unix(sec, 0)).Abs() < 5*time.Minute
type WebhookPayload struct {
	Version       int           `json:"version"`   // 1
	Kind          string        `json:"kind"`      // firing, reminder, resolved or test
	Severity      string        `json:"severity"`  // critical, warning or info
	Title         string        `json:"title"`     // the one-line subject, as in the mail
	RuleID        int64         `json:"rule_id"`   // 0 for a test
	Rule          string        `json:"rule"`      // the rule's name
	RuleKind      string        `json:"rule_kind"` // what it measures, e.g. tasks_exhausted
	Namespace     string        `json:"namespace"`
	At            string        `json:"at"`             // RFC 3339 UTC, when the evaluation saw it
	WindowSeconds int64         `json:"window_seconds"` // the rule's window, 0 when it has none
	ConsoleURL    string        `json:"console_url"`    // "" when the server has no public URL
	Items         []WebhookItem `json:"items"`
}

// WebhookItem is one subject of a WebhookPayload.
type WebhookItem struct {
	Group     string         `json:"group"`
	Scene     string         `json:"scene"`
	Subject   string         `json:"subject"`
	Value     float64        `json:"value"`
	Threshold float64        `json:"threshold"`
	Unit      string         `json:"unit"`
	Summary   string         `json:"summary"`
	Errors    []WebhookError `json:"errors"`
	Link      string         `json:"link"`
}

// WebhookError is one distinct error with sample task ids.
type WebhookError struct {
	Error   string  `json:"error"`
	TaskIDs []int64 `json:"task_ids"`
}

// NewWebhookPayload is the body a generic webhook receives for m.
func NewWebhookPayload(m Message) WebhookPayload {
	p := WebhookPayload{
		Version: 1, Kind: m.Kind, Severity: m.Severity, Title: Subject(m),
		RuleID: m.RuleID, Rule: m.Rule, RuleKind: m.RuleKind, Namespace: m.Namespace,
		WindowSeconds: int64(m.Window / time.Second), ConsoleURL: m.ConsoleURL,
		Items: make([]WebhookItem, 0, len(m.Items)),
	}
	if !m.At.IsZero() {
		p.At = m.At.UTC().Format(time.RFC3339Nano)
	}
	for _, it := range m.Items {
		wi := WebhookItem{Group: it.Group, Scene: it.Scene, Subject: it.Subject, Value: it.Value,
			Threshold: it.Threshold, Unit: it.Unit, Summary: it.Summary, Link: it.Link,
			Errors: make([]WebhookError, 0, len(it.Errors))}
		for _, e := range it.Errors {
			ids := e.TaskIDs
			if ids == nil {
				ids = []int64{}
			}
			wi.Errors = append(wi.Errors, WebhookError{Error: e.Error, TaskIDs: ids})
		}
		p.Items = append(p.Items, wi)
	}
	return p
}

// reservedHeaders are set by the sender and may not be overridden by a channel's headers.
var reservedHeaders = map[string]bool{
	"Content-Type": true, "Content-Length": true, "Host": true, "Transfer-Encoding": true,
	"Connection": true, SignatureHeader: true, TimestampHeader: true,
}

// webhook posts NewWebhookPayload's JSON, signed when the channel has a secret.
type webhook struct {
	url    string
	s      WebhookSettings
	client *http.Client
	opts   Options
}

func newWebhook(s WebhookSettings, opts Options) (*webhook, error) {
	u, err := checkURL("url", s.URL)
	if err != nil {
		return nil, err
	}
	for name, value := range s.Headers {
		if !isToken(name) {
			return nil, fmt.Errorf("headers: %q is not a header name", name)
		}
		if reservedHeaders[http.CanonicalHeaderKey(name)] {
			return nil, fmt.Errorf("headers: %s is set by the server", http.CanonicalHeaderKey(name))
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return nil, fmt.Errorf("headers: the value of %s has a line break", name)
		}
	}
	return &webhook{url: u.String(), s: s, client: opts.httpClient(), opts: opts}, nil
}

// Send posts m; any status but 2xx is a failure.
func (w *webhook) Send(ctx context.Context, m Message) error {
	body, err := json.Marshal(NewWebhookPayload(m))
	if err != nil {
		return fmt.Errorf("webhook: encode: %w", err)
	}
	h := http.Header{}
	for name, value := range w.s.Headers {
		h.Set(name, value)
	}
	if w.s.Secret != "" {
		ts := strconv.FormatInt(w.opts.now().Unix(), 10)
		h.Set(TimestampHeader, ts)
		h.Set(SignatureHeader, WebhookSignature(w.s.Secret, ts, body))
	}
	if _, err := post(ctx, w.client, w.url, body, h); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}

// WebhookSignature is the X-Retryhub-Signature value of a body signed at timestamp ts (Unix
// seconds, as sent in X-Retryhub-Timestamp): "sha256=" + hex(HMAC-SHA256(secret, ts "." body)).
func WebhookSignature(secret, ts string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// maxResponse bounds how much of a response is read.
const maxResponse = 64 << 10

// post sends a JSON body and returns the response body of a 2xx answer. Errors never contain
// the URL's path or query (robot URLs carry their token there), only its scheme and host.
func post(ctx context.Context, client *http.Client, target string, body []byte, h http.Header) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("request to %s: %v", safeURL(target), stripURL(err))
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post to %s: %v", safeURL(target), stripURL(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s: %v", safeURL(target), stripURL(err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("%s answered HTTP %d: %s", safeURL(target), resp.StatusCode, snippet(data))
	}
	return data, nil
}

// safeURL is the scheme and host of a URL, the part that may be shown.
func safeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "the webhook"
	}
	return u.Scheme + "://" + u.Host
}

// stripURL drops the URL from a *url.Error, keeping what went wrong.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// snippet is the start of a response body for an error message, on one line.
func snippet(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	s = truncate(oneLine(strings.TrimSpace(s)), 200)
	if s == "" {
		return "(empty body)"
	}
	return s
}
