#!/usr/bin/env bash
# End-to-end tests of expectscope against real nginx, curl and tcpdump on
# the loopback interface (see e2e/e2e_test.go). Needs root (CAP_NET_RAW).
# Outside CI, missing root or tools skip the tests with a message; with
# CI=true they fail. E2E_SOAK=N sets the soak's upload count (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${CI:-}" == "true" && $(id -u) -eq 0 ]]; then
	if ! command -v nginx >/dev/null || ! command -v curl >/dev/null || ! command -v tcpdump >/dev/null; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx curl tcpdump >/dev/null
	fi
fi

# The tests stop what they start; should go test itself be killed, the
# process groups they recorded (nginx, tcpdump, expectscope) are killed here.
export E2E_PIDFILE
E2E_PIDFILE=$(mktemp)
cleanup() {
	while read -r pid; do kill -KILL -- "-$pid" 2>/dev/null || true; done <"$E2E_PIDFILE"
	rm -f "$E2E_PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

timeout --kill-after=10s 170s go test -tags e2e -count=1 -v -timeout 160s ./e2e/ "$@"
