#!/bin/sh
# fuzz/ci.sh runs every fuzz target of expectscope for a short time
# (FUZZTIME, default 10s each), one after the other: go test accepts
# -fuzz for one target of one package at a time. A crash fails the script
# and leaves the failing input in the package's testdata/fuzz/<Target>/;
# commit it there and it becomes a regression test of plain `go test`.
#
#   fuzz/ci.sh                      # from the repository root, 10s each
#   FUZZTIME=10m fuzz/ci.sh         # the issue's local soak
#   fuzz/ci.sh ./analyze FuzzConn   # one target
set -eu
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
# Minimising a new input can outlast a short -fuzztime; keep it short.
MINTIME=${FUZZMINIMIZETIME:-5s}

targets="
./capture FuzzOpen
./capture FuzzDecode
./capture FuzzMappedNg
./reassembly FuzzAssembler
./analyze FuzzRequestHead
./analyze FuzzResponseHead
./analyze FuzzChunked
./analyze FuzzConn
./pipeline FuzzPipeline
./report FuzzEscape
"
if [ $# -eq 2 ]; then
	targets="$1 $2"
fi

echo "$targets" | while read -r pkg target; do
	[ -n "$pkg" ] || continue
	echo "fuzz: $pkg $target for $FUZZTIME"
	go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINTIME" ${FUZZFLAGS:-}
done
