package task

// TraceID returns the trace id of the task's TraceParent (32 lowercase hex
// digits), or "" if it has none or it is malformed. It is what a user
// searches a tracing backend for.
func (t *Task) TraceID() string {
	id, _, ok := ParseTraceParent(t.TraceParent)
	if !ok {
		return ""
	}
	return id
}

// ParseTraceParent splits a W3C traceparent header value
// ("00-<trace-id>-<parent-id>-<flags>") into its trace id and parent span
// id. It accepts version 00 only, and refuses the all-zero ids the
// specification calls invalid. The core keeps the value as text; this
// check is all it needs of the format, so it needs no tracing library.
func ParseTraceParent(s string) (traceID, spanID string, ok bool) {
	// 2 + 1 + 32 + 1 + 16 + 1 + 2 characters.
	if len(s) != 55 || s[0:2] != "00" || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return "", "", false
	}
	traceID, spanID = s[3:35], s[36:52]
	if !lowerHex(traceID) || !lowerHex(spanID) || !lowerHex(s[53:55]) || allZero(traceID) || allZero(spanID) {
		return "", "", false
	}
	return traceID, spanID, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}
