package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// SignatureWindow is how far a request's timestamp may be from the receiver's clock.
const SignatureWindow = 5 * time.Minute

// Signature errors, for errors.Is.
var (
	ErrMissingSignature = errors.New("missing signature or timestamp")
	ErrBadTimestamp     = errors.New("timestamp is not Unix milliseconds")
	ErrStaleTimestamp   = errors.New("timestamp outside the signature window")
	ErrBadSignature     = errors.New("signature does not match")
)

// Sign returns the hex HMAC-SHA256, keyed by token, of the timestamp (Unix milliseconds in
// decimal), a newline, and the body.
func Sign(token string, timestampMillis int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(token))
	var buf [20]byte
	mac.Write(strconv.AppendInt(buf[:0], timestampMillis, 10))
	mac.Write([]byte{'\n'})
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// SignRequest stamps h with the current time and the signature of body.
func SignRequest(h http.Header, token string, body []byte, now time.Time) {
	ts := now.UnixMilli()
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(token, ts, body))
}

// Verify checks a timestamp header value and a signature against body and token, allowing
// window of clock difference either way. The error wraps one of the Err values above.
func Verify(token, timestamp, signature string, body []byte, now time.Time, window time.Duration) error {
	if timestamp == "" || signature == "" {
		return ErrMissingSignature
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrBadTimestamp, timestamp)
	}
	skew := now.Sub(time.UnixMilli(ts))
	if skew > window || skew < -window {
		return fmt.Errorf("%w: %s apart, the window is %s", ErrStaleTimestamp, skew.Round(time.Second), window)
	}
	want, err := hex.DecodeString(signature)
	if err != nil {
		return ErrBadSignature
	}
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'\n'})
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), want) {
		return ErrBadSignature
	}
	return nil
}

// VerifyRequest checks the signature headers of h against body.
func VerifyRequest(h http.Header, token string, body []byte, now time.Time) error {
	return Verify(token, h.Get(HeaderTimestamp), h.Get(HeaderSignature), body, now, SignatureWindow)
}
