#!/bin/sh
# compare.sh: expectscope against tshark and tcpdump on a generated capture
# and on a capture of real traffic.
#
#   bench/compare.sh [SIZE_MB]     (default 400)
#
# Builds expectscope and capgen, generates a capture of about SIZE_MB of
# upload traffic (MSS 1448, the scenario mix of cmd/capgen), then runs each
# command once to warm up and once measured under /usr/bin/time -v, and
# prints wall seconds, the ratios the performance goals are stated in,
# and peak RSS. The 1-vs-2-core ratio is taken from the medians of RUNS
# (default 11) alternating rounds of tcpdump and expectscope at GOMAXPROCS=1
# and 2 (wall time), since a single run is noisy on a loaded machine; the
# other ratios are also given with those medians; the single
# /usr/bin/time runs give peak RSS.
#
# Then the same on a capture of real traffic (nginx and curl over a veth
# pair, see bench/realcap.sh): REAL=path names one; else $W/real.pcap is
# used, made with bench/realcap.sh (root) of REAL_SIZE_MB (default SIZE_MB)
# when missing. REAL=none skips it. W is BENCH_DIR, else a temp directory.
# SMALL=1 adds a generated capture of many small uploads (bodies of 1-20 KB:
# some 28 000 negotiations in 400 MB instead of 700), FLOOD=1 one of tiny
# uploads from 2 000 clients at once (30 000 sessions, 38 MB): the work
# per negotiation, not per byte, is what these measure.
# It installs nothing: it says what is missing.
set -eu
SIZE=${1:-400}
RUNS=${RUNS:-11}
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
# Static (no cgo: nothing in expectscope needs C): the dynamic loader
# alone is a millisecond of every run, a percent of these.
CGO_ENABLED=0 go build -o "$W/expectscope" ./cmd/expectscope
go build -o "$W/capgen" ./cmd/capgen
F="$W/bench.pcap"
if [ ! -s "$F" ]; then
	"$W/capgen" -o "$F" -size-mb "$SIZE" -body-min 16384 -body-max 1048576 -seed 1
fi
REAL=${REAL:-$W/real.pcap}
if [ "$REAL" != none ] && [ ! -s "$REAL" ]; then
	echo "making $REAL with bench/realcap.sh ${REAL_SIZE_MB:-$SIZE}"
	bench/realcap.sh "${REAL_SIZE_MB:-$SIZE}" "$REAL" >"$W/realcap.log" 2>&1 || {
		cat "$W/realcap.log" >&2
		echo "bench/realcap.sh failed (it needs root); give a capture with REAL=path, or REAL=none" >&2
		exit 2
	}
	sed 's/^/  realcap: /' "$W/realcap.log" | head -20
fi

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

# rounds F: RUNS alternating rounds of tcpdump and expectscope at
# GOMAXPROCS=1 and 2 (wall time from date +%s%N); sets tcpdump_med,
# tcpdump_min, gmp1_med, gmp1_min, gmp2_med, gmp2_min (seconds).
rounds() {
	for k in tcpdump gmp1 gmp2; do : >"$W/$k.runs"; done
	i=0
	while [ $i -lt "$RUNS" ]; do
		for k in tcpdump gmp1 gmp2; do
			t0=$(date +%s%N)
			case $k in
			tcpdump) tcpdump -r "$1" -w /dev/null >/dev/null 2>&1 || true ;;
			gmp*) GOMAXPROCS=${k#gmp} "$W/expectscope" read -f ndjson "$1" >/dev/null 2>&1 || true ;;
			esac
			t1=$(date +%s%N)
			echo "$(((t1 - t0) / 1000))" >>"$W/$k.runs"
		done
		i=$((i + 1))
	done
	for k in tcpdump gmp1 gmp2; do
		mm=$(sort -n "$W/$k.runs" | awk '{v[NR]=$1} END {m = NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.3f %.3f", m/1e6, v[1]/1e6}')
		eval "${k}_med=${mm% *}; ${k}_min=${mm#* }"
		case $k in tcpdump) label=tcpdump_wall ;; *) label=expectscope_${k}_wall ;; esac
		printf '%-22s %8.3f s median, %.3f s min of %d runs\n' "$label" "${mm% *}" "${mm#* }" "$RUNS"
	done
}

ratio() { echo "scale=2; $1 / $2" | bc -l; }

