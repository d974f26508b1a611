#!/bin/bash
# realcap.sh: capture real HTTP/1.1 upload traffic with Expect: 100-continue.
#
#   sudo bench/realcap.sh [SIZE_MB] [OUT]   (default 400, /tmp/expectscope-real.pcap)
#
# Two network namespaces joined by a veth pair (MTU 1500, TSO/GSO/GRO and
# tx checksum offload off on both ends, so the capture holds wire-sized
# packets: 1448-byte payloads with TCP timestamps, valid checksums). The
# server namespace runs Debian's nginx with its own configuration (in a
# temporary directory, not /etc/nginx) and these locations:
#
#   /upload/  reads the body (nginx sends 100 Continue), proxies to a sink
#   /dav/     PUT through the dav module (reads the body, 100 Continue)
#   /small/   client_max_body_size 8k: 413 before the body
#   /e417/    417 when the request has Expect, connection kept open (curl
#             retries on it at once, without the body nginx now discards)
#   /e417c/   the same with keepalive_timeout 0: 417 and close
#   /auth/    return 401 at once, without reading the body
#   /hook/    return 202 at once, without reading the body
#   /static/  files for GETs
#
# The client namespace runs CLIENTS (default 6) loops of curl, each
# invocation sending 3-10 requests over kept-alive connections (--next):
# PUT and POST bodies of 16 KiB - 2 MiB with -H 'Expect: 100-continue' or
# curl's own Expect on PUT, plain uploads without Expect, and GETs. The request plan is drawn from a
# fixed seed (worker, iteration), so the mix is reproducible; timings are
# whatever the machine does. tcpdump -i VETH -s 0 writes OUT (pcap) in the
# server namespace until it reaches SIZE_MB (10^6 bytes); then the clients
# finish their current invocation, tcpdump stops, and everything is torn
# down (also on error or Ctrl-C). nginx's access log is kept as
# OUT.access.log to check the analysis against.
set -euo pipefail

SIZE=${1:-400}
OUT=${2:-/tmp/expectscope-real.pcap}
CLIENTS=${CLIENTS:-6}
case $SIZE in '' | *[!0-9]*) echo "realcap: SIZE_MB must be a whole number of MB, not '$SIZE'" >&2; exit 1 ;; esac

die() { echo "realcap: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, tcpdump): sudo $0 $*"
missing=""
for c in ip nginx curl tcpdump ethtool go capinfos; do
	command -v $c >/dev/null 2>&1 || missing="$missing $c"
done
[ -z "$missing" ] || die "missing:$missing -- install with: apt-get install -y iproute2 nginx curl tcpdump ethtool wireshark-common (and Go)"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
case $OUT in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$(dirname "$OUT")"

TAG=esrc$$
NS_S=$TAG-srv
NS_C=$TAG-cli
DEV_S=${TAG}s
DEV_C=${TAG}c
IP_S=10.231.0.1
IP_C=10.231.0.2
# The work directory holds the nginx configuration, request bodies and
# temp files; under /dev/shm when there is one, so that the disk is not
# the bottleneck.
D=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp)/realcap.XXXXXX")
TCPDUMP_PID=""
CLIENT_PIDS=""

