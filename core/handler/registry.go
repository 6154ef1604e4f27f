// Package handler keeps the handlers a program registers, one per task kind.
package handler

import (
	"fmt"
	"sort"
	"sync"

	"github.com/opsbox/opsbox/ports"
)

// Registry maps task kinds to handlers. It is safe for concurrent use; a
// program usually fills it once at start-up.
type Registry struct {
	mu       sync.RWMutex
	handlers map[string]ports.Handler
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{handlers: map[string]ports.Handler{}} }

// Register adds the handler for kind. Registering a kind twice is an error,
// so two parts of a program cannot silently replace each other's handler.
func (r *Registry) Register(kind string, h ports.Handler) error {
	if kind == "" || h == nil {
		return fmt.Errorf("register handler: kind and handler are required")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.handlers[kind]; ok {
		return fmt.Errorf("register handler: kind %q is already registered", kind)
	}
	r.handlers[kind] = h
	return nil
}

// Lookup returns the handler for kind.
func (r *Registry) Lookup(kind string) (ports.Handler, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	h, ok := r.handlers[kind]
	return h, ok
}

// Kinds returns the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	kinds := make([]string, 0, len(r.handlers))
	for k := range r.handlers {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return kinds
}
