package serve

import (
	"net/netip"
	"testing"
)

// One IPv6 site holds a /64 at least: counted per /128, ETRN would have
// no limit for anybody who can pick the last 64 bits of its address, and
// each new address would leave one more file in state_dir.
func TestRateKey(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"fe80::1%eth0", "fe80::2%eth1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"::ffff:192.0.2.1", "192.0.2.1", true},
	} {
		ka, kb := rateKey(netip.MustParseAddr(tc.a)), rateKey(netip.MustParseAddr(tc.b))
		if (ka == kb) != tc.same {
			t.Errorf("rateKey(%s) = %q, rateKey(%s) = %q; same wanted: %v", tc.a, ka, tc.b, kb, tc.same)
		}
		for _, k := range []string{ka, kb} {
			for i := 0; i < len(k); i++ {
				if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
					t.Errorf("rateKey of %s: %q holds %q", tc.a, k, c)
				}
			}
		}
	}
	if k := rateKey(netip.Addr{}); k != "etrn-unknown" {
		t.Errorf("rateKey of no address = %q, want etrn-unknown", k)
	}
	if k := rateKey(netip.MustParseAddr("192.0.2.1")); k != "etrn-192.0.2.1" {
		t.Errorf("rateKey(192.0.2.1) = %q", k)
	}
}
