#!/bin/sh
# fuzz/ci.sh runs every fuzz target of expectscope for a short budget
# (FUZZTIME, default 50000 executions each, a few seconds), one after the
# other: go test accepts
# -fuzz for one target of one package at a time. A crash fails the script
# and leaves the failing input in the package's testdata/fuzz/<Target>/;
# commit it there and it becomes a regression test of plain `go test`.
#
#   fuzz/ci.sh                      # from the repository root, 50000x each
#   FUZZTIME=10m fuzz/ci.sh         # the issue's local soak
#   fuzz/ci.sh ./analyze FuzzConn   # one target (with its budget: fuzz/ci.sh PKG TARGET 100x)
set -eu
cd "$(dirname "$0")/.."
# The default budget counts executions, not seconds: with a duration, Go
# 1.26's fuzz coordinator can report its own deadline as a failure
# ("context deadline exceeded", no crasher written) when a loaded machine
# keeps a worker busy past it (golang/go#75804, fixed in Go 1.27). A count
# never races a clock; on a slow machine it only takes longer.
FUZZTIME_SET=${FUZZTIME:-}
FUZZTIME=${FUZZTIME:-50000x}
# Minimising a new input can outlast a short budget; keep it short.
MINTIME=${FUZZMINIMIZETIME:-2000x}

targets="
./capture FuzzOpen
./capture FuzzDecode
./capture FuzzMappedNg
./reassembly FuzzAssembler
./analyze FuzzRequestHead
./analyze FuzzResponseHead
./analyze FuzzChunked
./analyze FuzzConn
./analyze FuzzFirstMethodStart
./pipeline FuzzPipeline
./pipeline FuzzWorkersAgree 1000x
./report FuzzEscape
./report FuzzAppendRecordJSON
./report FuzzRFC3339Nano
./report FuzzAppendIndented
./report FuzzAppendCountsJSON
./cmd/expectscope FuzzSpillCodec
"
if [ $# -ge 2 ]; then
	# One target: its own budget from the list unless given (or FUZZTIME set).
	targets=$(echo "$targets" | awk -v p="$1" -v t="$2" '$1 == p && $2 == t')
	[ -n "$targets" ] || targets="$1 $2"
	[ $# -lt 3 ] || targets="$1 $2 $3"
fi

# A third column is a target's own budget when FUZZTIME is not set (a
# target that runs the whole pipeline several times an input).
echo "$targets" | while read -r pkg target budget; do
	[ -n "$pkg" ] || continue
	t=$FUZZTIME
	if [ -z "${FUZZTIME_SET:-}" ] && [ -n "${budget:-}" ]; then
		t=$budget
	fi
	echo "fuzz: $pkg $target for $t"
	go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$t" -fuzzminimizetime "$MINTIME" ${FUZZFLAGS:-}
done
