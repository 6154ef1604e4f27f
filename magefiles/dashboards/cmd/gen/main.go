// Command gen writes opsbox's dashboards into the folder named by its
// argument (observability/grafana/dashboards), one <uid>.json each.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/opsbox/opsbox/magefiles/dashboards"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen DIR")
		os.Exit(2)
	}
	for _, d := range dashboards.All() {
		b, err := d.JSON()
		if err == nil {
			err = os.WriteFile(filepath.Join(os.Args[1], d.UID+".json"), append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}
