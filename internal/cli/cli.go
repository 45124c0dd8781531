// Package cli is the command-line surface both binaries share. Neither takes flags: every knob
// is a PODNS_* environment variable, so the only arguments are -help and -version, and the exit
// codes mean the same in both.
package cli

import (
	"fmt"
	"io"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/internal/version"
)

// Exit codes, the same for both binaries: Config for anything the operator must fix in the
// configuration (a bad variable, an unusable argument, no upstream), Fail for a refusal or a
// runtime failure.
const (
	ExitOK     = 0
	ExitFail   = 1
	ExitConfig = 2
)

// Program describes a binary for its -help text and messages.
type Program struct {
	Name    string // "stub", "initc": the prefix of every message
	Summary string // what it does, after "<name> <version>: "
	Config  any    // pointer to its Config struct, whose tags -help lists
	Footer  string // printed after the variable table, after an empty line; "" for none
}

// Args handles the command line: -h, -help and --help print the summary and the variable table
// to stdout, -version and --version the version; anything else is refused on stderr. done says
// the program must exit with exit now; otherwise it goes on to read its configuration.
func (p Program) Args(args []string, stdout, stderr io.Writer) (exit int, done bool) {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			fmt.Fprintf(stdout, "%s %s: %s. Configured by environment:\n\n", p.Name, version.Version, p.Summary)
			envconfig.Usage(stdout, p.Config)
			if p.Footer != "" {
				fmt.Fprintf(stdout, "\n%s\n", p.Footer)
			}
			return ExitOK, true
		case "-version", "--version":
			fmt.Fprintln(stdout, version.Version)
			return ExitOK, true
		default:
			fmt.Fprintf(stderr, "%s: unknown argument %q (configuration is by PODNS_* environment variables; see -help)\n", p.Name, a)
			return ExitConfig, true
		}
	}
	return ExitOK, false
}

// BadConfig reports the configuration errors from Load (one problem a line) on stderr and
// returns the exit code for them.
func (p Program) BadConfig(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "%s: invalid configuration:\n%v\n", p.Name, err)
	return ExitConfig
}
