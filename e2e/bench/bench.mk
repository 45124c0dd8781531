# The peer benchmark of issue 7 (e2e/bench/README.md). Included by the root Makefile, whose
# `bench` target runs bench-peers.

# Flags for the benchmark program, e.g. BENCH_FLAGS='-quick -targets podns' while working on
# the hit path. `go run ./e2e/bench -h` lists them.
BENCH_FLAGS ?=
# Debian packages the benchmark uses: dnsperf drives the load, dnsmasq and unbound are peers.
BENCH_APT   := dnsperf dnsmasq-base unbound

.PHONY: bench-peers bench-deps

bench-peers: build tools bench-deps ## peer benchmark vs CoreDNS, dnsmasq, unbound; writes bench-results/
	$(GO) run ./e2e/bench $(BENCH_FLAGS)

# Installs what is missing when root, with no service started (a temporary policy-rc.d when the
# machine has none) or left enabled for the next boot: the units it just installed are disabled
# (systemctl works offline too, and updates the SysV links) and, under systemd, stopped. A
# service that was there before is left alone. Not root: names what is
# missing and goes on; the benchmark skips a missing peer (dnsperf is required).
bench-deps:
	@missing=""; \
	command -v dnsperf >/dev/null 2>&1 || missing="$$missing dnsperf"; \
	{ command -v dnsmasq || [ -x /usr/sbin/dnsmasq ]; } >/dev/null 2>&1 || missing="$$missing dnsmasq-base"; \
	{ command -v unbound || [ -x /usr/sbin/unbound ]; } >/dev/null 2>&1 || missing="$$missing unbound"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "bench: missing:$$missing. Install: sudo apt-get install -y --no-install-recommends$$missing" >&2; \
	    echo "bench: going on without them (a missing peer is skipped; without dnsperf nothing runs)" >&2; \
	    exit 0; \
	  fi; \
	  echo "bench: installing$$missing (apt-get, no service started)"; \
	  policy=/usr/sbin/policy-rc.d; added=""; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && added=1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends $$missing || \
	    { apt-get update && apt-get install -y --no-install-recommends $$missing; }; rc=$$?; \
	  if [ -n "$$added" ]; then rm -f $$policy; fi; \
	  if [ $$rc != 0 ]; then exit $$rc; fi; \
	  if command -v systemctl >/dev/null 2>&1; then \
	    for s in unbound unbound-resolvconf dnsmasq; do \
	      if systemctl is-enabled --quiet $$s 2>/dev/null; then \
	        echo "bench: disabling the $$s service just installed (the benchmark runs its own)"; \
	        systemctl disable $$s; \
	      fi; \
	      if [ -d /run/systemd/system ] && systemctl is-active --quiet $$s; then systemctl stop $$s; fi; \
	    done; \
	  fi; \
	fi
