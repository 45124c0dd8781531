package config

import "github.com/podns/podns/internal/cli"

// Program is the stub's command line: `stub -help` and the generated configuration reference
// (docs/configuration.md, `make docs`) are both written from it, so they list the same
// variables (Config's tags) and exit codes.
var Program = cli.Program{
	Name:    "stub",
	Summary: "podns's per-pod DNS cache",
	Config:  &Config{},
	Exits: []cli.Exit{
		{Code: cli.ExitOK, Meaning: "clean shutdown after SIGTERM or SIGINT"},
		{Code: cli.ExitFail, Meaning: "runtime failure: a DNS or HTTP listen address already taken; for a subcommand, the running stub cannot be reached or the request failed"},
		{Code: cli.ExitConfig, Meaning: "configuration the operator must fix: a bad variable or argument (also a subcommand's), no upstream, a forwarding loop, a cache that cannot fit the memory limit"},
	},
}
