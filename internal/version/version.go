// Package version holds the build's version string, stamped at link time by the Makefile and
// the Dockerfiles with -ldflags "-X github.com/podns/podns/internal/version.Version=...".
package version

// Version is the podns release this binary was built from; "dev" for an unstamped build.
var Version = "dev"
