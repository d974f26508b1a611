package reassembly

import (
	"testing"
	"time"
)

// TestStablePayloads runs every case with Config.StablePayloads (payloads
// left intact after Add, as a mapped file's are): the same calls and the
// same counts, conflicts included, as with checksums.
func TestStablePayloads(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, wa := run(t, tc.cfg, tc.segs, tc.flushAt, tc.multi)
			cfg := tc.cfg
			cfg.StablePayloads = true
			r := &recorder{base: base, multi: tc.multi}
			a := NewAssembler(r, cfg)
			for i, g := range tc.segs {
				a.Add(g.segment(uint64(i + 1)))
			}
			if tc.flushAt >= 0 {
				a.FlushAll(base.Add(time.Duration(tc.flushAt) * time.Millisecond))
			}
			diffLog(t, r.log, want.log)
			if a.Stats() != wa.Stats() {
				t.Errorf("stats %+v, want %+v", a.Stats(), wa.Stats())
			}
		})
	}
}
