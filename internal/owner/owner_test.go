package owner

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The refusals of Become happen before any switch, so they can be tested
// in this process (a switch would be for good). As root, a link planted
// for the spool directory by another user must be refused, not followed.
func TestBecomeRefuses(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o770); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dir, want string
		unsafe          bool
	}{
		{"group-writable", open, "chmod go-w " + open, true},
		{"not a directory", file, "not a directory", false},
		{"missing", filepath.Join(base, "missing"), "no such file", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			sw, err := Become(c.dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, ErrUnsafe) != c.unsafe || sw.Changed {
				t.Errorf("Become(%s) = %+v, %v; want an error with %q (unsafe: %v)", c.dir, sw, err, c.want, c.unsafe)
			}
		})
	}
	t.Run("link of another user's", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give the link to another user")
		}
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Skip("no user nobody")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		link := filepath.Join(base, "link")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(link, uid, gid); err != nil {
			t.Fatal(err)
		}
		sw, err := Become(link)
		if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "symbolic link owned by uid "+u.Uid) || sw.Changed {
			t.Errorf("Become(link of uid %d) = %+v, %v", uid, sw, err)
		}
	})
	t.Run("root's own directory", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		sw, err := Become(real)
		if err != nil || sw.Changed {
			t.Errorf("Become(a directory of root's) = %+v, %v; want no switch", sw, err)
		}
	})
}
