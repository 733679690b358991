package serve

import (
	"errors"
	"testing"
	"time"
)

// A failed AUTH must take as long for a user name that does not exist as
// for a wrong password, or its time tells which users exist. The test
// users' hashes are at bcrypt's lowest cost, as an admin's may be at any
// cost: an unknown user compared against a hash of another cost stands
// out.
func TestAuthUnknownUserTiming(t *testing.T) {
	f := hostsFixture(t, trustLocal)
	s := &session{cfg: f.cfg}
	best := func(user string) time.Duration {
		min := time.Duration(1<<63 - 1)
		for i := 0; i < 5; i++ {
			start := time.Now()
			if err := s.checkPassword(user, "wrong"); !errors.Is(err, errBadCredentials) {
				t.Fatalf("checkPassword(%q, wrong) = %v", user, err)
			}
			if d := time.Since(start); d < min {
				min = d
			}
		}
		return min
	}
	known, unknown := best("alice"), best("mallory")
	if unknown > 4*known+5*time.Millisecond {
		t.Errorf("a wrong password for a known user takes %v, an unknown user %v: AUTH tells which users exist", known, unknown)
	}
}
