package main

import (
	"net/netip"

	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/webhook/config"
	"github.com/podns/podns/webhook/inject"
)

// injectOptions are the settings that shape what is injected.
func injectOptions(cfg *config.Config, clusterDNS netip.Addr, _ zerolog.Logger) inject.Options {
	return inject.Options{ClusterDNS: clusterDNS, ClusterDomain: cfg.Domain(), Version: version.Version}
}
