#!/usr/bin/env bash
# End-to-end check of the HTML report (issue 5) in a real headless
# Chromium: build expectscope, write the report of shipped captures
# (several files read as one), load it offline, dump the DOM and assert
# on what a reader sees (verdict and flag counts, the chart's marks, a
# ladder for the flagged negotiations, the hop ladders), then take a
# screenshot and check it is not blank.
#
#   bash e2e/html.sh            # CI runs this from .ci/run
#   HTML_E2E_KEEP=dir bash e2e/html.sh   # keep report.html, dom.html, shot.png
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
	if [ "${CI:-}" = true ]; then
		echo "e2e/html.sh: chromium not installed" >&2
		exit 1
	fi
	echo "e2e/html.sh: chromium not installed, skipped (apt-get install chromium)" >&2
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/expectscope" ./cmd/expectscope
go build -o "$tmp/htmlcheck" ./e2e/htmlcheck

D=testdata/corpus/direct
P=testdata/corpus/proxy
captures=(
	"$D/curl-nginx-417-retry-desync.pcap.gz"
	"$D/curl-python-reject-after-100.pcap.gz"
	"$D/curl-go-slowread-late-100.pcap.gz"
	"$D/curl-silent-timeout-default.pcap.gz"
	"$D/go-client-silent-timeout.pcap.gz"
	"$D/curl-nginx-keepalive-mixed.pcap.gz"
	"$P/nginx_default_strict_origin.pcap.gz"
)
"$tmp/expectscope" read --summary --format json --html "$tmp/report.html" "${captures[@]}" >"$tmp/summary.json"
# The hops the tool found: each gets a client | proxy | origin ladder.
hops=$("$tmp/expectscope" read --format ndjson "${captures[@]}" | grep -c '"type":"hop"' || true)

chrome() {
	timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--hide-scrollbars --user-data-dir="$(mktemp -d "$tmp/profile.XXXXXX")" "$@" 2>>"$tmp/chromium.log"
}
if ! chrome --dump-dom "file://$tmp/report.html" >"$tmp/dom.html" || [ ! -s "$tmp/dom.html" ]; then
	cat "$tmp/chromium.log" >&2
	echo "e2e/html.sh: chromium could not load the report" >&2
	exit 1
fi
"$tmp/htmlcheck" dom -summary "$tmp/summary.json" -hops "$hops" \
	-ladder "PUT /e417/x.txt HTTP/1.1" -ladder "417" -ladder "retried-without-expect" \
	-ladder "late-100" -ladder "100 Continue" \
	"$tmp/dom.html"

chrome --screenshot="$tmp/shot.png" --window-size=1400,2000 "file://$tmp/report.html" >/dev/null
# Continued green, rejected red, timed-out purple: the verdict bar paints them.
"$tmp/htmlcheck" png -min-bytes 40000 -min-colors 64 -color 2e9e5b -color d64545 -color 8e5bd6 "$tmp/shot.png"

if [ -n "${HTML_E2E_KEEP:-}" ]; then
	mkdir -p "$HTML_E2E_KEEP"
	cp "$tmp/report.html" "$tmp/dom.html" "$tmp/shot.png" "$tmp/summary.json" "$HTML_E2E_KEEP/"
fi
echo "e2e/html.sh: ok"
