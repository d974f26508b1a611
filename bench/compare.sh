#!/bin/sh
# compare.sh: expectscope against tshark and tcpdump on one generated capture.
#
#   bench/compare.sh [SIZE_MB]     (default 400)
#
# Builds expectscope and capgen, generates a capture of about SIZE_MB of
# upload traffic (MSS 1448, the scenario mix of cmd/capgen), then runs each
# command once to warm up and once measured under /usr/bin/time -v, and
# prints wall seconds, the ratios the performance goals are stated in,
# and peak RSS. It installs nothing: it says what is missing.
set -eu
SIZE=${1:-400}
cd "$(dirname "$0")/.."
missing=""
for c in tshark tcpdump; do command -v $c >/dev/null 2>&1 || missing="$missing $c"; done
[ -x /usr/bin/time ] || missing="$missing time"
if [ -n "$missing" ]; then
	echo "missing:$missing -- install with: apt-get install -y tshark tcpdump time" >&2
	exit 2
fi
W=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$W"
go build -o "$W/expectscope" ./cmd/expectscope
go build -o "$W/capgen" ./cmd/capgen
F="$W/bench.pcap"
if [ ! -s "$F" ]; then
	"$W/capgen" -o "$F" -size-mb "$SIZE" -body-min 16384 -body-max 1048576 -seed 1
fi
ls -l "$F"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# measure NAME CMD...: warm-up run, then a measured run; sets NAME_s and NAME_kb.
measure() {
	name=$1; shift
	"$@" >/dev/null 2>&1 || true
	/usr/bin/time -v -o "$W/$name.time" "$@" >/dev/null 2>"$W/$name.err" || true
	s=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); t=0; for(i=1;i<=n;i++) t=t*60+a[i]; print t}' "$W/$name.time")
	kb=$(awk -F': ' '/Maximum resident set size/{print $2}' "$W/$name.time")
	eval "${name}_s=$s; ${name}_kb=$kb"
	printf '%-22s %8.3f s  %8.1f MiB\n' "$name" "$s" "$(echo "$kb/1024" | bc -l)"
}

measure tcpdump tcpdump -r "$F" -w /dev/null
measure expectscope "$W/expectscope" read -f ndjson "$F"
measure expectscope_gmp1 env GOMAXPROCS=1 "$W/expectscope" read -f ndjson "$F"
measure expectscope_gmp2 env GOMAXPROCS=2 "$W/expectscope" read -f ndjson "$F"
measure tshark tshark -r "$F" -Y 'http.request or http.response' -T fields -e frame.time_relative -e tcp.stream -e http.request.method -e http.response.code

ratio() { echo "scale=2; $1 / $2" | bc -l; }
echo
echo "tshark / expectscope           = $(ratio "$tshark_s" "$expectscope_s")x   (goal >= 30)"
echo "expectscope / tcpdump          = $(ratio "$expectscope_s" "$tcpdump_s")x   (goal <= 3)"
echo "GOMAXPROCS=1 / GOMAXPROCS=2    = $(ratio "$expectscope_gmp1_s" "$expectscope_gmp2_s")x   (goal >= 1.8)"
echo "peak RSS expectscope           = $(echo "scale=1; $expectscope_kb/1024" | bc -l) MiB (goal <= 100)"
for g in 1 2; do
	GOMAXPROCS=$g "$W/expectscope" read -f ndjson "$F" >"$W/out$g.ndjson" 2>/dev/null || true
done
if cmp -s "$W/out1.ndjson" "$W/out2.ndjson"; then echo "ndjson identical at GOMAXPROCS=1 and 2"; else echo "ndjson DIFFERS at GOMAXPROCS=1 and 2"; fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
