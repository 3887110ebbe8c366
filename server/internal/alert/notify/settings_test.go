package notify

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestNewRefusesBadSettings(t *testing.T) {
	email := `"from":"a@example.com","to":["b@example.com"]`
	for _, tc := range []struct {
		name, kind, settings, want string
	}{
		{"unknown kind", "sms", `{}`, `unknown channel kind "sms"`},
		{"no settings", KindEmail, ``, "settings: missing"},
		{"not an object", KindEmail, `[1]`, "settings:"},
		{"unknown field", KindEmail, `{"host":"h",` + email + `,"pasword":"x"}`, `unknown field "pasword"`},
		{"wrong type", KindEmail, `{"host":"h","port":"25",` + email + `}`, "settings: port: want a int, got a JSON string"},
		{"trailing data", KindEmail, `{"host":"h",` + email + `} {}`, "trailing data"},
		{"missing host", KindEmail, `{` + email + `}`, "host: missing"},
		{"host with port", KindEmail, `{"host":"smtp.example.com:25",` + email + `}`, "host: \"smtp.example.com:25\" is not a host name"},
		{"bad port", KindEmail, `{"host":"h","port":70000,` + email + `}`, "port: 70000 is not a TCP port"},
		{"bad tls", KindEmail, `{"host":"h","tls":"ssl",` + email + `}`, `tls: "ssl" is not one of none, starttls, tls`},
		{"password without user", KindEmail, `{"host":"h","password":"p",` + email + `}`, "username: missing"},
		{"missing from", KindEmail, `{"host":"h","to":["b@example.com"]}`, "from: missing"},
		{"bad from", KindEmail, `{"host":"h","from":"nobody","to":["b@example.com"]}`, `from: "nobody" is not a mail address`},
		{"no recipients", KindEmail, `{"host":"h","from":"a@example.com","to":[]}`, "to: no recipients"},
		{"bad recipient", KindEmail, `{"host":"h","from":"a@example.com","to":["b@example.com","oops"]}`, `to[1]: "oops" is not a mail address`},
		{"bad CA", KindEmail, `{"host":"h","ca_pem":"junk",` + email + `}`, "ca_pem: no PEM certificate"},
		{"webhook without url", KindWebhook, `{}`, "url: missing"},
		{"webhook ftp", KindWebhook, `{"url":"ftp://example.com/x"}`, "url: want an http or https URL"},
		{"webhook relative", KindWebhook, `{"url":"/hook"}`, "url: want an http or https URL"},
		{"webhook user info", KindWebhook, `{"url":"https://u:p@example.com/"}`, "url: credentials in the URL"},
		{"webhook bad header", KindWebhook, `{"url":"https://example.com/","headers":{"a b":"c"}}`, `headers: "a b" is not a header name`},
		{"webhook reserved header", KindWebhook, `{"url":"https://example.com/","headers":{"x-retryhub-signature":"c"}}`, "headers: X-Retryhub-Signature is set by the server"},
		{"webhook header newline", KindWebhook, `{"url":"https://example.com/","headers":{"X-A":"b\r\nX-B: c"}}`, "headers: the value of X-A has a line break"},
		{"dingtalk without token", KindDingTalk, `{"url":"https://oapi.dingtalk.com/robot/send"}`, "url: no access_token"},
		{"lark without path", KindLark, `{"url":"https://open.feishu.cn"}`, "url: no bot path"},
		{"wecom without key", KindWeCom, `{"url":"https://qyapi.weixin.qq.com/cgi-bin/webhook/send"}`, "url: no key"},
		{"wecom secret", KindWeCom, `{"url":"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k","secret":"s"}`, `unknown field "secret"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.kind, json.RawMessage(tc.settings), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewAcceptsGoodSettings(t *testing.T) {
	for kind, s := range map[string]string{
		KindEmail:    `{"host":"smtp.example.com","from":"Alerts <a@example.com>","to":["b@example.com"]}`,
		KindWebhook:  `{"url":"https://example.com/hook","secret":"s","headers":{"Authorization":"Bearer x"}}`,
		KindDingTalk: `{"url":"https://oapi.dingtalk.com/robot/send?access_token=t","secret":"SEC1"}`,
		KindLark:     `{"url":"https://open.feishu.cn/open-apis/bot/v2/hook/abc","secret":"s"}`,
		KindWeCom:    `{"url":"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"}`,
	} {
		if _, err := New(kind, json.RawMessage(s), Options{}); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	snd, err := New(KindEmail, json.RawMessage(`{"host":"smtp.example.com","tls":"tls","from":"a@example.com","to":["b@example.com"]}`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e := snd.(*email); e.s.Port != 465 {
		t.Errorf("implicit TLS port defaults to %d, want 465", e.s.Port)
	}
}
