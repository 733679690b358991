package serve

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestStateDirNotFollowed: a state_dir that is a symbolic link (which the
// spool's user could plant for a serve running as root), or a directory
// others may write, is refused; nothing is created, truncated or removed
// where it points.
func TestStateDirNotFollowed(t *testing.T) {
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(victim, "keep")
	if err := os.WriteFile(keep, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "state")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := rateCheck(link, "etrn-192.0.2.1", 10, time.Minute, now, 1); err == nil {
		t.Fatal("a state_dir that is a symbolic link was used")
	}
	entries, err := os.ReadDir(victim)
	if err != nil || len(entries) != 1 || entries[0].Name() != "keep" {
		t.Errorf("the link's target changed: %v %v", entries, err)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "precious\n" {
		t.Errorf("the link's target's file changed: %q %v", b, err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := rateCheck(open, "etrn-192.0.2.1", 10, time.Minute, now, 1); err == nil || !strings.Contains(err.Error(), "writable by nobody else") {
		t.Errorf("a world-writable state_dir was used: %v", err)
	}
	own := filepath.Join(base, "own")
	if n, err := rateCheck(own, "etrn-192.0.2.1", 10, time.Minute, now, 1); err != nil || n != 1 {
		t.Errorf("a state_dir of its own: %d %v", n, err)
	}
}

// TestStateDirFilesNotFollowed: a link planted in state_dir in place of
// one of its files is never followed: the rate file and the sweep mark
// are replaced (only the link goes), a linked lock makes the ETRN fail;
// the link's target keeps its content, size and time in every case.
func TestStateDirFilesNotFollowed(t *testing.T) {
	for _, name := range []string{"lock", "etrn-192.0.2.1", "swept"} {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			state := filepath.Join(base, "state")
			if err := os.Mkdir(state, 0o700); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(base, "target")
			if err := os.WriteFile(target, []byte("1\n2\n3\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-time.Hour).Truncate(time.Second)
			if err := os.Chtimes(target, old, old); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(state, name)
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			n, err := rateCheck(state, "etrn-192.0.2.1", 10, time.Minute, time.Now(), 1)
			if name == "lock" {
				if err == nil {
					t.Error("a lock that is a symbolic link was used")
				}
			} else if err != nil || n != 1 {
				t.Errorf("rateCheck = %d, %v; want the link replaced", n, err)
			} else if fi, err := os.Lstat(link); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("%s is still not a regular file: %v", name, err)
			}
			fi, err := os.Stat(target)
			if b, rerr := os.ReadFile(target); err != nil || rerr != nil || string(b) != "1\n2\n3\n" || !fi.ModTime().Equal(old) {
				t.Errorf("the target changed: %q, %v, %v", b, err, rerr)
			}
		})
	}
	t.Run("CheckStateDir", func(t *testing.T) {
		base := t.TempDir()
		if err := CheckStateDir(filepath.Join(base, "missing")); err != nil {
			t.Errorf("a state_dir not made yet: %v", err)
		}
		if _, err := os.Stat(filepath.Join(base, "missing")); !os.IsNotExist(err) {
			t.Errorf("CheckStateDir made state_dir: %v", err)
		}
		link := filepath.Join(base, "link")
		if err := os.Symlink(base, link); err != nil {
			t.Fatal(err)
		}
		if err := CheckStateDir(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("a state_dir that is a link: %v", err)
		}
		if err := CheckStateDir(base); err != nil {
			t.Errorf("a state_dir of its own: %v", err)
		}
	})
}
