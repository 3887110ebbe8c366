package consoleapi

import (
	"html/template"
	"net/http"
	"sort"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/gin-gonic/gin"
)

// docsPage lists the operations of the OpenAPI document on one self-contained page: no
// scripts, nothing loaded from elsewhere.
var docsPage = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
code{background:#f3f3f3;padding:0 .25em}.m{display:inline-block;min-width:4.5em;font-weight:bold}
section{border-top:1px solid #ddd;padding:.6em 0}small{color:#666}</style></head><body>
<h1>{{.Title}} <small>{{.Version}}</small></h1>
<p>{{.Description}}</p>
<p>The machine-readable document: <a href="{{.OpenAPI}}"><code>{{.OpenAPI}}</code></a> (OpenAPI {{.OpenAPIVersion}}), with every request and answer schema.</p>
{{range .Ops}}<section id="{{.ID}}"><div><span class="m">{{.Method}}</span><code>{{.Path}}</code> <small>{{.ID}}{{if .Public}}, no credentials{{end}}</small></div>
<div><b>{{.Summary}}</b> {{.Description}}</div>
<div><small>answers: {{.Statuses}}</small></div></section>
{{end}}</body></html>
`))

type docOp struct {
	ID, Method, Path, Summary, Description, Statuses string
	Public                                           bool
}

func (a *API) docs(c *gin.Context) {
	doc := a.api.OpenAPI()
	var ops []docOp
	for path, item := range doc.Paths {
		for _, mo := range []struct {
			m  string
			op *huma.Operation
		}{{"GET", item.Get}, {"POST", item.Post}, {"PUT", item.Put}, {"PATCH", item.Patch}, {"DELETE", item.Delete}} {
			if mo.op == nil {
				continue
			}
			var codes []string
			for code := range mo.op.Responses {
				codes = append(codes, code)
			}
			sort.Strings(codes)
			ops = append(ops, docOp{ID: mo.op.OperationID, Method: mo.m, Path: path, Summary: mo.op.Summary,
				Description: mo.op.Description, Statuses: strings.Join(codes, ", "), Public: len(mo.op.Security) == 0})
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Path != ops[j].Path {
			return ops[i].Path < ops[j].Path
		}
		return ops[i].Method < ops[j].Method
	})
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	c.Status(http.StatusOK)
	err := docsPage.Execute(c.Writer, map[string]any{"Title": doc.Info.Title, "Version": doc.Info.Version,
		"Description": doc.Info.Description, "OpenAPI": OpenAPIPath, "OpenAPIVersion": doc.OpenAPI, "Ops": ops})
	if err != nil {
		a.log.Error("docs page", "err", err)
	}
}
