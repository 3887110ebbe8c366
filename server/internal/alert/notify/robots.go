package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// The robots answer HTTP 200 even when they refuse a message; the refusal is a non-zero code in
// the JSON body, which Send turns into an error carrying the code and the platform's message.

// Size limits of the robots' message text, in bytes, kept under the platforms' documented
// limits with room for the JSON around the text.
const (
	dingTalkTextLimit = 18000 // DingTalk: a message body of at most 20000 bytes
	larkTextLimit     = 16000 // Lark/Feishu: a request body of at most 20 KB
	weComTextLimit    = 4000  // WeCom: markdown.content of at most 4096 bytes
)

// dingTalk posts to a DingTalk custom robot. The shape follows DingTalk's "custom robot"
// documentation (open.dingtalk.com, 自定义机器人发送群消息): POST JSON
// {"msgtype":"markdown","markdown":{"title":…,"text":…}} to the webhook; the answer is
// {"errcode":0,"errmsg":"ok"}. In signed mode (加签) the URL also gets
// &timestamp=<ms>&sign=<urlencode(base64(HMAC-SHA256(key=secret, timestamp+"\n"+secret)))>,
// and the timestamp must be within an hour of DingTalk's clock.
type dingTalk struct {
	url    *url.URL
	secret string
	client *http.Client
	opts   Options
}

func newDingTalk(s DingTalkSettings, opts Options) (*dingTalk, error) {
	u, err := checkURL("url", s.URL)
	if err != nil {
		return nil, err
	}
	if u.Query().Get("access_token") == "" {
		return nil, errors.New("url: no access_token in the URL (copy the robot's whole webhook address)")
	}
	return &dingTalk{url: u, secret: s.Secret, client: opts.httpClient(), opts: opts}, nil
}

// DingTalkSign is DingTalk's signature of a timestamp in milliseconds, before URL encoding:
// base64(HMAC-SHA256(key=secret, message=timestamp+"\n"+secret)).
func DingTalkSign(secret string, timestampMillis int64) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestampMillis, 10) + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func (d *dingTalk) Send(ctx context.Context, m Message) error {
	body, err := encodeJSON(map[string]any{
		"msgtype": "markdown",
		"markdown": map[string]string{
			"title": truncate(Subject(m), 200),
			"text":  markdown(m, dingTalkTextLimit, markdownStyle{}),
		},
	})
	if err != nil {
		return fmt.Errorf("dingtalk: %w", err)
	}
	u := *d.url
	if d.secret != "" {
		ts := d.opts.now().UnixMilli()
		q := u.Query()
		q.Set("timestamp", strconv.FormatInt(ts, 10))
		q.Set("sign", DingTalkSign(d.secret, ts)) // Encode URL-encodes it, as documented
		u.RawQuery = q.Encode()
	}
	answer, err := post(ctx, d.client, u.String(), body, nil)
	if err != nil {
		return fmt.Errorf("dingtalk: %w", err)
	}
	return errcodeAnswer("dingtalk", answer)
}

