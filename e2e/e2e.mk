# Targets owned by the e2e suite. Included by the root Makefile.
demo: build tools ## the 5-second problem and its fix, before/after (root)
	@echo "make demo: not yet implemented" >&2; exit 1

bench: build tools ## peer benchmark, writes bench-results/
	@echo "make bench: not yet implemented" >&2; exit 1
