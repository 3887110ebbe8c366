package protocol

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func signed(now time.Time, body []byte) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "http://server"+PathReports, nil)
	r.Header.Set(HeaderNamespace, "shop")
	r.Header.Set(HeaderGroup, "orders")
	r.Header.Set(HeaderInstance, "host-1")
	SignRequest(r, "secret", body, now)
	return r
}

func TestSignVerify(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"items":[]}`)
	if _, err := VerifyRequest(signed(now, body), "secret", body, now.Add(4*time.Minute), SignatureWindow); err != nil {
		t.Fatalf("a good signature was refused: %v", err)
	}
	if a, b := signed(now, body), signed(now, body); a.Header.Get(HeaderNonce) == b.Header.Get(HeaderNonce) {
		t.Fatal("two requests got the same nonce")
	}
	cases := []struct {
		name   string
		token  string
		body   []byte
		change func(r *http.Request)
		now    time.Time
		want   error
	}{
		{"wrong token", "other", body, nil, now, ErrBadSignature},
		{"changed body", "secret", []byte(`{"items":[{}]}`), nil, now, ErrBadSignature},
		{"changed timestamp", "secret", body, func(r *http.Request) {
			r.Header.Set(HeaderTimestamp, strconv.FormatInt(now.UnixMilli()+1, 10))
		}, now, ErrBadSignature},
		{"other path", "secret", body, func(r *http.Request) { r.URL.Path = PathRegister }, now, ErrBadSignature},
		{"other method", "secret", body, func(r *http.Request) { r.Method = http.MethodPut }, now, ErrBadSignature},
		{"other namespace", "secret", body, func(r *http.Request) { r.Header.Set(HeaderNamespace, "x") }, now, ErrBadSignature},
		{"other group", "secret", body, func(r *http.Request) { r.Header.Set(HeaderGroup, "x") }, now, ErrBadSignature},
		{"other instance", "secret", body, func(r *http.Request) { r.Header.Set(HeaderInstance, "host-2") }, now, ErrBadSignature},
		{"other nonce", "secret", body, func(r *http.Request) { r.Header.Set(HeaderNonce, NewNonce()) }, now, ErrBadSignature},
		{"not hex", "secret", body, func(r *http.Request) { r.Header.Set(HeaderSignature, "zz") }, now, ErrBadSignature},
		{"missing signature", "secret", body, func(r *http.Request) { r.Header.Del(HeaderSignature) }, now, ErrMissingSignature},
		{"missing timestamp", "secret", body, func(r *http.Request) { r.Header.Del(HeaderTimestamp) }, now, ErrMissingSignature},
		{"missing nonce", "secret", body, func(r *http.Request) { r.Header.Del(HeaderNonce) }, now, ErrMissingSignature},
		{"short nonce", "secret", body, func(r *http.Request) { r.Header.Set(HeaderNonce, "abc") }, now, ErrBadNonce},
		{"no version", "secret", body, func(r *http.Request) { r.Header.Del(HeaderProtocol) }, now, ErrBadVersion},
		{"old version", "secret", body, func(r *http.Request) { r.Header.Set(HeaderProtocol, "1") }, now, ErrBadVersion},
		{"timestamp not a number", "secret", body, func(r *http.Request) { r.Header.Set(HeaderTimestamp, "yesterday") }, now, ErrBadTimestamp},
		{"too old", "secret", body, nil, now.Add(6 * time.Minute), ErrStaleTimestamp},
		{"from the future", "secret", body, nil, now.Add(-6 * time.Minute), ErrStaleTimestamp},
	}
	for _, c := range cases {
		r := signed(now, body)
		if c.change != nil {
			c.change(r)
		}
		_, err := VerifyRequest(r, c.token, c.body, c.now, SignatureWindow)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestRules(t *testing.T) {
	for _, ok := range []string{"orders", "send-email", "a.b_c", "X1"} {
		if !ValidName(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "-x", "has space", "ünï", "a:b", string(make([]byte, 65))} {
		if ValidName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if !ValidInstanceID("host-1:7070") || ValidInstanceID("") || ValidInstanceID("a b") {
		t.Error("instance id rule")
	}
	if CheckKey("k") != nil || CheckKey("") == nil || CheckKey(string(make([]byte, MaxKeyLen+1))) == nil || CheckKey("\xff") == nil ||
		CheckKey("k ") == nil || CheckKey(" k") != nil {
		t.Error("key rule")
	}
}
