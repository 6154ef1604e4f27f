// Package version tells which build of opsbox is running. The build sets
// both values with -ldflags (see magefiles); a plain `go run` reports the
// module's build info instead.
package version

import "runtime/debug"

// Set at link time by `go tool mage build`.
var (
	Version  = ""
	Revision = ""
)

// Get returns the version and VCS revision of this binary.
func Get() (version, revision string) {
	version, revision = Version, Revision
	if info, ok := debug.ReadBuildInfo(); ok {
		if version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			version = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && revision == "" {
				revision = s.Value
			}
		}
	}
	if version == "" {
		version = "dev"
	}
	if revision == "" {
		revision = "unknown"
	}
	return version, revision
}
