package task

import "testing"

func TestParseTraceParent(t *testing.T) {
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		in      string
		trace   string
		span    string
		wantsOK bool
	}{
		{valid, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true},
		{"", "", "", false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "", false}, // unknown version
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "", "", false}, // uppercase
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", "", false}, // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "", "", false}, // zero span id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", "", "", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "", false},
		{valid + "-", "", "", false},
	}
	for _, tt := range tests {
		trace, span, ok := ParseTraceParent(tt.in)
		if trace != tt.trace || span != tt.span || ok != tt.wantsOK {
			t.Errorf("ParseTraceParent(%q) = %q, %q, %v; want %q, %q, %v", tt.in, trace, span, ok, tt.trace, tt.span, tt.wantsOK)
		}
	}
	tk := &Task{TraceParent: valid}
	if got := tk.TraceID(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("TraceID() = %q", got)
	}
	if got := (&Task{TraceParent: "garbage"}).TraceID(); got != "" {
		t.Errorf("TraceID() of a malformed traceparent = %q, want empty", got)
	}
}
