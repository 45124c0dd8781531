#!/usr/bin/env bash
# fuzzrun.sh GO PKG DIR TARGET FUZZTIME: one fuzz target for FUZZTIME, as `make fuzz` runs it.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline exceeded" when the
# -fuzztime deadline races a busy worker (go.dev/issue/75804, fixed in Go 1.27): no input failed
# and no crasher is written. That one case is reported and passed over; any other failure, and
# any run that wrote a crasher to DIR/testdata/fuzz/TARGET, fails as before.
set -u
go=$1 pkg=$2 dir=$3 target=$4 fuzztime=$5
corpus=$dir/testdata/fuzz/$target
before=$(ls "$corpus" 2>/dev/null | sort)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if "$go" test -run='^$' -fuzz="^$target\$" -fuzztime="$fuzztime" "$pkg" 2>&1 | tee "$out"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
  exit 0
fi
after=$(ls "$corpus" 2>/dev/null | sort)
if [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$out" && ! grep -q -e '^panic:' -e 'Failing input written' "$out"; then
  echo "fuzz $target: the fuzztime deadline raced a worker (go.dev/issue/75804), no input failed and no crasher was written: passed over"
  exit 0
fi
exit 1
