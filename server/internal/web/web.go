// Package web serves the console's files, embedded in the server binary.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the console at the root path.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has the folder
	}
	return http.FileServer(http.FS(sub))
}
