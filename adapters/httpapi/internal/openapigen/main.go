// Command openapigen writes the opsbox API's OpenAPI document to the file
// named by its argument. It runs from `go generate` in package httpapi.
package main

import (
	"fmt"
	"os"

	"github.com/opsbox/opsbox/adapters/httpapi"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: openapigen FILE")
		os.Exit(2)
	}
	spec, err := httpapi.OpenAPI()
	if err == nil {
		err = os.WriteFile(os.Args[1], spec, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapigen:", err)
		os.Exit(1)
	}
}
