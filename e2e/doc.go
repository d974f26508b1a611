// Package e2e holds the end-to-end tests of expectscope against real
// nginx, curl and tcpdump on the loopback interface. They are behind the
// e2e build tag and need root: run e2e/run.sh (CI does, from .ci/run).
package e2e
