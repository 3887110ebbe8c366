package notify

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

func decode(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return v
}

func TestRedactBlanksSecrets(t *testing.T) {
	got := decode(t, Redact(KindEmail, json.RawMessage(
		`{"host":"smtp.example.com","username":"u","password":"hunter2","from":"a@example.com","to":["b@example.com"]}`)))
	if got["password"] != "" || got["password_set"] != true || got["host"] != "smtp.example.com" || got["username"] != "u" {
		t.Errorf("email redacted to %v", got)
	}
	got = decode(t, Redact(KindEmail, json.RawMessage(`{"host":"h"}`)))
	if got["password"] != "" || got["password_set"] != false {
		t.Errorf("email without password redacted to %v", got)
	}
	got = decode(t, Redact(KindDingTalk, json.RawMessage(`{"url":"https://oapi.dingtalk.com/robot/send?access_token=t","secret":"SEC1"}`)))
	if got["url"] != "" || got["url_set"] != true || got["secret"] != "" || got["secret_set"] != true {
		t.Errorf("dingtalk redacted to %v", got)
	}
	raw := Redact(KindWebhook, json.RawMessage(`{"url":"https://example.com/h","secret":"s","headers":{"Authorization":"Bearer x"}}`))
	got = decode(t, raw)
	if got["url"] != "https://example.com/h" || got["secret"] != "" || got["headers_set"] != true ||
		path(got, "headers", "Authorization") != "" {
		t.Errorf("webhook redacted to %v", got)
	}
	if bytes.Contains(raw, []byte("Bearer")) {
		t.Errorf("redacted webhook shows a header value: %s", raw)
	}
	if got := string(Redact(KindEmail, json.RawMessage(`not json`))); got != "{}" {
		t.Errorf("bad settings redacted to %s", got)
	}
}

func TestMergeKeepsSecretsAnEditLeavesEmpty(t *testing.T) {
	stored := json.RawMessage(`{"host":"old.example.com","username":"u","password":"hunter2","from":"a@example.com","to":["b@example.com"]}`)

	// The console sends back what Redact showed, with one plain field changed.
	edit := decode(t, Redact(KindEmail, stored))
	edit["host"] = "new.example.com"
	merged, err := Merge(KindEmail, stored, settings(t, edit))
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, merged)
	if got["host"] != "new.example.com" || got["password"] != "hunter2" {
		t.Errorf("merged %v", got)
	}
	if _, ok := got["password_set"]; ok {
		t.Errorf("the marker survived the merge: %v", got)
	}
	if _, err := New(KindEmail, merged, Options{}); err != nil {
		t.Errorf("merged settings refused: %v", err)
	}

	// A new password replaces the stored one.
	edit["password"] = "correct horse"
	merged, _ = Merge(KindEmail, stored, settings(t, edit))
	if got := decode(t, merged); got["password"] != "correct horse" {
		t.Errorf("new password: %v", got)
	}

	// "_set": false with an empty value clears it.
	edit["password"], edit["password_set"], edit["username"] = "", false, ""
	merged, _ = Merge(KindEmail, stored, settings(t, edit))
	if got := decode(t, merged); got["password"] != nil {
		t.Errorf("cleared password: %v", got)
	}

	// A new channel has nothing stored.
	merged, err = Merge(KindLark, nil, json.RawMessage(`{"url":"https://open.feishu.cn/open-apis/bot/v2/hook/x","secret":""}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := decode(t, merged); got["secret"] != nil || got["url"] == nil {
		t.Errorf("new lark: %v", got)
	}
	if _, err := Merge(KindLark, nil, json.RawMessage(`[]`)); err == nil {
		t.Error("Merge accepted an array")
	}
}

func TestMergeWebhookHeaders(t *testing.T) {
	stored := json.RawMessage(`{"url":"https://example.com/h","secret":"s","headers":{"Authorization":"Bearer x","X-Team":"pay"}}`)
	edit := json.RawMessage(`{"url":"https://example.com/h","secret":"","headers":{"Authorization":"","X-New":"1"}}`)
	merged, err := Merge(KindWebhook, stored, edit)
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, merged)
	h, _ := got["headers"].(map[string]any)
	if got["secret"] != "s" || len(h) != 2 || h["Authorization"] != "Bearer x" || h["X-New"] != "1" {
		t.Errorf("merged %v", got)
	}
}

func TestSealer(t *testing.T) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte(`{"password":"hunter2"}`)
	sealed, err := s.Seal(plain)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sealed, "v1:") || strings.Contains(sealed, "hunter2") {
		t.Fatalf("sealed %q", sealed)
	}
	again, _ := s.Seal(plain)
	if again == sealed {
		t.Error("two seals of the same text are equal: the nonce is not random")
	}
	got, err := s.Open(sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}

	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, "v1:"))
	for i := range raw {
		tampered := bytes.Clone(raw)
		tampered[i] ^= 0x01
		if _, err := s.Open("v1:" + base64.StdEncoding.EncodeToString(tampered)); err == nil {
			t.Fatalf("Open accepted a change in byte %d", i)
		}
	}
	for _, bad := range []string{"", "v2:" + strings.TrimPrefix(sealed, "v1:"), "v1:!!!", "v1:AAAA", `{"password":"x"}`} {
		if _, err := s.Open(bad); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}

	other := bytes.Clone(key)
	other[0] ^= 0xff
	s2, _ := NewSealer(other)
	if _, err := s2.Open(sealed); err == nil || !strings.Contains(err.Error(), "wrong key") {
		t.Errorf("Open with another key: %v", err)
	}
	if _, err := NewSealer(key[:16]); err == nil {
		t.Error("NewSealer accepted a 16-byte key")
	}
}

func TestParseKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb}, KeySize) // base64 of it uses + and / (or - and _)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		got, err := ParseKey(" " + enc.EncodeToString(key) + "\n")
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("ParseKey(%s) = %x, %v", enc.EncodeToString(key), got, err)
		}
	}
	for in, want := range map[string]string{
		"":                   "empty",
		"not base64 at all!": "not base64",
		base64.StdEncoding.EncodeToString(key[:16]): "16 bytes",
	} {
		if _, err := ParseKey(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%q) = %v, want %q", in, err, want)
		}
	}
}
