package main

import (
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"

	"github.com/podns/podns/initc/apply"
	"github.com/podns/podns/initc/config"
	"github.com/podns/podns/internal/cli"
	"github.com/podns/podns/internal/resolvconf"
	"github.com/podns/podns/internal/statedir"
	"github.com/podns/podns/internal/version"
)

// Exit codes (internal/cli). 1 is a refusal or failure on the pod's files (resolv.conf
// untouched), 2 a bad configuration; both stop the pod from starting, which is the point: an app
// with a resolv.conf pointing at a stub that has nowhere to forward would fail in subtler ways.
const (
	exitOK     = cli.ExitOK
	exitFail   = cli.ExitFail
	exitConfig = cli.ExitConfig
)

// program is config.Program: -help and docs/configuration.md come from the same value.
var program = config.Program

func main() {
	os.Exit(run(os.Args[1:], nil, os.Stdout, os.Stderr))
}

// run is the whole program; environ nil means the process environment.
func run(args []string, environ map[string]string, stdout, stderr io.Writer) int {
	if exit, done := program.Args(args, stdout, stderr); done {
		return exit
	}
	cfg, err := config.Load(environ)
	if err != nil {
		return program.BadConfig(stderr, err)
	}
	log := cfg.Logger(stderr).With().Str("version", version.Version).Logger()

	hostNet, known := cfg.HostNetwork()
	p := apply.Params{
		ResolvConf:  cfg.ResolvConf,
		StateDir:    cfg.StateDir,
		Nameserver:  cfg.NameserverAddr(),
		Options:     cfg.MergeOptions(),
		HostNetwork: hostNet,
		HostNetworkReason: fmt.Sprintf("hostNetwork pod (PODNS_POD_IP %s = PODNS_HOST_IP): the pod shares the node's loopback and port 53; podns left %s alone",
			cfg.PodIP, cfg.ResolvConf),
	}
	rep, err := apply.Run(p)
	if err != nil {
		// One line, naming the file and the problem; also the container's termination
		// message when the manifest sets terminationMessagePolicy: FallbackToLogsOnError.
		log.Error().Str("resolv_conf", cfg.ResolvConf).Str("state_dir", cfg.StateDir).Msg(err.Error())
		return exitFail
	}
	switch rep.Action {
	case apply.Disabled:
		log.Warn().Str("resolv_conf", cfg.ResolvConf).Str("marker", statedir.DisabledMarkerPath(cfg.StateDir)).
			Str("pod_ip", cfg.PodIP).Str("host_ip", cfg.HostIP).
			Msg("podns disabled: " + rep.Reason)
		return exitOK
	}
	ev := log.Info()
	if !known {
		// Without the downward API the hostNetwork check cannot run; say so once, in the
		// same line, rather than guess.
		ev = log.Warn().Str("hostnetwork_check", "off: PODNS_POD_IP and PODNS_HOST_IP not both set")
	}
	msg := "resolv.conf rewritten to use podns"
	if rep.Action == apply.Unchanged {
		msg = "resolv.conf already uses podns; nothing written"
	}
	ev.Str("action", string(rep.Action)).
		Str("resolv_conf", cfg.ResolvConf).
		Dict("read", zerolog.Dict().
			Strs("nameservers", addrStrings(rep.Original)).
			Strs("search", rep.Original.Search).
			Strs("options", optionStrings(rep.Original.Options))).
		Str("upstream_conf", statedir.UpstreamConfPath(cfg.StateDir)).
		Str("upstream_conf_state", string(rep.Saved)).
		Dict("wrote", zerolog.Dict().
			Str("nameserver", cfg.Nameserver).
			Strs("options", optionStrings(rep.Options))).
		Strs("options_changed", nonNil(rep.Changes)).
		Bool("stale_marker_removed", rep.StaleMarkerRemoved).
		Msg(msg)
	return exitOK
}

func addrStrings(f *resolvconf.File) []string {
	out := make([]string, len(f.Nameservers))
	for i, a := range f.Nameservers {
		out[i] = a.String()
	}
	return out
}

func optionStrings(opts []resolvconf.Option) []string {
	out := make([]string, len(opts))
	for i, o := range opts {
		out[i] = o.String()
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
