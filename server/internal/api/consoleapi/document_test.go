package consoleapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
)

// committedDocument is the document the web console's typed client is generated from.
var committedDocument = filepath.Join("..", "..", "..", "..", "web", "src", "api", "openapi.json")

func canonical(t *testing.T, what string, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCommittedDocumentIsCurrent fails when the console API changed but the web console's
// copy of its document (and so its typed client) was not regenerated.
func TestCommittedDocumentIsCurrent(t *testing.T) {
	committed, err := os.ReadFile(committedDocument)
	if err != nil {
		t.Fatalf("read the committed document: %v (run `make web`)", err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	consoleapi.New(consoleapi.Params{Version: consoleapi.DocumentVersion}).Mount(r)
	srv := httptest.NewServer(r)
	defer srv.Close()
	res, err := http.Get(srv.URL + consoleapi.OpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	served, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, %v", consoleapi.OpenAPIPath, res.StatusCode, err)
	}
	if !bytes.Equal(canonical(t, "served", served), canonical(t, "committed", committed)) {
		t.Fatalf("web/src/api/openapi.json differs from the document the console API serves: run `make web` " +
			"(it regenerates the document, the web's typed client and the built console) and commit the result")
	}
	doc, err := consoleapi.Document()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc, committed) {
		t.Fatal("web/src/api/openapi.json is not what retryhub-openapi writes: run `make web`")
	}
}
