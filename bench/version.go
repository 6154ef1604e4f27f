package main

import "runtime/debug"

// riverVersion is the River module this binary was built with.
var riverVersion = moduleVersion("github.com/riverqueue/river")

// vegetaVersion is the vegeta module this binary was built with.
var vegetaVersion = moduleVersion("github.com/tsenart/vegeta/v12")

func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}
