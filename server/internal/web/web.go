// Package web serves the console's files, embedded in the server binary: the build that
// `make web` writes to static/ (committed, so a build of the server needs Go alone).
//
// Rules: a path that names a file serves it; any other path serves index.html, so the
// console's history-mode routes load the page (the caller keeps /api/ out of here). Hashed
// assets under /assets/ are cached for a year as immutable; index.html is revalidated every
// time, so a new build is picked up at once. When the client accepts gzip and the build holds
// a precompressed copy (name.gz), that copy is sent.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed all:static
var files embed.FS

// Cache-Control values.
const (
	// ImmutableCache is for files whose names carry their content's hash.
	ImmutableCache = "public, max-age=31536000, immutable"
	// NoCache is for index.html and other files without a hash in their name.
	NoCache = "no-cache"
)

// Handler serves the embedded console.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has the folder
	}
	return NewHandler(sub)
}

// NewHandler serves the console held in root (the build's folder).
func NewHandler(root fs.FS) http.Handler {
	return &handler{root: root}
}

type handler struct {
	root  fs.FS
	etags sync.Map // file name → ETag
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" || name == "index.html" || !h.isFile(name) {
		if strings.HasPrefix(name, "assets/") {
			// A hashed asset that is not in this build (an old page asking for its chunks):
			// a 404, never the page, which the browser would take for a script.
			http.NotFound(w, r)
			return
		}
		name = "index.html"
	}
	if strings.HasPrefix(name, "assets/") {
		w.Header().Set("Cache-Control", ImmutableCache)
	} else {
		w.Header().Set("Cache-Control", NoCache)
	}
	h.serve(w, r, name)
}

func (h *handler) isFile(name string) bool {
	st, err := fs.Stat(h.root, name)
	return err == nil && !st.IsDir()
}

// serve sends the file, or its .gz copy when the client takes gzip.
func (h *handler) serve(w http.ResponseWriter, r *http.Request, name string) {
	w.Header().Add("Vary", "Accept-Encoding")
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	send := name
	if acceptsGzip(r) && h.isFile(name+".gz") {
		send = name + ".gz"
		w.Header().Set("Content-Encoding", "gzip")
	}
	data, err := fs.ReadFile(h.root, send)
	if err != nil {
		http.Error(w, "console file unreadable", http.StatusInternalServerError)
		return
	}
	// Embedded files have no modification time; ServeContent handles HEAD, ranges and
	// If-None-Match against the content's ETag.
	w.Header().Set("ETag", h.etag(send, data))
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// etag is the file's content hash, computed once per file.
func (h *handler) etag(name string, data []byte) string {
	if v, ok := h.etags.Load(name); ok {
		return v.(string)
	}
	sum := sha256.Sum256(data)
	tag := `"` + hex.EncodeToString(sum[:12]) + `"`
	h.etags.Store(name, tag)
	return tag
}

// acceptsGzip reports whether the request's Accept-Encoding takes gzip (not with q=0).
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") || strings.TrimSpace(coding) == "*" {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
