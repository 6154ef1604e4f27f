package bunstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	domain := &task.TransitionError{ID: "x", From: task.Queued, Action: "delete"}
	tests := []struct {
		name        string
		err         error
		unavailable bool
		notFound    bool
		duplicate   bool
	}{
		{name: "deadline", err: context.DeadlineExceeded, unavailable: true},
		{name: "bad conn", err: fmt.Errorf("query: %w", driver.ErrBadConn), unavailable: true},
		{name: "conn done", err: sql.ErrConnDone, unavailable: true},
		{name: "refused", err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, unavailable: true},
		{name: "admin shutdown", err: &pgconn.PgError{Code: "57P01"}, unavailable: true},
		{name: "cannot connect now", err: &pgconn.PgError{Code: "57P03"}, unavailable: true},
		{name: "connection failure", err: &pgconn.PgError{Code: "08006"}, unavailable: true},
		{name: "too many connections", err: &pgconn.PgError{Code: "53300"}, unavailable: true},
		{name: "connect error", err: &pgconn.ConnectError{Config: &pgconn.Config{}}, unavailable: true},
		{name: "no rows", err: sql.ErrNoRows, notFound: true},
		{name: "unique violation", err: &pgconn.PgError{Code: "23505"}, duplicate: true},
		{name: "syntax error", err: &pgconn.PgError{Code: "42601"}},
		{name: "canceled by caller", err: context.Canceled},
		{name: "other", err: errors.New("something else")},
	}
	for _, tt := range tests {
		got := classify(tt.err, "op", "id")
		if !errors.Is(got, tt.err) && !tt.notFound {
			t.Errorf("%s: %v does not keep the original error", tt.name, got)
		}
		if errors.Is(got, ports.ErrUnavailable) != tt.unavailable {
			t.Errorf("%s: errors.Is(%v, ErrUnavailable) = %v, want %v", tt.name, got, !tt.unavailable, tt.unavailable)
		}
		if errors.Is(got, task.ErrNotFound) != tt.notFound {
			t.Errorf("%s: errors.Is(%v, ErrNotFound) = %v, want %v", tt.name, got, !tt.notFound, tt.notFound)
		}
		if errors.Is(got, ErrDuplicateID) != tt.duplicate {
			t.Errorf("%s: errors.Is(%v, ErrDuplicateID) = %v, want %v", tt.name, got, !tt.duplicate, tt.duplicate)
		}
	}

	// fn's errors come back unchanged, even ones that look like database
	// errors.
	for _, err := range []error{domain, context.DeadlineExceeded, sql.ErrNoRows} {
		if got := classify(&fnError{err}, "op", "id"); got != err {
			t.Errorf("classify(fnError(%v)) = %v, want the error itself", err, got)
		}
	}
	if classify(nil, "op", "id") != nil {
		t.Error("classify(nil) != nil")
	}
}
