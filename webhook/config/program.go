package config

import "github.com/podns/podns/internal/cli"

// Program is the webhook's command line: `webhook -help` and the generated configuration
// reference (docs/configuration.md, `make docs`) are both written from it, so they list the same
// variables (Config's tags) and exit codes.
var Program = cli.Program{
	Name:    "webhook",
	Summary: "podns's mutating admission webhook: adds podns to the pods of opted-in namespaces",
	Config:  &Config{},
	Exits: []cli.Exit{
		{Code: cli.ExitOK, Meaning: "clean shutdown after SIGTERM or SIGINT"},
		{Code: cli.ExitFail, Meaning: "runtime failure: no API server credentials, a listen address already taken, a certificate that cannot be made or read"},
		{Code: cli.ExitConfig, Meaning: "configuration the operator must fix: a bad variable or argument; PODNS_CLUSTER_DNS unset and Service kube-system/kube-dns absent or without a clusterIP"},
	},
}
