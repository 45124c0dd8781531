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
	// package main dispatches these (its subcommands map and -wait-ready); its test checks
	// that every name here has a handler there and the other way round.
	CommandsIntro: "Subcommands, for kubectl exec POD -c podns-stub -- /stub SUBCOMMAND (they ask the running stub over loopback, on PODNS_HTTP_LISTEN's port and PODNS_LISTEN; exit 1 when it cannot be reached, 2 for a bad command line)",
	Commands: []cli.Command{
		{Usage: "status", Meaning: "version, uptime, configuration and its sources, upstreams (state, p50/p99 round trip, last reply and error), cache"},
		{Usage: "dig NAME [TYPE] [+bypass-cache]", Meaning: "resolve through the stub (or straight to its upstreams); says whether the answer came from the cache, and if not who made it and why it was not cached"},
		{Usage: "cache [-n N] [NAME]", Meaning: "the cache entries of NAME, or the N (default 20, 1 to 1000) with the most hits"},
		{Usage: "querylog [MODE]", Meaning: "show, or switch, the query log: off, errors, slow:<duration> (1ms to 1m), all"},
		{Usage: "-wait-ready", Meaning: "wait until the running stub answers /readyz, then exit 0 (exit 1 after 30 s): the component's postStart hook"},
	},
}
