package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// Every answer under /api/ is the JSON error body, whatever the method; before, a GET or HEAD of
// an unknown /api/ path fell through to the console's file server and got a plain-text 404.
func TestUnknownAPIPathsAnswerJSON(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		for _, path := range []string{"/api/", "/api/v1/nothing", "/api/v1/client/nothing", "/api/v1/console/tasks"} {
			for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
				req, err := http.NewRequest(method, node.URL()+path, strings.NewReader("{}"))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var eb protocol.ErrorBody
				decodeErr := json.NewDecoder(resp.Body).Decode(&eb)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Errorf("%s %s: %d %q, want 404 JSON", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
					continue
				}
				if method != http.MethodHead && (decodeErr != nil || eb.Error.Code != "not_found" || eb.Error.Message == "") {
					t.Errorf("%s %s: body %+v (%v), want the not_found error body", method, path, eb, decodeErr)
				}
			}
		}
		// The console is still served outside /api/.
		resp, err := http.Get(node.URL() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("console: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
}