cleanup() {
	set +e
	[ -n "$CLIENT_PIDS" ] && kill $CLIENT_PIDS 2>/dev/null
	if [ -n "$TCPDUMP_PID" ] && kill -0 "$TCPDUMP_PID" 2>/dev/null; then
		kill -INT "$TCPDUMP_PID" 2>/dev/null
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$TCPDUMP_PID" 2>/dev/null || break; sleep 0.2; done
	fi
	[ -s "$D/nginx.pid" ] && kill -QUIT "$(cat "$D/nginx.pid")" 2>/dev/null
	# Anything still running in our namespaces was started by this script.
	for ns in "$NS_C" "$NS_S"; do
		if ip netns list 2>/dev/null | grep -qw "^$ns"; then
			pids=$(ip netns pids "$ns" 2>/dev/null)
			[ -n "$pids" ] && kill $pids 2>/dev/null && sleep 0.3
			pids=$(ip netns pids "$ns" 2>/dev/null)
			[ -n "$pids" ] && kill -9 $pids 2>/dev/null
			ip netns del "$ns" 2>/dev/null
		fi
	done
	ip link del "$DEV_S" 2>/dev/null
	rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- network ---------------------------------------------------------------
ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$DEV_S" mtu 1500 type veth peer name "$DEV_C" mtu 1500
ip link set "$DEV_S" netns "$NS_S"
ip link set "$DEV_C" netns "$NS_C"
ip -n "$NS_S" addr add $IP_S/24 dev "$DEV_S"
ip -n "$NS_C" addr add $IP_C/24 dev "$DEV_C"
for pair in "$NS_S $DEV_S" "$NS_C $DEV_C"; do
	set -- $pair
	ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off >/dev/null 2>&1 ||
		ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null ||
		die "ethtool -K $2 tso off gso off gro off failed"
	ip -n "$1" link set lo up
	ip -n "$1" link set "$2" up
done
set -- "$SIZE" "$OUT"

# --- server ------------------------------------------------------------------
mkdir -p "$D/www/static" "$D/www/dav" "$D/body" "$D/proxy" "$D/tmp" "$D/bodies" "$D/bin"
cat >"$D/nginx.conf" <<EOF
user root;
worker_processes 2;
pid $D/nginx.pid;
error_log $D/error.log warn;
events { worker_connections 1024; }
http {
    log_format rc '\$msec \$remote_addr:\$remote_port \$connection \$connection_requests '
                  '\$request_method \$uri \$status expect=\$http_expect cl=\$http_content_length '
                  'req=\$request_length sent=\$bytes_sent';
    access_log $D/access.log rc;
    client_body_temp_path $D/body;
    proxy_temp_path $D/proxy;
    fastcgi_temp_path $D/tmp;
    uwsgi_temp_path $D/tmp;
    scgi_temp_path $D/tmp;
    client_body_buffer_size 4m;
    client_max_body_size 16m;
    keepalive_requests 10000;
    keepalive_timeout 60s;
    sendfile on;

    upstream sink { server 127.0.0.1:8081; keepalive 16; }
    server {
        listen 127.0.0.1:8081;
        access_log off;
        location / { return 200 "stored\n"; }
    }
    server {
        listen $IP_S:80;
        server_name realcap;
        root $D/www;
        location /upload/ {
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /dav/ {
            dav_methods PUT;
            create_full_put_path on;
        }
        location /small/ {
            client_max_body_size 8k;
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /e417/ {
            if (\$http_expect) { return 417; }
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /e417c/ {
            keepalive_timeout 0;
            if (\$http_expect) { return 417; }
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /auth/ { return 401; }
        location /hook/ { return 202 "accepted\n"; }
        location /static/ { }
    }
}
EOF
SIZES="16384 49152 102400 262144 524288 1048576 1572864 2097152"
for s in $SIZES; do
	head -c "$s" /dev/urandom >"$D/bodies/$s"
	head -c "$s" /dev/urandom >"$D/www/static/$s"
done
ip netns exec "$NS_S" nginx -p "$D" -c "$D/nginx.conf" -e "$D/error.log" ||
	die "nginx did not start: $(tail -3 "$D/error.log" 2>/dev/null)"

# expectscope, for the summary at the end
go -C "$ROOT" build -o "$D/bin/expectscope" ./cmd/expectscope || die "go build failed"

# --- capture -----------------------------------------------------------------
rm -f "$OUT"
ip netns exec "$NS_S" tcpdump -i "$DEV_S" -s 0 -B 131072 -Z root -w "$OUT" 2>"$D/tcpdump.err" &
TCPDUMP_PID=$!
for _ in $(seq 50); do
	grep -q 'listening on' "$D/tcpdump.err" 2>/dev/null && break
	kill -0 $TCPDUMP_PID 2>/dev/null || die "tcpdump failed: $(cat "$D/tcpdump.err")"
	sleep 0.1
done
for _ in $(seq 50); do
	ip netns exec "$NS_C" curl -s -o /dev/null --max-time 1 "http://$IP_S/static/16384" && break
	sleep 0.1
done

# plan W I: the curl arguments of invocation I of client W, one per line.
plan() {
	awk -v w="$1" -v i="$2" -v base="http://$IP_S" -v bodies="$D/bodies" -v sizes="$SIZES" 'BEGIN {
		srand(w * 1000003 + i)
		ns = split(sizes, sz, " ")
		k = 3 + int(rand() * 8)
		for (j = 1; j <= k; j++) {
			if (j > 1) print "--next"
			print "-sS"; print "-o"; print "/dev/null"
			s = sz[1 + int(rand() * ns)]
			name = "w" w "-" i "-" j
			r = rand()
			if (r < 0.40) { kind = "upload"; ex = 1 }
			else if (r < 0.48) { kind = "dav"; ex = 1 }
			else if (r < 0.56) { kind = "small"; ex = 1 }
			else if (r < 0.59) { kind = "e417"; ex = 1 }
			else if (r < 0.62) { kind = "e417c"; ex = 1 }
			else if (r < 0.67) { kind = "auth"; ex = 1 }
			else if (r < 0.72) { kind = "hook"; ex = 1 }
			else if (r < 0.86) { kind = "upload"; ex = 0 }
			else { kind = "static"; ex = -1 }
			if (kind == "dav") name = "w" w
			if (ex >= 0) {
				# curl adds Expect to every PUT by itself (and to POSTs over
				# 1 MiB): a third of the Expect requests rely on that, the
				# others name the header (which curl keeps in a retry
				# after 417; its own it drops).
				auto = ex && rand() < 0.33
				if (!auto) { print "-H"; print (ex ? "Expect: 100-continue" : "Expect:") }
				if (auto || kind == "dav" || rand() < 0.5) { print "-T"; print bodies "/" s }
				else { print "-H"; print "Content-Type: application/octet-stream"; print "--data-binary"; print "@" bodies "/" s }
				print base "/" kind "/" name
			} else {
				print base "/static/" s
			}
		}
	}'
}
client() {
	local w=$1 i=0 args
	while [ ! -e "$D/stop" ]; do
		mapfile -t args < <(plan "$w" "$i")
		ip netns exec "$NS_C" curl --max-time 60 "${args[@]}" 2>>"$D/curl.err" || echo "client $w invocation $i: curl exit $?" >>"$D/curl.err"
		i=$((i + 1))
	done
}
START=$(date +%s)
for w in $(seq 1 "$CLIENTS"); do
	client "$w" &
	CLIENT_PIDS="$CLIENT_PIDS $!"
done
LIMIT=$((SIZE * 1000000))
last=0; still=0
while :; do
	sleep 0.25
	n=$(stat -c %s "$OUT" 2>/dev/null || echo 0)
	[ "$n" -ge "$LIMIT" ] && break
	kill -0 $TCPDUMP_PID 2>/dev/null || die "tcpdump exited: $(cat "$D/tcpdump.err")"
	if [ "$n" = "$last" ]; then still=$((still + 1)); else still=0; last=$n; fi
	[ $still -lt 80 ] || die "capture stopped growing at $n bytes; curl says: $(tail -3 "$D/curl.err" 2>/dev/null)"
	[ $(($(date +%s) - START)) -lt 600 ] || die "capture did not reach $SIZE MB in 10 minutes"
done
touch "$D/stop"
wait $CLIENT_PIDS 2>/dev/null || true
CLIENT_PIDS=""
# tcpdump lags behind the traffic (the kernel buffer holds what it has not
# written yet) and drops that buffer when interrupted: wait until the
# file stops growing.
last=-1
while :; do
	sleep 0.5
	n=$(stat -c %s "$OUT")
	[ "$n" = "$last" ] && break
	last=$n
done
kill -INT $TCPDUMP_PID
wait $TCPDUMP_PID 2>/dev/null || true
TCPDUMP_PID=""
END=$(date +%s)
cp "$D/access.log" "$OUT.access.log"

# --- report --------------------------------------------------------------------
echo "capture: $OUT, $(stat -c %s "$OUT") bytes in $((END - START)) s, $CLIENTS clients"
grep -E 'captured|received|dropped' "$D/tcpdump.err" | sed 's/^/tcpdump: /'
capinfos -c -M "$OUT" | sed -n 's/^Number of packets: */packets: /p'
count() { tcpdump -nr "$OUT" "$1" 2>/dev/null | wc -l; }
echo "frames longer than 1514 bytes (should be 0 with offloads off): $(count 'greater 1515'); full-sized 1514-byte frames: $(count 'len == 1514')"
echo "connections (SYNs): $(count 'tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn')"
echo "nginx answered $(wc -l <"$OUT.access.log") requests; with Expect, by location and status:"
awk '$8 != "expect=-" { split($6, p, "/"); n[p[2] " " $7]++ } END { for (k in n) printf "  %-10s %6d\n", k, n[k] }' "$OUT.access.log" | sort
echo "without Expect: $(awk '$8 == "expect=-"' "$OUT.access.log" | wc -l)"
if [ -s "$D/curl.err" ]; then echo "curl reported $(wc -l <"$D/curl.err") problems, first ones:"; head -5 "$D/curl.err"; fi
if [ -s "$D/error.log" ]; then echo "nginx error log, last lines:"; tail -3 "$D/error.log"; fi
echo "expectscope read --summary:"
"$D/bin/expectscope" read --summary -f table "$OUT" 2>&1 | head -60
