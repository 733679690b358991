package serve

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"etrnflush/spool"
)

// rateOK counts one ETRN for the client's address and reports whether it
// is within etrn_limit per etrn_window. Under inetd every connection is a
// process of its own, so the count lives in state_dir: one small file per
// address holding the times of its recent ETRNs, changed under an flock
// on state_dir/lock. Losing the files only forgets recent requests; no
// mail depends on them.
func (s *session) rateOK() (bool, error) {
	n, err := s.rateTake(1)
	return n == 1, err
}

// rateTake counts up to n more units for the client's address and
// returns how many were within the limit. ETRN @domain that starts a
// flush for each of several hosts costs a unit per host beyond the
// first (the ETRN itself paid for the first): a process is what the
// limit protects.
func (s *session) rateTake(n int) (int, error) {
	lim := s.cfg.Serve.EtrnLimit
	if lim <= 0 || n <= 0 {
		return n, nil
	}
	return rateCheck(s.cfg.Serve.StateDir, rateKey(s.client), lim, s.cfg.Serve.EtrnWindow, time.Now(), n)
}

// rateIPv6Bits is how much of an IPv6 address names one client: a /64 is
// the least a site is given, and counted per /128 a client could pick a
// fresh address for each ETRN.
const rateIPv6Bits = 64

// rateKey makes a file name of a client's address: an IPv4 address, an
// IPv6 client's /64, or "unknown" (a unix socket).
func rateKey(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "etrn-unknown"
	case a.Is4():
		return "etrn-" + a.String()
	}
	p, _ := a.WithZone("").Prefix(rateIPv6Bits) // cannot fail: 64 bits of an IPv6 address
	return "etrn-" + strings.NewReplacer(":", "_", "/", "_").Replace(p.String())
}

// rateCheck records up to n units for key and returns how many fit in
// limit per window.
func rateCheck(dir, key string, limit int, window time.Duration, now time.Time, n int) (granted int, err error) {
	d, err := openStateDir(dir)
	if err != nil {
		return 0, err
	}
	defer func() {
		_ = d.Close() // a directory opened to read: nothing to lose
	}()
	// Every name below resolves inside the directory opened, whatever
	// becomes of the path meanwhile: nothing is followed out of it.
	dir = fmt.Sprintf("/proc/self/fd/%d", d.Fd())
	lf, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("state_dir lock: %w", err)
	}
	defer func() {
		// Closing drops the flock.
		if cerr := lf.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("state_dir lock: %w", cerr)
		}
	}()
	for {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("state_dir lock: %w", err)
	}
	path := filepath.Join(dir, key)
	times, err := readTimes(path, now.Add(-window))
	if err != nil {
		return 0, err
	}
	granted = min(n, limit-len(times))
	if granted <= 0 {
		return 0, nil
	}
	for i := 0; i < granted; i++ {
		times = append(times, now.UnixNano())
	}
	err = spool.WriteFileAtomic(path, 0o600, func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		for _, t := range times {
			fmt.Fprintf(bw, "%d\n", t)
		}
		return bw.Flush()
	})
	if err != nil {
		return 0, fmt.Errorf("rate state: %w", err)
	}
	return granted, sweep(dir, now, window)
}

// openStateDir opens state_dir, making it first if need be, without
// following a symbolic link, and refuses one that belongs to another user
// or that others may write: serve may run as root, and the spool's user
// must not be able to point it at a directory of its choosing.
func openStateDir(dir string) (*os.File, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	return openStateDirNoCreate(dir)
}

func openStateDirNoCreate(dir string) (*os.File, error) {
	var st unix.Stat_t
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if unix.Lstat(dir, &st) == nil {
			switch {
			case st.Mode&unix.S_IFMT == unix.S_IFLNK:
				return nil, fmt.Errorf("state_dir %s is a symbolic link, which is never followed: set state_dir to a real directory, or remove the link", dir)
			case errors.Is(err, unix.EACCES):
				// Another user's, most likely root's from a run
				// that did not switch: say whose.
				return nil, stateDirNotMine(dir, &st)
			}
		}
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	if int(st.Uid) != unix.Geteuid() || st.Mode&0o022 != 0 {
		_ = unix.Close(fd)
		return nil, stateDirNotMine(dir, &st)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

func stateDirNotMine(dir string, st *unix.Stat_t) error {
	return fmt.Errorf("state_dir %s belongs to uid %d with mode %04o: it must be this user's (uid %d) and writable by nobody else; remove it (it holds only ETRN counts) and it is made again",
		dir, st.Uid, st.Mode&0o7777, unix.Geteuid())
}

// CheckStateDir is serve's check at start-up, before any client is
// answered: a state_dir that exists must be a directory of this user's,
// writable by nobody else, and not a symbolic link (it is never
// followed). One that does not exist yet is made on the first ETRN.
// Nothing is created or changed here.
func CheckStateDir(dir string) error {
	var st unix.Stat_t
	err := unix.Lstat(dir, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("state_dir %s: %w", dir, err)
	}
	d, err := openStateDirNoCreate(dir)
	if err != nil {
		return err
	}
	return d.Close()
}

// readTimes returns the times in path that are after since.
func readTimes(path string, since time.Time) ([]int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ELOOP) {
		// A link planted in its place is not read: the count written
		// next replaces the link itself (a rename), never its target.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rate state: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("rate state: %w", err)
	}
	var out []int64
	for _, l := range bytes.Split(b, []byte("\n")) {
		t, err := strconv.ParseInt(string(l), 10, 64)
		if err == nil && t > since.UnixNano() {
			out = append(out, t)
		}
	}
	return out, nil
}

// sweep removes the files of addresses not seen for a window, at most
// once per window, so that the state of clients that never come back does
// not pile up.
func sweep(dir string, now time.Time, window time.Duration) error {
	mark := filepath.Join(dir, "swept")
	if fi, err := os.Lstat(mark); err == nil && fi.Mode().IsRegular() && now.Sub(fi.ModTime()) < window {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("rate state: %w", err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "etrn-") {
			continue
		}
		fi, err := e.Info()
		if err != nil || now.Sub(fi.ModTime()) < window {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rate state: %w", err)
		}
	}
	if fi, err := os.Lstat(mark); err == nil && !fi.Mode().IsRegular() {
		// A link (or anything else) planted in its place goes, and
		// only the name: unlink never follows it.
		if err := os.Remove(mark); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rate state: %w", err)
		}
	}
	f, err := os.OpenFile(mark, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("rate state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("rate state: %w", err)
	}
	// Not os.Chtimes: it would follow a link swapped in meanwhile.
	ts := []unix.Timespec{unix.NsecToTimespec(now.UnixNano()), unix.NsecToTimespec(now.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, mark, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("rate state: %w", err)
	}
	return nil
}