# cpus F: GOMAXPROCS=1 pinned to each of the first CPUs (taskset), median
# of 5 runs each. On a VM whose vCPUs run at different speeds (one shares
# its host core with a busy neighbour) the unpinned GOMAXPROCS=1 times are
# bimodal, and the 1-vs-2-core ratio depends on which vCPU they land on:
# this line shows whether that is the case.
cpus() {
	command -v taskset >/dev/null 2>&1 || return 0
	line="GOMAXPROCS=1 pinned (median of 5):"
	c=0
	while [ $c -lt "$(nproc)" ] && [ $c -lt 4 ]; do
		: >"$W/cpu$c.runs"
		for _ in 1 2 3 4 5; do
			t0=$(date +%s%N)
			taskset -c $c env GOMAXPROCS=1 "$W/expectscope" read -f ndjson "$1" >/dev/null 2>&1 || true
			t1=$(date +%s%N)
			echo "$(((t1 - t0) / 1000))" >>"$W/cpu$c.runs"
		done
		line="$line cpu$c $(sort -n "$W/cpu$c.runs" | awk '{v[NR]=$1} END {printf "%.3f s", v[3]/1e6}')"
		c=$((c + 1))
	done
	echo "$line"
}

# bench F: every measurement on capture F.
bench() {
	F=$1
	ls -l "$F"
	echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	measure tcpdump tcpdump -r "$F" -w /dev/null
	measure expectscope "$W/expectscope" read -f ndjson "$F"
	measure expectscope_gmp1 env GOMAXPROCS=1 "$W/expectscope" read -f ndjson "$F"
	measure expectscope_gmp2 env GOMAXPROCS=2 "$W/expectscope" read -f ndjson "$F"
	measure tshark tshark -r "$F" -Y 'http.request or http.response' -T fields -e frame.time_relative -e tcp.stream -e http.request.method -e http.response.code
	rounds "$F"
	cpus "$F"
	echo
	echo "tshark / expectscope           = $(ratio "$tshark_s" "$expectscope_s")x   (goal >= 30)"
	echo "expectscope / tcpdump          = $(ratio "$expectscope_s" "$tcpdump_s")x   (goal <= 3)"
	echo "GOMAXPROCS=1 / GOMAXPROCS=2    = $(ratio "$gmp1_med" "$gmp2_med")x   (goal >= 1.8)"
	echo "  (medians of $RUNS alternating runs; of the mins $(ratio "$gmp1_min" "$gmp2_min")x; of the single timed runs $(ratio "$expectscope_gmp1_s" "$expectscope_gmp2_s")x)"
	echo "  (with the medians, GOMAXPROCS=2: tshark / expectscope = $(ratio "$tshark_s" "$gmp2_med")x, expectscope / tcpdump = $(ratio "$gmp2_med" "$tcpdump_med")x)"
	echo "peak RSS expectscope           = $(echo "scale=1; $expectscope_kb/1024" | bc -l) MiB (goal <= 100)"
	for g in 1 2; do
		GOMAXPROCS=$g "$W/expectscope" read -f ndjson "$F" >"$W/out$g.ndjson" 2>/dev/null || true
	done
	if cmp -s "$W/out1.ndjson" "$W/out2.ndjson"; then echo "ndjson identical at GOMAXPROCS=1 and 2"; else echo "ndjson DIFFERS at GOMAXPROCS=1 and 2"; fi
	echo "expectscope: $("$W/expectscope" read --summary -f table "$F" 2>&1 | head -1)"
	echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "=== generated capture (cmd/capgen -size-mb $SIZE -body-min 16384 -body-max 1048576 -seed 1) ==="
bench "$W/bench.pcap"
if [ "$REAL" != none ]; then
	echo
	echo "=== real capture (nginx and curl over veth, bench/realcap.sh): $REAL ==="
	bench "$REAL"
fi
if [ -n "${SMALL:-}" ]; then
	[ -s "$W/small.pcap" ] || "$W/capgen" -o "$W/small.pcap" -size-mb "$SIZE" -body-min 1000 -body-max 20000 -seed 3
	echo
	echo "=== many small uploads (cmd/capgen -size-mb $SIZE -body-min 1000 -body-max 20000 -seed 3) ==="
	bench "$W/small.pcap"
fi
if [ -n "${FLOOD:-}" ]; then
	[ -s "$W/flood.pcap" ] || "$W/capgen" -o "$W/flood.pcap" -seed 31 -sessions 30000 -concurrency 2000 -body-min 200 -body-max 600
	echo
	echo "=== tiny uploads, 2 000 clients at once (cmd/capgen -seed 31 -sessions 30000 -concurrency 2000 -body-min 200 -body-max 600) ==="
	bench "$W/flood.pcap"
fi
