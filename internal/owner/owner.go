// Package owner makes a run started as root act as the owner of the spool
// directory, so that every file it creates there can be used by the next
// run, whoever starts it (Exim as its own user, a link-up script or inetd
// as root).
package owner

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrUnsafe is a spool directory that another user could change under us:
// writable by group or others without the sticky bit (exit 77).
var ErrUnsafe = errors.New("unsafe spool directory")

// Switch is what Become did.
type Switch struct {
	Dir      string
	UID, GID int
	Name     string // the user's name, or its number
	Changed  bool   // false: not root, or the directory is root's
}

// String gives the switch as log fields: user=NAME uid=N gid=N.
func (s Switch) String() string {
	if !s.Changed {
		return fmt.Sprintf("uid=%d", unix.Getuid())
	}
	return fmt.Sprintf("user=%s uid=%d gid=%d", s.Name, s.UID, s.GID)
}

// Who checks dir as Become does and says whom a run started as root
// would act as, without switching: Changed is true when it would switch
// (UID, GID, Name say to whom). For check-config.
func Who(dir string) (Switch, error) {
	sw := Switch{Dir: dir}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return sw, fmt.Errorf("spool directory: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		if st.Uid != 0 {
			return sw, fmt.Errorf("%w: %s is a symbolic link owned by uid %d; use the real path", ErrUnsafe, dir, st.Uid)
		}
		if err := unix.Stat(dir, &st); err != nil {
			return sw, fmt.Errorf("spool directory: %w", err)
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return sw, fmt.Errorf("spool directory %s is not a directory", dir)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return sw, fmt.Errorf("%w: %s is writable by group or others (mode %04o); run chmod go-w %s", ErrUnsafe, dir, st.Mode&0o7777, dir)
	}
	if unix.Geteuid() != 0 || st.Uid == 0 {
		return sw, nil
	}
	sw.UID, sw.GID, sw.Name = int(st.Uid), int(st.Gid), strconv.Itoa(int(st.Uid))
	if u, err := user.LookupId(strconv.Itoa(sw.UID)); err == nil {
		sw.Name = u.Username
		if g, err := strconv.Atoi(u.Gid); err == nil {
			sw.GID = g
		}
	}
	sw.Changed = true
	return sw, nil
}

// Become checks dir and, when the process runs as root and dir belongs to
// another user, switches for good to that user, its primary group and no
// supplementary groups. It must run before any file is created and before
// the network is touched. dir itself is not followed if it is a symbolic
// link that root does not own. A directory that group or others may write
// without the sticky bit is refused whoever runs: a run as its owner
// would act on files another user can swap.
func Become(dir string) (Switch, error) {
	sw, err := Who(dir)
	if err != nil || !sw.Changed {
		return sw, err
	}
	sw.Changed = false
	// Go applies these to every thread of the process (since Go 1.16).
	if err := syscall.Setgroups(nil); err != nil {
		return sw, fmt.Errorf("drop supplementary groups: %w", err)
	}
	if err := syscall.Setgid(sw.GID); err != nil {
		return sw, fmt.Errorf("switch to gid %d: %w", sw.GID, err)
	}
	if err := syscall.Setuid(sw.UID); err != nil {
		return sw, fmt.Errorf("switch to uid %d: %w", sw.UID, err)
	}
	sw.Changed = true
	return sw, nil
}
