# The soak of issue 14 item 3 (e2e/soak/README.md). Included by the root Makefile. CI runs the
# shortened soak as TestSoak under `make test`; this target is the long run.

# Length of the faulted phase (Go duration); warm-up and settling add about 1.5 min.
SOAK_DURATION ?= 1h
# Flags for the soak program, e.g. SOAK_FLAGS='-rate 1000'. `go run ./e2e/soak -h` lists them.
SOAK_FLAGS    ?=

.PHONY: soak

soak: build tools ## hour of faults against the stub (SOAK_DURATION, default 1h); writes soak-results/
	SOAK_DURATION=$(SOAK_DURATION) $(GO) run ./e2e/soak $(SOAK_FLAGS)
