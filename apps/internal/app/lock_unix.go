//go:build unix

package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on the data directory for the life
// of the process. The embedded mode assumes it is the only process on its
// SQLite file (at start-up it takes back every RUNNING task), so a second
// `opsbox up` on the same folder must stop before touching anything.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, "opsbox.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another opsbox is already running on data dir %s (stop it, or set OPSBOX_DATA_DIR to another folder)", dir)
		}
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	return func() { _ = f.Close() }, nil // closing the file releases the lock
}
