package bunstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/opsbox/opsbox/ports"
)

var _ ports.Locker = (*Store)(nil)

// The lock statements read the time from the database, never from the
// calling process, so processes whose clocks disagree still agree on when a
// lease ends: PostgreSQL's statement_timestamp() (the server's clock, fixed
// for the statement), SQLite's 'now' (the host's clock, fixed for the
// statement, to the millisecond, written in the tasks' time layout).
//
// One INSERT ... ON CONFLICT DO UPDATE ... WHERE takes a free lock, renews
// one the holder has, or takes over one whose lease has ended, and changes
// nothing otherwise; RETURNING yields a row exactly when holder has the lock
// afterwards. On PostgreSQL concurrent callers queue on the row and each
// re-checks the WHERE against the winner's row; on SQLite the database's
// single writer serializes them.
const (
	tryLockPostgres = `
INSERT INTO opsbox_locks AS l (name, holder, expires_at)
VALUES (?, ?, statement_timestamp() + ? * interval '1 microsecond')
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at < statement_timestamp()
RETURNING holder`

	tryLockSQLite = `
INSERT INTO opsbox_locks AS l (name, holder, expires_at)
VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', ?))
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at < strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')
RETURNING holder`
)

// TryLock implements ports.Locker: it takes the lock name for holder until
// ttl from now, by the database's clock, or renews it if holder has it, and
// reports whether holder has it. ttl is kept to the microsecond on
// PostgreSQL and to the millisecond on SQLite, and must be positive.
func (s *Store) TryLock(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if err := checkLockArgs(name, holder); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("try lock %q: ttl must be positive, got %v", name, ttl)
	}
	var row *sql.Row
	if s.postgres {
		row = s.db.QueryRowContext(ctx, tryLockPostgres, name, holder, max(ttl.Microseconds(), 1))
	} else {
		row = s.db.QueryRowContext(ctx, tryLockSQLite, name, holder, fmt.Sprintf("%+.6f seconds", ttl.Seconds()))
	}
	var got string
	switch err := row.Scan(&got); {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, classify(err, fmt.Sprintf("try lock %q", name), "")
	}
	return got == holder, nil
}

// Unlock implements ports.Locker. Unlocking a lock that holder does not
// have (another holder's, an expired one taken over since, one that does
// not exist) changes nothing and is not an error.
func (s *Store) Unlock(ctx context.Context, name, holder string) error {
	if err := checkLockArgs(name, holder); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, "DELETE FROM opsbox_locks WHERE name = ? AND holder = ?", name, holder)
	return classify(err, fmt.Sprintf("unlock %q", name), "")
}

func checkLockArgs(name, holder string) error {
	if name == "" || holder == "" {
		return fmt.Errorf("lock name and holder must not be empty (name %q, holder %q)", name, holder)
	}
	return nil
}
