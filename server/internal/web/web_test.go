package web_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/retryhub/retryhub/server/internal/web"
)

const page = `<!doctype html><script type="module" src="/assets/index-abc123.js"></script>`

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testFS(t *testing.T) fs.FS {
	script := strings.Repeat("console.log('retryhub');", 100)
	return fstest.MapFS{
		"index.html":             {Data: []byte(page)},
		"assets/index-abc123.js": {Data: []byte(script)},
		"assets/index-abc123.js.gz": {
			Data: gz(t, script)},
		"assets/style-def456.css": {Data: []byte("body{}")},
		"favicon.svg":             {Data: []byte("<svg/>")},
	}
}

func get(t *testing.T, h http.Handler, method, path string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestIndexAndHistoryFallback(t *testing.T) {
	h := web.NewHandler(testFS(t))
	for _, path := range []string{"/", "/index.html", "/tasks", "/tasks/42", "/alerts/rules?x=1", "/deep/unknown/path"} {
		r := get(t, h, http.MethodGet, path, nil)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", path, r.StatusCode)
		}
		if got := body(t, r); got != page {
			t.Errorf("GET %s: body %q, want index.html", path, got)
		}
		if cc := r.Header.Get("Cache-Control"); cc != web.NoCache {
			t.Errorf("GET %s: Cache-Control %q, want %q", path, cc, web.NoCache)
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
	}
}

func TestAssetsAreImmutable(t *testing.T) {
	h := web.NewHandler(testFS(t))
	r := get(t, h, http.MethodGet, "/assets/style-def456.css", nil)
	if r.StatusCode != http.StatusOK || body(t, r) != "body{}" {
		t.Fatalf("asset: status %d", r.StatusCode)
	}
	if cc := r.Header.Get("Cache-Control"); cc != web.ImmutableCache {
		t.Errorf("asset Cache-Control %q, want %q", cc, web.ImmutableCache)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("asset Content-Type %q", ct)
	}
	// A file outside assets/ has no hash in its name: revalidated.
	if cc := get(t, h, http.MethodGet, "/favicon.svg", nil).Header.Get("Cache-Control"); cc != web.NoCache {
		t.Errorf("favicon Cache-Control %q, want %q", cc, web.NoCache)
	}
	// A missing asset is a 404, not the page (a browser would run the page as a script).
	if r := get(t, h, http.MethodGet, "/assets/index-old999.js", nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: status %d, want 404", r.StatusCode)
	}
}

func TestGzipWhenAccepted(t *testing.T) {
	h := web.NewHandler(testFS(t))
	plain := get(t, h, http.MethodGet, "/assets/index-abc123.js", nil)
	want := body(t, plain)
	if plain.Header.Get("Content-Encoding") != "" {
		t.Fatalf("no Accept-Encoding: Content-Encoding %q", plain.Header.Get("Content-Encoding"))
	}
	if !strings.Contains(plain.Header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("Vary %q, want Accept-Encoding", plain.Header.Get("Vary"))
	}
	r := get(t, h, http.MethodGet, "/assets/index-abc123.js", http.Header{"Accept-Encoding": {"br, gzip;q=0.8"}})
	if r.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Accept-Encoding gzip: Content-Encoding %q", r.Header.Get("Content-Encoding"))
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("gzip Content-Type %q, want the script's", ct)
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Error("the gzip copy does not unpack to the file")
	}
	// gzip;q=0 refuses it.
	if r := get(t, h, http.MethodGet, "/assets/index-abc123.js", http.Header{"Accept-Encoding": {"gzip;q=0"}}); r.Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0: Content-Encoding %q", r.Header.Get("Content-Encoding"))
	}
}

func TestRevalidation(t *testing.T) {
	h := web.NewHandler(testFS(t))
	r := get(t, h, http.MethodGet, "/", nil)
	tag := r.Header.Get("ETag")
	if tag == "" {
		t.Fatal("index.html has no ETag")
	}
	if r := get(t, h, http.MethodGet, "/", http.Header{"If-None-Match": {tag}}); r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: status %d, want 304", r.StatusCode)
	}
	if r := get(t, h, http.MethodHead, "/tasks", nil); r.StatusCode != http.StatusOK || body(t, r) != "" {
		t.Errorf("HEAD: status %d", r.StatusCode)
	}
	if r := get(t, h, http.MethodPost, "/", nil); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", r.StatusCode)
	}
}

// TestEmbeddedBuild checks the committed build: the page loads its scripts from /assets/, and
// every file it names is served.
func TestEmbeddedBuild(t *testing.T) {
	h := web.Handler()
	r := get(t, h, http.MethodGet, "/", nil)
	html := body(t, r)
	if r.StatusCode != http.StatusOK || !strings.Contains(html, `<div id="app">`) {
		t.Fatalf("embedded index.html: status %d, body %.200q", r.StatusCode, html)
	}
	refs := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(html, -1)
	if len(refs) == 0 {
		t.Fatal("index.html names no asset: run `make web`")
	}
	for _, m := range refs {
		a := get(t, h, http.MethodGet, m[1], http.Header{"Accept-Encoding": {"gzip"}})
		if a.StatusCode != http.StatusOK || a.Header.Get("Cache-Control") != web.ImmutableCache {
			t.Errorf("%s: status %d, Cache-Control %q", m[1], a.StatusCode, a.Header.Get("Cache-Control"))
		}
	}
}
