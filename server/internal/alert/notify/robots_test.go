package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// robot is an httptest server standing in for a platform: check verifies one request the way
// the platform documents it and returns the answer body; requests lists what was accepted.
type robot struct {
	srv      *httptest.Server
	requests chan map[string]any
}

func startRobot(t *testing.T, check func(r *http.Request, body []byte) (status int, answer string)) *robot {
	t.Helper()
	rb := &robot{requests: make(chan map[string]any, 10)}
	rb.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		status, answer := check(r, body)
		if status == http.StatusOK {
			var v map[string]any
			if err := json.Unmarshal(body, &v); err == nil {
				rb.requests <- v
			}
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(rb.srv.Close)
	return rb
}

func (rb *robot) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case v := <-rb.requests:
		return v
	default:
		t.Fatal("the robot accepted no request")
	}
	return nil
}

// path walks a decoded JSON document: path(v, "card", "header", "title", "content").
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestDingTalkSignedMarkdown(t *testing.T) {
	const secret = "SECtest0123456789"
	now := time.Now()
	rb := startRobot(t, func(r *http.Request, body []byte) (int, string) {
		q := r.URL.Query()
		if q.Get("access_token") != "tok123" {
			return 200, `{"errcode":300001,"errmsg":"token is not exist"}`
		}
		// DingTalk's documented check: timestamp in ms within an hour, and sign (URL-decoded by
		// Query) equal to base64(HmacSHA256(key=secret, timestamp+"\n"+secret)).
		ts, err := strconv.ParseInt(q.Get("timestamp"), 10, 64)
		if err != nil || time.Since(time.UnixMilli(ts)).Abs() > time.Hour {
			return 200, `{"errcode":310000,"errmsg":"invalid timestamp"}`
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(q.Get("timestamp") + "\n" + secret))
		if q.Get("sign") != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			return 200, `{"errcode":310000,"errmsg":"sign not match"}`
		}
		// The raw query must carry the signature URL-encoded: base64's + / = escaped.
		for _, kv := range strings.Split(r.URL.RawQuery, "&") {
			if v, ok := strings.CutPrefix(kv, "sign="); ok && strings.ContainsAny(v, "+/=") {
				return 200, `{"errcode":310000,"errmsg":"sign not url-encoded"}`
			}
		}
		return 200, `{"errcode":0,"errmsg":"ok"}`
	})
	snd := newSender(t, KindDingTalk, DingTalkSettings{URL: rb.srv.URL + "/robot/send?access_token=tok123", Secret: secret},
		Options{Now: func() time.Time { return now }})
	if err := snd.Send(context.Background(), firing()); err != nil {
		t.Fatalf("send: %v", err)
	}
	v := rb.next(t)
	if v["msgtype"] != "markdown" {
		t.Errorf("msgtype %v", v["msgtype"])
	}
	title, _ := path(v, "markdown", "title").(string)
	text, _ := path(v, "markdown", "text").(string)
	if title != Subject(firing()) {
		t.Errorf("title %q", title)
	}
	for _, want := range []string{"## [CRITICAL] firing", "**Namespace:** prod", "30 tasks exhausted",
		"`dial tcp 10.0.0.7:443: connection refused` tasks 101, 102, 103, 104, 105 and 2 more",
		"(" + firing().Items[0].Link + ")", "[Open in the console](" + firing().ConsoleURL + ")"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}

	t.Run("wrong secret is refused", func(t *testing.T) {
		bad := newSender(t, KindDingTalk, DingTalkSettings{URL: rb.srv.URL + "/robot/send?access_token=tok123", Secret: "SECother"}, Options{})
		err := bad.Send(context.Background(), firing())
		if err == nil || !strings.Contains(err.Error(), "errcode 310000: sign not match") {
			t.Fatalf("err = %v", err)
		}
		if strings.Contains(err.Error(), "tok123") {
			t.Errorf("the error shows the access token: %v", err)
		}
	})
}

