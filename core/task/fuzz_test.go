package task_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/opsbox/opsbox/core/task"
)

// FuzzNew checks that validation never panics and that whatever it accepts
// is what every store and client can rely on.
func FuzzNew(f *testing.F) {
	f.Add("build", "", []byte(`{"cpu_rounds":10}`), 0)
	f.Add("  spaced  ", "email.send_v2", []byte(` { "a" : [1, 2, {"b": null}] } `), 25)
	f.Add("é😀", "x", []byte(`{"k":"\u0000"}`), 1)
	f.Add("a\x00b", "Bad", []byte(`[1]`), -1)
	f.Add(strings.Repeat("z", 201), "k", []byte(`{"a":1e999}`), 3)
	f.Fuzz(func(t *testing.T, title, kind string, payload []byte, maxAttempts int) {
		tk, err := task.New("id", task.Spec{Title: title, Kind: kind, Payload: payload, MaxAttempts: maxAttempts}, now)
		if err != nil {
			if !errors.Is(err, task.ErrInvalid) {
				t.Fatalf("error %v is not a validation error", err)
			}
			return
		}
		n := utf8.RuneCountInString(tk.Title)
		if n < 1 || n > task.MaxTitleLen || !utf8.ValidString(tk.Title) || strings.TrimSpace(tk.Title) != tk.Title {
			t.Errorf("accepted title %q", tk.Title)
		}
		if strings.ContainsRune(tk.Title, 0) {
			t.Errorf("accepted a NUL in the title")
		}
		var obj map[string]any
		if len(tk.Payload) > task.MaxPayloadBytes || json.Unmarshal(tk.Payload, &obj) != nil || obj == nil {
			t.Errorf("accepted payload %q", tk.Payload)
		}
		var compact bytes.Buffer
		if json.Compact(&compact, tk.Payload) != nil || compact.String() != string(tk.Payload) {
			t.Errorf("payload not compacted: %q", tk.Payload)
		}
		if containsNUL(obj) {
			t.Errorf("accepted a NUL in the payload: %q", tk.Payload)
		}
		if tk.MaxAttempts < 1 || tk.MaxAttempts > task.MaxMaxAttempts || tk.Kind == "" {
			t.Errorf("accepted max_attempts %d kind %q", tk.MaxAttempts, tk.Kind)
		}
	})
}

// containsNUL reports whether a decoded JSON value holds a NUL in any
// string or key.
func containsNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		for _, e := range v {
			if containsNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || containsNUL(e) {
				return true
			}
		}
	}
	return false
}