// errcodeAnswer checks the {"errcode":0,"errmsg":"ok"} answer DingTalk and WeCom give.
func errcodeAnswer(platform string, answer []byte) error {
	var a struct {
		ErrCode *int   `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(answer, &a); err != nil || a.ErrCode == nil {
		return fmt.Errorf("%s: unexpected answer: %s", platform, snippet(answer))
	}
	if *a.ErrCode != 0 {
		return fmt.Errorf("%s: robot refused the message: errcode %d: %s", platform, *a.ErrCode, oneLine(a.ErrMsg))
	}
	return nil
}

// lark posts to a Lark/Feishu custom bot. The shape follows Lark's "custom bot" guide
// (open.feishu.cn / open.larksuite.com, 自定义机器人使用指南): POST JSON
// {"msg_type":"interactive","card":{…}} with a card of a coloured header and one div of lark_md
// text; in signed mode (签名校验) the body also has "timestamp" (Unix seconds, as a string) and
// "sign" = base64(HMAC-SHA256(key=timestamp+"\n"+secret, message="")), valid for an hour. The
// answer is {"code":0,"msg":"success"} (older bots: {"StatusCode":0,"StatusMessage":"success"}).
type lark struct {
	url    string
	secret string
	client *http.Client
	opts   Options
}

func newLark(s LarkSettings, opts Options) (*lark, error) {
	u, err := checkURL("url", s.URL)
	if err != nil {
		return nil, err
	}
	if u.Path == "" || u.Path == "/" {
		return nil, errors.New("url: no bot path in the URL (copy the bot's whole webhook address)")
	}
	return &lark{url: u.String(), secret: s.Secret, client: opts.httpClient(), opts: opts}, nil
}

// LarkSign is Lark's signature of a timestamp in seconds: the string timestamp+"\n"+secret is
// the HMAC-SHA256 key, the message is empty, and the MAC is base64-encoded.
func LarkSign(secret string, timestamp int64) string {
	mac := hmac.New(sha256.New, []byte(strconv.FormatInt(timestamp, 10)+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// larkTemplate is the card header's colour.
func larkTemplate(m Message) string {
	switch {
	case m.Kind == Resolved:
		return "green"
	case m.Kind == Test:
		return "grey"
	case m.Severity == "critical":
		return "red"
	case m.Severity == "warning":
		return "orange"
	}
	return "blue"
}

func (l *lark) Send(ctx context.Context, m Message) error {
	payload := map[string]any{
		"msg_type": "interactive",
		"card": map[string]any{
			"config": map[string]any{"wide_screen_mode": true},
			"header": map[string]any{
				"title":    map[string]string{"tag": "plain_text", "content": truncate(Subject(m), 300)},
				"template": larkTemplate(m),
			},
			"elements": []any{
				map[string]any{"tag": "div", "text": map[string]string{
					"tag": "lark_md", "content": markdown(m, larkTextLimit, markdownStyle{lark: true}),
				}},
			},
		},
	}
	if l.secret != "" {
		ts := l.opts.now().Unix()
		payload["timestamp"] = strconv.FormatInt(ts, 10)
		payload["sign"] = LarkSign(l.secret, ts)
	}
	body, err := encodeJSON(payload)
	if err != nil {
		return fmt.Errorf("lark: %w", err)
	}
	answer, err := post(ctx, l.client, l.url, body, nil)
	if err != nil {
		return fmt.Errorf("lark: %w", err)
	}
	var a struct {
		Code          *int   `json:"code"`
		Msg           string `json:"msg"`
		StatusCode    *int   `json:"StatusCode"`
		StatusMessage string `json:"StatusMessage"`
	}
	if err := json.Unmarshal(answer, &a); err != nil || (a.Code == nil && a.StatusCode == nil) {
		return fmt.Errorf("lark: unexpected answer: %s", snippet(answer))
	}
	if a.Code != nil && *a.Code != 0 {
		return fmt.Errorf("lark: bot refused the message: code %d: %s", *a.Code, oneLine(a.Msg))
	}
	if a.StatusCode != nil && *a.StatusCode != 0 {
		return fmt.Errorf("lark: bot refused the message: code %d: %s", *a.StatusCode, oneLine(a.StatusMessage))
	}
	return nil
}

// weCom posts to a WeCom group robot. The shape follows WeCom's "group robot" documentation
// (developer.work.weixin.qq.com, 群机器人配置说明): POST JSON
// {"msgtype":"markdown","markdown":{"content":…}} of at most 4096 bytes to
// …/cgi-bin/webhook/send?key=…; the answer is {"errcode":0,"errmsg":"ok"}. WeCom has no signed
// mode: the key in the URL is the credential.
type weCom struct {
	url    string
	client *http.Client
}

func newWeCom(s WeComSettings, opts Options) (*weCom, error) {
	u, err := checkURL("url", s.URL)
	if err != nil {
		return nil, err
	}
	if u.Query().Get("key") == "" {
		return nil, errors.New("url: no key in the URL (copy the robot's whole webhook address)")
	}
	return &weCom{url: u.String(), client: opts.httpClient()}, nil
}

func (w *weCom) Send(ctx context.Context, m Message) error {
	body, err := encodeJSON(map[string]any{
		"msgtype":  "markdown",
		"markdown": map[string]string{"content": markdown(m, weComTextLimit, markdownStyle{wecom: true})},
	})
	if err != nil {
		return fmt.Errorf("wecom: %w", err)
	}
	answer, err := post(ctx, w.client, w.url, body, nil)
	if err != nil {
		return fmt.Errorf("wecom: %w", err)
	}
	return errcodeAnswer("wecom", answer)
}

// encodeJSON marshals without escaping <, > and & (the robots show them as they are, and the
// escapes would eat into the size limits).
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
