package testkit

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/retry"
)

// Call sends a client API request to base+path, signed as the group (with its token), and
// returns the answer's status and body. body is sent as it is when it is []byte, as nothing when
// it is nil, and as JSON otherwise.
func Call(base string, g retry.Group, method, path string, body any) (int, []byte, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			return 0, nil, err
		}
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(raw))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set(protocol.HeaderNamespace, g.Namespace)
	req.Header.Set(protocol.HeaderGroup, g.Name)
	protocol.SignRequest(req, g.Token, raw, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, nil
}

// Register registers an instance of the group with the server at base, failing the test unless
// the server accepts it.
func Register(t testing.TB, base string, g retry.Group, req protocol.RegisterRequest) {
	t.Helper()
	status, body, err := Call(base, g, http.MethodPost, protocol.PathRegister, req)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK {
		t.Fatalf("register: %d %s", status, body)
	}
}
