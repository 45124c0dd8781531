# Targets owned by the e2e suite (e2e/README.md). Included by the root Makefile.

# The demo needs root for namespaces, iptables and mounts: say so before building anything.
demo: ## the 5-second problem and its fix, before/after table (root)
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make demo needs root (it creates network namespaces, iptables rules and bind mounts): run sudo make demo" >&2; \
	  exit 1; \
	fi
	@$(MAKE) --no-print-directory build tools
	$(GO) run ./e2e/cmd/demo $(DEMO_FLAGS)
