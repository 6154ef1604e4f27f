// Command opsbox is the command line of opsbox, for users and operators.
//
//	opsbox up                  run the API and a worker in one process
//	opsbox migrate up|down|status
//	opsbox version
//
// Every setting is a flag and an OPSBOX_* environment variable (see
// `opsbox --help`). With none set, opsbox runs on its embedded default: a
// SQLite file under .opsbox/ and an in-process queue, no servers needed.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	if err := newRoot(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "opsbox:", oneLine(err.Error()))
		os.Exit(1)
	}
}

// oneLine folds a multi-line error (the PostgreSQL driver lists every
// address it tried on its own line) into one line for the terminal.
func oneLine(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, "; ")
}
