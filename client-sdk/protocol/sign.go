package protocol

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// SignatureWindow is how far a request's timestamp may be from the receiver's clock. A receiver
// remembers each nonce it accepted for at least this long, so a captured request cannot be
// sent again inside the window.
const SignatureWindow = 5 * time.Minute

// Version is the signing scheme every request carries in HeaderProtocol. Version 2 signs the
// method, the path, the namespace, group and instance headers, a nonce, the timestamp and a
// digest of the body (see Sign).
const Version = "2"

// NonceLen is the length of a nonce: 32 lower-case hex characters (128 random bits).
const NonceLen = 32

// Signature errors, for errors.Is.
var (
	ErrMissingSignature = errors.New("missing signature, timestamp or nonce")
	ErrBadVersion       = errors.New("unsupported protocol version")
	ErrBadTimestamp     = errors.New("timestamp is not Unix milliseconds")
	ErrStaleTimestamp   = errors.New("timestamp outside the signature window")
	ErrBadNonce         = errors.New("nonce is not 32 hex characters")
	ErrBadSignature     = errors.New("signature does not match")
)

// Stamp is what a signed request says about itself in its headers: everything a receiver can
// check before it reads the body.
type Stamp struct {
	Method    string
	Path      string
	Namespace string
	Group     string
	Instance  string
	Nonce     string
	// Timestamp is the signing time in Unix milliseconds.
	Timestamp int64
	Signature string
}

// StampOf reads the stamp of r: its method, URL path and signing headers.
func StampOf(r *http.Request) Stamp {
	ts, _ := strconv.ParseInt(r.Header.Get(HeaderTimestamp), 10, 64)
	return Stamp{Method: r.Method, Path: r.URL.Path, Namespace: r.Header.Get(HeaderNamespace),
		Group: r.Header.Get(HeaderGroup), Instance: r.Header.Get(HeaderInstance), Nonce: r.Header.Get(HeaderNonce),
		Timestamp: ts, Signature: r.Header.Get(HeaderSignature)}
}

// Sign returns the hex HMAC-SHA256, keyed by token, of the canonical form of s and the body:
// the lines "retryhub2", method, path, namespace, group, instance, nonce and timestamp (Unix
// milliseconds in decimal), each ended by a newline, then the hex SHA-256 of the body.
// s.Signature is ignored.
func Sign(token string, s Stamp, body []byte) string {
	sum := sha256.Sum256(body)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write(canonical(s, sum[:]))
	return hex.EncodeToString(mac.Sum(nil))
}

func canonical(s Stamp, bodySum []byte) []byte {
	b := make([]byte, 0, 160+len(s.Path)+len(s.Namespace)+len(s.Group)+len(s.Instance))
	b = append(b, "retryhub"+Version+"\n"...)
	for _, f := range [...]string{s.Method, s.Path, s.Namespace, s.Group, s.Instance, s.Nonce} {
		b = append(b, f...)
		b = append(b, '\n')
	}
	b = strconv.AppendInt(b, s.Timestamp, 10)
	b = append(b, '\n')
	return hex.AppendEncode(b, bodySum)
}

// NewNonce returns a fresh random nonce.
func NewNonce() string {
	var b [NonceLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("protocol: no randomness for a nonce: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// SignRequest stamps r, whose namespace, group and instance headers are already set, with the
// protocol version, the current time, a fresh nonce and the signature of its method, path,
// those headers and body.
func SignRequest(r *http.Request, token string, body []byte, now time.Time) {
	r.Header.Set(HeaderProtocol, Version)
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(now.UnixMilli(), 10))
	r.Header.Set(HeaderNonce, NewNonce())
	s := StampOf(r)
	r.Header.Set(HeaderSignature, Sign(token, s, body))
}

// CheckStamp does the checks that need no token and no body: the protocol version, a
// signature, a well-formed nonce, and a timestamp within window of now. A receiver calls it
// before reading the body, so an unsigned or stale request costs it nothing. The error wraps
// one of the Err values above.
func CheckStamp(r *http.Request, now time.Time, window time.Duration) (Stamp, error) {
	if v := r.Header.Get(HeaderProtocol); v != Version {
		if v == "" {
			return Stamp{}, fmt.Errorf("%w: no %s header (this receiver speaks version %s)", ErrBadVersion, HeaderProtocol, Version)
		}
		return Stamp{}, fmt.Errorf("%w %q (this receiver speaks version %s)", ErrBadVersion, v, Version)
	}
	raw := r.Header.Get(HeaderTimestamp)
	s := StampOf(r)
	if raw == "" || s.Signature == "" || s.Nonce == "" {
		return s, ErrMissingSignature
	}
	if _, err := strconv.ParseInt(raw, 10, 64); err != nil {
		return s, fmt.Errorf("%w: %q", ErrBadTimestamp, raw)
	}
	if !validNonce(s.Nonce) {
		return s, ErrBadNonce
	}
	skew := now.Sub(time.UnixMilli(s.Timestamp))
	if skew > window || skew < -window {
		return s, fmt.Errorf("%w: %s apart, the window is %s", ErrStaleTimestamp, skew.Round(time.Second), window)
	}
	return s, nil
}

func validNonce(n string) bool {
	if len(n) != NonceLen {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Verify checks s's signature against token and body.
func Verify(token string, s Stamp, body []byte) error {
	want, err := hex.DecodeString(s.Signature)
	if err != nil {
		return ErrBadSignature
	}
	sum := sha256.Sum256(body)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write(canonical(s, sum[:]))
	if !hmac.Equal(mac.Sum(nil), want) {
		return ErrBadSignature
	}
	return nil
}

// VerifyRequest is CheckStamp then Verify, for a receiver that has the body already. It does
// not remember nonces: the receiver refuses a nonce it has seen within the window.
func VerifyRequest(r *http.Request, token string, body []byte, now time.Time, window time.Duration) (Stamp, error) {
	s, err := CheckStamp(r, now, window)
	if err != nil {
		return s, err
	}
	return s, Verify(token, s, body)
}
