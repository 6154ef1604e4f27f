//go:build !unix

package app

// lockDataDir is a no-op where flock is unavailable: run one opsbox per
// data directory there.
func lockDataDir(string) (func(), error) { return func() {}, nil }
