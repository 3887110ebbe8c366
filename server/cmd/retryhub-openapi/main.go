// Command retryhub-openapi writes the console API's OpenAPI document, the source of the web
// console's typed client, without a database: `retryhub-openapi -o web/src/api/openapi.json`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
)

func main() {
	out := flag.String("o", "-", "where to write the document (- for standard output)")
	flag.Parse()
	doc, err := consoleapi.Document()
	if err != nil {
		fmt.Fprintln(os.Stderr, "retryhub-openapi:", err)
		os.Exit(1)
	}
	if *out == "-" {
		_, err = os.Stdout.Write(doc)
	} else {
		err = os.WriteFile(*out, doc, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "retryhub-openapi:", err)
		os.Exit(1)
	}
}
