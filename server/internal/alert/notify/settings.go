package notify

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"time"
)

// Options carries what the server gives every channel: how to reach the outside and how long
// to wait for it. The zero value is usable.
type Options struct {
	// HTTPClient posts webhooks and robot messages. Nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// DialTimeout bounds connecting to the SMTP server and each SMTP command. Zero means 10 s.
	DialTimeout time.Duration
	// RootCAs are the roots trusted for SMTP TLS when the settings name no ca_pem. Nil means the
	// system's roots.
	RootCAs *x509.CertPool
	// HELO is the name the server gives itself in SMTP's EHLO. "" means the host name.
	HELO string
	// Now stamps signatures (webhook and robot timestamps). Nil means time.Now.
	Now func() time.Time
}

func (o Options) httpClient() *http.Client {
	if o.HTTPClient != nil {
		return o.HTTPClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (o Options) dialTimeout() time.Duration {
	if o.DialTimeout > 0 {
		return o.DialTimeout
	}
	return 10 * time.Second
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// TLS modes of an email channel.
const (
	TLSNone     = "none"     // plain SMTP; credentials are refused unless the server is local
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, which must succeed
	TLSImplicit = "tls"      // TLS from the first byte (SMTPS, usually port 465)
)

// EmailSettings are the settings of an email channel. Password is secret.
type EmailSettings struct {
	Host string `json:"host"`
	// Port defaults by TLS mode: 25 for none, 587 for starttls, 465 for tls.
	Port int `json:"port,omitempty"`
	// TLS is "none", "starttls" or "tls" (implicit); "" means starttls.
	TLS      string `json:"tls,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// From is the sender, "alerts@example.com" or "Retryhub <alerts@example.com>".
	From string   `json:"from"`
	To   []string `json:"to"`
	// CAPEM is a PEM bundle of the CA certificates that sign the server's certificate, for a
	// relay with a private CA. "" trusts the system's roots (or Options.RootCAs).
	CAPEM string `json:"ca_pem,omitempty"`
}

// WebhookSettings are the settings of a generic webhook channel. Secret and the header values
// are secret.
type WebhookSettings struct {
	URL string `json:"url"`
	// Secret keys the X-Retryhub-Signature HMAC; "" sends unsigned requests.
	Secret string `json:"secret,omitempty"`
	// Headers are added to every request, e.g. an Authorization header the receiver wants.
	Headers map[string]string `json:"headers,omitempty"`
}

// DingTalkSettings are the settings of a DingTalk custom robot. The URL (it holds the
// access_token) and the secret are secret.
type DingTalkSettings struct {
	// URL is the robot's webhook, https://oapi.dingtalk.com/robot/send?access_token=….
	URL string `json:"url"`
	// Secret is the "SEC…" string of the robot's signed mode ("加签"); "" for a robot secured
	// by keywords or IP ranges instead.
	Secret string `json:"secret,omitempty"`
}

// LarkSettings are the settings of a Lark/Feishu custom bot. The URL (its last segment is the
// bot's token) and the secret are secret.
type LarkSettings struct {
	// URL is the bot's webhook, https://open.feishu.cn/open-apis/bot/v2/hook/… or
	// https://open.larksuite.com/open-apis/bot/v2/hook/….
	URL string `json:"url"`
	// Secret is the key of the bot's signature verification; "" when it is off.
	Secret string `json:"secret,omitempty"`
}

// WeComSettings are the settings of a WeCom group robot. The URL (it holds the key) is secret.
type WeComSettings struct {
	// URL is the robot's webhook, https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=….
	URL string `json:"url"`
}

// Kinds lists the kinds of channel New accepts.
func Kinds() []string {
	return []string{KindEmail, KindWebhook, KindDingTalk, KindLark, KindWeCom}
}

// New checks settings of a channel of the given kind and returns its Sender. Settings are
// decoded strictly: an unknown field, a wrong type or a bad value is an error naming the field,
// meant to be shown to the operator who saves the channel.
func New(kind string, settings json.RawMessage, opts Options) (Sender, error) {
	switch kind {
	case KindEmail:
		var s EmailSettings
		if err := decodeStrict(settings, &s); err != nil {
			return nil, err
		}
		return newEmail(s, opts)
	case KindWebhook:
		var s WebhookSettings
		if err := decodeStrict(settings, &s); err != nil {
			return nil, err
		}
		return newWebhook(s, opts)
	case KindDingTalk:
		var s DingTalkSettings
		if err := decodeStrict(settings, &s); err != nil {
			return nil, err
		}
		return newDingTalk(s, opts)
	case KindLark:
		var s LarkSettings
		if err := decodeStrict(settings, &s); err != nil {
			return nil, err
		}
		return newLark(s, opts)
	case KindWeCom:
		var s WeComSettings
		if err := decodeStrict(settings, &s); err != nil {
			return nil, err
		}
		return newWeCom(s, opts)
	}
	return nil, fmt.Errorf("unknown channel kind %q (want one of %s)", kind, strings.Join(Kinds(), ", "))
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and trailing data.
func decodeStrict(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return errors.New("settings: missing (want a JSON object)")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("settings: %s: want a %s, got a JSON %s", te.Field, te.Type, te.Value)
		}
		// encoding/json words an unknown field as `json: unknown field "x"`.
		return fmt.Errorf("settings: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("settings: trailing data after the JSON object")
	}
	return nil
}

// checkURL parses a webhook URL: absolute http or https with a host.
func checkURL(field, raw string) (*url.URL, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("%s: missing", field)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: not a URL", field)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%s: want an http or https URL", field)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s: the URL has no host", field)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s: credentials in the URL are not supported", field)
	}
	return u, nil
}

// checkAddress parses one mail address.
func checkAddress(field, raw string) (*mail.Address, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("%s: missing", field)
	}
	a, err := mail.ParseAddress(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a mail address", field, raw)
	}
	return a, nil
}

// isToken reports whether s is an HTTP header name (an RFC 9110 token).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", r):
		default:
			return false
		}
	}
	return true
}
