//go:build !linux && !libpcap

package capture

import "fmt"

// OpenLive reports that this build cannot capture live: the AF_PACKET
// source is Linux only; elsewhere build with -tags libpcap.
func OpenLive(opt LiveOptions) (*LiveSource, error) {
	return nil, fmt.Errorf("%w: AF_PACKET is Linux only; build with -tags libpcap", ErrNotSupported)
}
