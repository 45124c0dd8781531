// Package cli is the command-line surface the binaries share. None takes flags: every knob
// is a PODNS_* environment variable, so the arguments are -help, -version and a program's own
// commands (the stub's subcommands, Program.Commands), and the exit codes mean the same in all.
package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/internal/version"
)

// Exit codes, the same for every binary: Config for anything the operator must fix in the
// configuration (a bad variable, an unusable argument, no upstream), Fail for a refusal or a
// runtime failure.
const (
	ExitOK     = 0
	ExitFail   = 1
	ExitConfig = 2
)

// Program describes a binary for its -help text, its messages and the generated configuration
// reference (Reference): -help and the reference are written from the same Program, so they
// cannot disagree.
type Program struct {
	Name    string // "stub", "initc": the prefix of every message
	Summary string // what it does, after "<name> <version>: "
	Config  any    // pointer to its Config struct, whose tags -help lists
	Exits   []Exit // its exit codes, listed after the variables; nil for none
	// Commands are its commands (the stub's subcommands), listed after the exit codes under
	// CommandsIntro, by -help and in the reference alike; nil for none. The program dispatches
	// them itself, before Args (which refuses anything but -help and -version).
	Commands      []Command
	CommandsIntro string
	Footer        string // -help only, after the commands and an empty line; "" for none
}

// Command is one command of a program: its usage after the program's name, and what it does.
type Command struct {
	Usage   string // e.g. "dig NAME [TYPE] [+bypass-cache]"
	Meaning string
}

// Exit is one exit code of a program and when it is returned.
type Exit struct {
	Code    int
	Meaning string
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
			p.usageExits(stdout)
			p.usageCommands(stdout)
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

// usageCommands writes the commands under their introduction after an empty line.
func (p Program) usageCommands(w io.Writer) {
	if len(p.Commands) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", p.CommandsIntro)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range p.Commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.Usage, c.Meaning)
	}
	tw.Flush()
}

// usageExits writes the exit codes as a table after an empty line.
func (p Program) usageExits(w io.Writer) {
	if len(p.Exits) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EXIT\tMEANING")
	for _, e := range p.Exits {
		fmt.Fprintf(tw, "%d\t%s\n", e.Code, e.Meaning)
	}
	tw.Flush()
}
