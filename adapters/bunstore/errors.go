package bunstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// ErrDuplicateID is returned by Create when a task with the same id exists,
// so a caller can tell a clash from a failure of the database.
var ErrDuplicateID = errors.New("task id already exists")

// fnError carries an error returned by a caller's fn out of a transaction,
// so that classify leaves it alone and Update/Delete can return it unchanged.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }
func (e *fnError) Unwrap() error { return e.err }

// classify turns a database error into the error the store returns: op
// describes the operation for the message, id (if any) the task.
//   - an error from the caller's fn is returned as is;
//   - sql.ErrNoRows becomes task.ErrNotFound;
//   - a unique violation becomes ErrDuplicateID;
//   - an unreachable or overloaded database also matches ports.ErrUnavailable;
//   - anything else is wrapped with the operation.
//
// The original error is kept in every case, for logs and errors.As.
func classify(err error, op, id string) error {
	if err == nil {
		return nil
	}
	if fe, ok := errors.AsType[*fnError](err); ok {
		return fe.err
	}
	what := op
	if id != "" {
		what = op + " task " + id
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s: %w", what, task.ErrNotFound)
	case isDuplicate(err):
		return fmt.Errorf("%s: %w: %w", what, ErrDuplicateID, err)
	case isUnavailable(err):
		return fmt.Errorf("%s: %w: %w", what, ports.ErrUnavailable, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

func isDuplicate(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == "23505" // unique_violation
	}
	if sqlErr, ok := errors.AsType[*sqlite.Error](err); ok {
		code := sqlErr.Code()
		return code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || code == sqlite3.SQLITE_CONSTRAINT_UNIQUE
	}
	return false
}

// isUnavailable reports whether err means the database could not be reached
// or did not answer in time, as opposed to refusing the statement.
func isUnavailable(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, driver.ErrBadConn),
		errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		pgconn.Timeout(err):
		return true
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection_exception
			return true
		case pgErr.Code == "57P01", // admin_shutdown
			pgErr.Code == "57P02", // crash_shutdown
			pgErr.Code == "57P03", // cannot_connect_now
			pgErr.Code == "53300": // too_many_connections
			return true
		}
		return false
	}
	if sqlErr, ok := errors.AsType[*sqlite.Error](err); ok {
		// Another process held the write lock beyond busy_timeout.
		switch sqlErr.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
		return false
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return false
}
