// Package opsbox is the root of opsbox's embeddable core: the task
// lifecycle (core/task, core/lifecycle), the built-in simulate kind
// (core/simulate) and the ports the core needs (ports). This module
// imports the standard library only, so a Go program can embed the
// lifecycle with its own store, queue and handlers and no third-party
// dependencies; deps_test.go holds it to that.
//
// The adapters module (bun stores, Watermill queues, the Huma HTTP API)
// and the apps module (the api, worker and opsbox binaries) build on it.
package opsbox
