package config

import "github.com/podns/podns/internal/cli"

// Program is initc's command line: `initc -help` and the generated configuration reference
// (docs/configuration.md, `make docs`) are both written from it, so they list the same
// variables (Config's tags) and exit codes. A non-zero exit keeps the pod from starting, on
// purpose: an app whose resolv.conf named a stub with nothing to forward to would fail later
// and less clearly.
var Program = cli.Program{
	Name:    "initc",
	Summary: "points the pod's resolv.conf at podns's stub",
	Config:  &Config{},
	Exits: []cli.Exit{
		{Code: cli.ExitOK, Meaning: "done: rewritten, already in place, or disabled (hostNetwork, or only unspecified nameservers)"},
		{Code: cli.ExitFail, Meaning: "refused or failed; resolv.conf untouched; the log line names the file and the problem"},
		{Code: cli.ExitConfig, Meaning: "bad configuration (a bad variable or argument); nothing touched"},
	},
}
