package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/alert/notify"
)

// verifyRetryhub is how a receiver of the generic webhook checks a request: the HMAC over the
// timestamp, a dot and the raw body, and a fresh timestamp.
func verifyRetryhub(r *http.Request, secret string) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, false
	}
	ts := r.Header.Get("X-Retryhub-Timestamp")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	sec, err := strconv.ParseInt(ts, 10, 64)
	fresh := err == nil && time.Since(time.Unix(sec, 0)).Abs() < 5*time.Minute
	return body, fresh && hmac.Equal([]byte(want), []byte(r.Header.Get("X-Retryhub-Signature")))
}

func ExampleWebhookPayload() {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := verifyRetryhub(r, "shared-secret")
		fmt.Println("signature ok:", ok, "— kind test:", strings.Contains(string(body), `"kind":"test"`))
	}))
	defer receiver.Close()

	snd, err := notify.New(notify.KindWebhook,
		[]byte(`{"url":"`+receiver.URL+`/retryhub","secret":"shared-secret"}`), notify.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := snd.Send(context.Background(), notify.Message{Kind: notify.Test, Rule: "ops webhook"}); err != nil {
		fmt.Println(err)
	}
	// Output: signature ok: true — kind test: true
}
