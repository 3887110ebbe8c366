package protocol

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"items":[]}`)
	h := http.Header{}
	SignRequest(h, "secret", body, now)

	if err := VerifyRequest(h, "secret", body, now.Add(4*time.Minute)); err != nil {
		t.Fatalf("a good signature was refused: %v", err)
	}
	cases := []struct {
		name  string
		token string
		body  []byte
		ts    string
		sig   string
		now   time.Time
		want  error
	}{
		{"wrong token", "other", body, h.Get(HeaderTimestamp), h.Get(HeaderSignature), now, ErrBadSignature},
		{"changed body", "secret", []byte(`{"items":[{}]}`), h.Get(HeaderTimestamp), h.Get(HeaderSignature), now, ErrBadSignature},
		{"changed timestamp", "secret", body, strconv.FormatInt(now.UnixMilli()+1, 10), h.Get(HeaderSignature), now, ErrBadSignature},
		{"not hex", "secret", body, h.Get(HeaderTimestamp), "zz", now, ErrBadSignature},
		{"missing signature", "secret", body, h.Get(HeaderTimestamp), "", now, ErrMissingSignature},
		{"missing timestamp", "secret", body, "", h.Get(HeaderSignature), now, ErrMissingSignature},
		{"timestamp not a number", "secret", body, "yesterday", h.Get(HeaderSignature), now, ErrBadTimestamp},
		{"too old", "secret", body, h.Get(HeaderTimestamp), h.Get(HeaderSignature), now.Add(6 * time.Minute), ErrStaleTimestamp},
		{"from the future", "secret", body, h.Get(HeaderTimestamp), h.Get(HeaderSignature), now.Add(-6 * time.Minute), ErrStaleTimestamp},
	}
	for _, c := range cases {
		err := Verify(c.token, c.ts, c.sig, c.body, c.now, SignatureWindow)
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