func TestLarkSignedCard(t *testing.T) {
	const secret = "larksecret"
	rb := startRobot(t, func(r *http.Request, body []byte) (int, string) {
		if r.URL.Path != "/open-apis/bot/v2/hook/hook-id" {
			return 200, `{"code":19001,"msg":"param invalid: incoming webhook access token invalid"}`
		}
		var v struct {
			Timestamp string `json:"timestamp"`
			Sign      string `json:"sign"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return 200, `{"code":9499,"msg":"Bad Request"}`
		}
		// Lark's documented check: timestamp in seconds within an hour, and sign equal to
		// base64(HmacSHA256(key=timestamp+"\n"+secret, message="")).
		ts, err := strconv.ParseInt(v.Timestamp, 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Hour {
			return 200, `{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}`
		}
		mac := hmac.New(sha256.New, []byte(v.Timestamp+"\n"+secret))
		if v.Sign != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			return 200, `{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}`
		}
		return 200, `{"code":0,"data":{},"msg":"success"}`
	})
	snd := newSender(t, KindLark, LarkSettings{URL: rb.srv.URL + "/open-apis/bot/v2/hook/hook-id", Secret: secret}, Options{})
	m := firing()
	m.Kind = Reminder
	if err := snd.Send(context.Background(), m); err != nil {
		t.Fatalf("send: %v", err)
	}
	v := rb.next(t)
	if v["msg_type"] != "interactive" {
		t.Errorf("msg_type %v", v["msg_type"])
	}
	if got := path(v, "card", "header", "title", "content"); got != Subject(m) || !strings.Contains(Subject(m), "still firing") {
		t.Errorf("card title %v", got)
	}
	if got := path(v, "card", "header", "template"); got != "red" {
		t.Errorf("card template %v", got)
	}
	elements, _ := path(v, "card", "elements").([]any)
	if len(elements) != 1 || path(elements[0], "tag") != "div" || path(elements[0], "text", "tag") != "lark_md" {
		t.Fatalf("card elements %v", elements)
	}
	text, _ := path(elements[0], "text", "content").(string)
	if !strings.Contains(text, "**Namespace:** prod") || !strings.Contains(text, "[Open in the console]("+m.ConsoleURL+")") ||
		strings.Contains(text, "## ") {
		t.Errorf("card text:\n%s", text)
	}

	t.Run("wrong secret is refused", func(t *testing.T) {
		bad := newSender(t, KindLark, LarkSettings{URL: rb.srv.URL + "/open-apis/bot/v2/hook/hook-id", Secret: "other"}, Options{})
		err := bad.Send(context.Background(), firing())
		if err == nil || !strings.Contains(err.Error(), "code 19021: sign match fail") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("old answer shape", func(t *testing.T) {
		old := startRobot(t, func(*http.Request, []byte) (int, string) {
			return 200, `{"StatusCode":19024,"StatusMessage":"Key Words Not Found"}`
		})
		err := newSender(t, KindLark, LarkSettings{URL: old.srv.URL + "/hook/x"}, Options{}).Send(context.Background(), firing())
		if err == nil || !strings.Contains(err.Error(), "code 19024: Key Words Not Found") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestWeComMarkdown(t *testing.T) {
	rb := startRobot(t, func(r *http.Request, body []byte) (int, string) {
		if r.URL.Query().Get("key") != "k-1" {
			return 200, `{"errcode":93000,"errmsg":"invalid webhook url"}`
		}
		var v struct {
			MsgType  string `json:"msgtype"`
			Markdown struct {
				Content string `json:"content"`
			} `json:"markdown"`
		}
		if err := json.Unmarshal(body, &v); err != nil || v.MsgType != "markdown" {
			return 200, `{"errcode":40008,"errmsg":"invalid message type"}`
		}
		// WeCom documents markdown.content as at most 4096 bytes of UTF-8.
		if len(v.Markdown.Content) > 4096 || !utf8.ValidString(v.Markdown.Content) {
			return 200, `{"errcode":40058,"errmsg":"markdown.content exceed max length 4096"}`
		}
		return 200, `{"errcode":0,"errmsg":"ok"}`
	})
	snd := newSender(t, KindWeCom, WeComSettings{URL: rb.srv.URL + "/cgi-bin/webhook/send?key=k-1"}, Options{})
	m := firing()
	m.Kind = Resolved
	if err := snd.Send(context.Background(), m); err != nil {
		t.Fatalf("send: %v", err)
	}
	content, _ := path(rb.next(t), "markdown", "content").(string)
	if !strings.HasPrefix(content, `## <font color="info">[RESOLVED] payment-callback-exhausted`) ||
		!strings.Contains(content, "> **Namespace:** prod") {
		t.Errorf("content:\n%s", content)
	}

	t.Run("a large incident stays within 4096 bytes", func(t *testing.T) {
		big := firing()
		for i := range 200 {
			big.Items = append(big.Items, Item{Group: "g", Scene: fmt.Sprintf("场景-%03d", i), Value: 1, Unit: "tasks",
				Summary: strings.Repeat("失败 ", 40), Errors: []ErrorSample{{Error: strings.Repeat("错误", 200), TaskIDs: []int64{1}}}})
		}
		if err := snd.Send(context.Background(), big); err != nil {
			t.Fatalf("send: %v", err)
		}
		content, _ := path(rb.next(t), "markdown", "content").(string)
		if !strings.Contains(content, "more subjects; see the console") || !strings.Contains(content, "[Open in the console]") {
			t.Errorf("truncated content lacks the pointer to the console:\n%s", content)
		}
	})
	t.Run("error answer", func(t *testing.T) {
		bad := newSender(t, KindWeCom, WeComSettings{URL: rb.srv.URL + "/cgi-bin/webhook/send?key=nope"}, Options{})
		err := bad.Send(context.Background(), firing())
		if err == nil || !strings.Contains(err.Error(), "errcode 93000: invalid webhook url") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRobotHTTPFailures(t *testing.T) {
	rb := startRobot(t, func(*http.Request, []byte) (int, string) {
		return http.StatusBadGateway, "<html>upstream exploded</html>"
	})
	err := newSender(t, KindDingTalk, DingTalkSettings{URL: rb.srv.URL + "/robot/send?access_token=secret-token"}, Options{}).
		Send(context.Background(), firing())
	if err == nil || !strings.Contains(err.Error(), "HTTP 502: <html>upstream exploded</html>") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Errorf("the error shows the token: %v", err)
	}

	notJSON := startRobot(t, func(*http.Request, []byte) (int, string) { return 200, "OK" })
	err = newSender(t, KindWeCom, WeComSettings{URL: notJSON.srv.URL + "/?key=k"}, Options{}).Send(context.Background(), firing())
	if err == nil || !strings.Contains(err.Error(), "unexpected answer: OK") {
		t.Fatalf("err = %v", err)
	}

	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL + "/cgi-bin/webhook/send?key=hidden-key"
	down.Close()
	err = newSender(t, KindWeCom, WeComSettings{URL: url}, Options{}).Send(context.Background(), firing())
	if err == nil || strings.Contains(err.Error(), "hidden-key") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want connection refused without the key", err)
	}
}

func TestWebhookSignedJSON(t *testing.T) {
	const secret = "whsec"
	rb := startRobot(t, func(r *http.Request, body []byte) (int, string) {
		// What WebhookPayload's doc tells a receiver to do.
		ts := r.Header.Get(TimestampHeader)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || !hmac.Equal([]byte(want), []byte(r.Header.Get(SignatureHeader))) ||
			time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
			return http.StatusUnauthorized, `{"error":"bad signature"}`
		}
		if r.Header.Get("Authorization") != "Bearer abc" {
			return http.StatusForbidden, "no token"
		}
		return 200, ""
	})
	s := WebhookSettings{URL: rb.srv.URL + "/hooks/retryhub", Secret: secret, Headers: map[string]string{"Authorization": "Bearer abc"}}
	if err := newSender(t, KindWebhook, s, Options{}).Send(context.Background(), firing()); err != nil {
		t.Fatalf("send: %v", err)
	}
	v := rb.next(t)
	for k, want := range map[string]any{
		"version": 1.0, "kind": "firing", "severity": "critical", "rule_id": 7.0, "rule": "payment-callback-exhausted",
		"rule_kind": "tasks_exhausted", "namespace": "prod", "at": "2026-12-02T13:40:00Z", "window_seconds": 300.0,
		"console_url": firing().ConsoleURL, "title": Subject(firing()),
	} {
		if v[k] != want {
			t.Errorf("%s = %#v, want %#v", k, v[k], want)
		}
	}
	items, _ := v["items"].([]any)
	if len(items) != 3 || path(items[0], "scene") != "pay.notify" || path(items[0], "value") != 30.0 {
		t.Fatalf("items %v", items)
	}
	errs, _ := path(items[0], "errors").([]any)
	if len(errs) != 2 || path(errs[0], "error") != "dial tcp 10.0.0.7:443: connection refused" {
		t.Fatalf("errors %v", errs)
	}
	if ids, _ := path(errs[0], "task_ids").([]any); len(ids) != 7 {
		t.Errorf("task_ids %v", ids)
	}

	t.Run("wrong secret", func(t *testing.T) {
		bad := s
		bad.Secret = "other"
		err := newSender(t, KindWebhook, bad, Options{}).Send(context.Background(), firing())
		if err == nil || !strings.Contains(err.Error(), `HTTP 401: {"error":"bad signature"}`) {
			t.Fatalf("err = %v", err)
		}
	})
}
