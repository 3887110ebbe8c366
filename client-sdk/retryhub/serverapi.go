package retryhub

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/client-sdk/internal/recovery"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// maxResponseBytes bounds what the client reads of a server answer.
const maxResponseBytes = 32 << 20

// serverAPI sends signed requests to the server's client API, failing over between servers.
type serverAPI struct {
	servers   []string
	cur       atomic.Int32 // index of the server that answered last
	http      *http.Client
	token     string
	namespace string
	group     string
	instance  string
}

// apiResponse is a server's answer.
type apiResponse struct {
	server string
	status int
	header http.Header
	body   []byte
}

// apiError is a server answer that is not a success.
type apiError struct {
	op      string // "POST /api/v1/client/reports"
	server  string
	status  int
	code    string
	message string
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s: HTTP %d", e.op, e.server, e.status)
	if e.code != "" {
		fmt.Fprintf(&b, " %s", e.code)
	}
	if e.message != "" {
		fmt.Fprintf(&b, ": %s", e.message)
	}
	return b.String()
}

// configProblem reports whether the answer means the client is misconfigured (credentials,
// group, request shape, a server that does not speak this API): a 4xx other than those that
// ask to try again later. Only a person can fix it.
func (e *apiError) configProblem() bool {
	switch e.status {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return e.status >= 400 && e.status < 500
}

// do sends one signed request. It tries the servers in turn, starting with the one that
// answered last, and moves on when one is unreachable or answers 5xx. It returns the first
// answer below 500, else the last 5xx answer, else the last transport error.
func (a *serverAPI) do(ctx context.Context, method, path string, body []byte, header http.Header) (*apiResponse, error) {
	if body == nil {
		body = []byte{}
	}
	start := int(a.cur.Load())
	var lastResp *apiResponse
	var lastErr error
	for i := range a.servers {
		idx := (start + i) % len(a.servers)
		resp, err := a.try(ctx, a.servers[idx], method, path, body, header)
		if err == nil && resp.status < 500 {
			a.cur.Store(int32(idx))
			return resp, nil
		}
		if err != nil {
			lastErr = err
		} else {
			lastResp = resp
		}
		if ctx.Err() != nil {
			break
		}
	}
	if lastResp != nil {
		return lastResp, nil
	}
	return nil, lastErr
}

func (a *serverAPI) try(ctx context.Context, server, method, path string, body []byte, header http.Header) (*apiResponse, error) {
	req, err := http.NewRequestWithContext(ctx, method, server+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, server, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(protocol.HeaderNamespace, a.namespace)
	req.Header.Set(protocol.HeaderGroup, a.group)
	req.Header.Set(protocol.HeaderInstance, a.instance)
	req.Header.Set("User-Agent", "retryhub-go-sdk/"+Version)
	protocol.SignRequest(req, a.token, body, time.Now())
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, server, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: read answer: %w", method, path, server, err)
	}
	return &apiResponse{server: server, status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// postJSON encodes v and POSTs it.
func (a *serverAPI) postJSON(ctx context.Context, path string, v any) (*apiResponse, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", path, err)
	}
	return a.do(ctx, http.MethodPost, path, body, nil)
}

// asError describes a non-success answer to op, with the message of its protocol.ErrorBody.
func (r *apiResponse) asError(op string) *apiError {
	e := &apiError{op: op, server: r.server, status: r.status}
	var eb protocol.ErrorBody
	if err := json.Unmarshal(r.body, &eb); err == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		e.code, e.message = eb.Error.Code, eb.Error.Message
	} else if len(r.body) > 0 {
		msg := strings.TrimSpace(string(r.body))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		e.message = msg
	}
	return e
}

// classify says how a loop retries err: a server that refuses the client's configuration, or
// whose TLS certificate the client does not trust, needs a person to fix it (fix says what to
// check); anything else (an unreachable server, a 5xx) is transient.
func classify(err error) (kind recovery.Kind, fix string) {
	var ae *apiError
	if errors.As(err, &ae) && ae.configProblem() {
		if ae.status == http.StatusUnauthorized || ae.status == http.StatusForbidden {
			return recovery.NeedsFix, "check Config.Namespace, Config.Group and Config.Token against the server's group"
		}
		return recovery.NeedsFix, "the server does not take this client's requests; check Config.Servers and the SDK version"
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) {
		return recovery.NeedsFix, "the server's TLS certificate does not name the host in Config.Servers"
	}
	var tlsErr *tls.CertificateVerificationError
	var authErr x509.UnknownAuthorityError
	var invalidErr x509.CertificateInvalidError
	if errors.As(err, &tlsErr) || errors.As(err, &authErr) || errors.As(err, &invalidErr) {
		return recovery.NeedsFix, "the server's TLS certificate is not trusted; set Config.CAFile to the CA that signed it"
	}
	return recovery.Transient, ""
}
