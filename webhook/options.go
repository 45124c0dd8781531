package main

import (
	"net/netip"

	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/webhook/config"
	"github.com/podns/podns/webhook/inject"
)

// injectOptions are the settings that shape what is injected. PODNS_INIT_IMAGE,
// PODNS_STUB_IMAGE and the logger go in too where inject.Options has InitImage, StubImage and
// Logger (webhook/inject as helper W1 extends it; the lead adds them at the merge).
func injectOptions(cfg *config.Config, clusterDNS netip.Addr, log zerolog.Logger) inject.Options {
	return inject.Options{ClusterDNS: clusterDNS, ClusterDomain: cfg.Domain(), Version: version.Version,
		InitImage: cfg.InitImage, StubImage: cfg.StubImage, Logger: log.With().Str("part", "inject").Logger()}
}
