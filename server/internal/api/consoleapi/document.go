package consoleapi

import (
	"encoding/json"
	"fmt"

	"github.com/gin-gonic/gin"
)

// DocumentVersion is the version the committed document carries, so that it does not change
// with every build.
const DocumentVersion = "console"

// Document is the console API's OpenAPI document as the web console's client is generated
// from it: indented JSON with a fixed version, built without a database.
func Document() ([]byte, error) {
	gin.SetMode(gin.ReleaseMode)
	a := New(Params{Version: DocumentVersion})
	a.Mount(gin.New())
	doc, err := json.MarshalIndent(a.OpenAPI(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("console api document: %w", err)
	}
	return append(doc, '\n'), nil
}
