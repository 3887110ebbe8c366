package protocol

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// FuzzVerify checks the signature scheme against arbitrary headers and bodies: a request
// signed with the token always passes CheckStamp and Verify; any change to its body, to a
// signed header or to the signature, or a check with another token, fails; and a request whose
// headers come from the input, unsigned, never verifies (it would have to guess the HMAC).
func FuzzVerify(f *testing.F) {
	f.Add("secret", "shop", "orders", "host-1", "/api/v1/client/reports",
		[]byte(`{"items":[{"scene":"send-email","idempotency_key":"o-1","args":{"to":"a@b.c"},"error":"timeout","local_attempts":3}]}`),
		"2", "1767225600000", "0123456789abcdef0123456789abcdef", "00")
	f.Add("0123456789abcdef0123456789", "default", "default", "", "/api/v1/client/register",
		[]byte(`{"instance_id":"web-1","executor_url":"http://10.0.0.5:7070/retryhub/execute","capacity":16}`),
		"2", "", "", "")
	f.Add("t", "", "", "", "/", []byte{}, "1", "x", "zz", "not-hex")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, token, namespace, group, instance, path string, body []byte,
		version, timestamp, nonce, signature string) {
		req := func() *http.Request {
			r, err := http.NewRequest(http.MethodPost, "http://server/", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			r.URL.Path = path
			r.Header[HeaderNamespace] = []string{namespace}
			r.Header[HeaderGroup] = []string{group}
			r.Header[HeaderInstance] = []string{instance}
			return r
		}

		// Unsigned: the fuzzer's own headers, never a match, whatever CheckStamp says.
		r := req()
		r.Header[HeaderProtocol] = []string{version}
		r.Header[HeaderTimestamp] = []string{timestamp}
		r.Header[HeaderNonce] = []string{nonce}
		r.Header[HeaderSignature] = []string{signature}
		if s, err := VerifyRequest(r, token, body, now, SignatureWindow); err == nil {
			// Only an input that carries the right HMAC could pass: that is Sign's output.
			if Sign(token, s, body) != signature {
				t.Fatalf("an unsigned request verified: %+v", s)
			}
		}
		if _, err := CheckStamp(r, now, SignatureWindow); err != nil && !errors.Is(err, ErrBadVersion) &&
			!errors.Is(err, ErrMissingSignature) && !errors.Is(err, ErrBadTimestamp) &&
			!errors.Is(err, ErrBadNonce) && !errors.Is(err, ErrStaleTimestamp) {
			t.Fatalf("CheckStamp error %v wraps none of the protocol's errors", err)
		}

		// Signed with the token: it verifies, and only as it was signed.
		r = req()
		SignRequest(r, token, body, now)
		s, err := VerifyRequest(r, token, body, now, SignatureWindow)
		if err != nil {
			t.Fatalf("a signed request failed: %v (stamp %+v)", err, s)
		}
		if s.Namespace != namespace || s.Group != group || s.Instance != instance || s.Path != path {
			t.Fatalf("the stamp %+v does not say what was signed", s)
		}
		if Verify(token+"x", s, body) == nil {
			t.Fatal("verified under another token")
		}
		if Verify(token, s, append(bytes.Clone(body), 'x')) == nil {
			t.Fatal("verified with a byte appended to the body")
		}
		if len(body) > 0 {
			flipped := bytes.Clone(body)
			flipped[len(flipped)/2] ^= 0x01
			if Verify(token, s, flipped) == nil {
				t.Fatal("verified with a bit of the body flipped")
			}
		}
		for name, edit := range map[string]func(*Stamp){
			"namespace": func(s *Stamp) { s.Namespace += "x" },
			"group":     func(s *Stamp) { s.Group += "x" },
			"instance":  func(s *Stamp) { s.Instance += "x" },
			"path":      func(s *Stamp) { s.Path += "x" },
			"method":    func(s *Stamp) { s.Method = http.MethodPut },
			"timestamp": func(s *Stamp) { s.Timestamp++ },
			"nonce":     func(s *Stamp) { s.Nonce = NewNonce() },
			"signature": func(s *Stamp) { s.Signature = flipHex(s.Signature) },
		} {
			e := s
			edit(&e)
			if Verify(token, e, body) == nil {
				t.Fatalf("verified with the %s changed: %+v", name, e)
			}
		}
		if _, err := CheckStamp(r, now.Add(SignatureWindow+time.Second), SignatureWindow); !errors.Is(err, ErrStaleTimestamp) {
			t.Fatalf("a request signed past the window: %v, want ErrStaleTimestamp", err)
		}
		if got := r.Header.Get(HeaderTimestamp); got != strconv.FormatInt(now.UnixMilli(), 10) {
			t.Fatalf("timestamp header %q", got)
		}
	})
}

// flipHex changes the last hex digit of s to another one.
func flipHex(s string) string {
	last := s[len(s)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return s[:len(s)-1] + string(repl)
}
