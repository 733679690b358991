package spool

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked means Exim's lock on the spool file could not be had in time;
// the mail stays where it is for a later run.
var ErrLocked = errors.New("spool file is locked by another process")

// Timings of the claim; tests shorten them.
var (
	lockFileTimeout = 30 * time.Second // Exim itself gives up after 10 x 3 s
	lockFileStale   = 30 * time.Minute // Exim's lockfile_timeout
	fcntlTimeout    = 5 * time.Second
	lockRetryMin    = 100 * time.Millisecond
	lockRetryMax    = 250 * time.Millisecond
	hostname        = os.Hostname
	nowFunc         = time.Now
)

func retrySleep() {
	span := int64(lockRetryMax - lockRetryMin)
	d := lockRetryMin
	if span > 0 {
		d += time.Duration(rand.Int64N(span))
	}
	time.Sleep(d)
}

// takeLockFile takes path+".lock" exactly as Exim's appendfile does (a
// hitching post hard-linked to the lock name), so Exim waits for us and we
// wait for Exim. It returns a function that removes the lock.
func takeLockFile(path string, report func(Event)) (unlock func() error, err error) {
	lock := path + ".lock"
	host, err := hostname()
	if err != nil {
		return nil, fmt.Errorf("lock %s: hostname: %w", lock, err)
	}
	deadline := nowFunc().Add(lockFileTimeout)
	for {
		post := fmt.Sprintf("%s.%s.%x.%x", lock, host, nowFunc().Unix(), os.Getpid())
		ok, err := hitch(post, lock)
		if err != nil {
			return nil, err
		}
		if ok {
			return func() error {
				if err := os.Remove(lock); err != nil {
					return fmt.Errorf("unlock %s: %w", lock, err)
				}
				return nil
			}, nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(lock, &st); err == nil {
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				// Neither Exim nor we made it: waiting would not free it.
				return nil, fmt.Errorf("lock file %s is not a regular file (mode %o); remove it", lock, st.Mode)
			}
			ctime := time.Unix(st.Ctim.Unix())
			if nowFunc().Sub(ctime) > lockFileStale {
				// Exim removes a lock file this old too: its owner died.
				if err := os.Remove(lock); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, fmt.Errorf("remove stale %s: %w", lock, err)
				}
				report(Event{Kind: "notice", ID: filepath.Base(path), Reason: "removed stale lock file " + lock})
				continue
			}
		}
		if nowFunc().After(deadline) {
			return nil, fmt.Errorf("lock file %s: %w", lock, ErrLocked)
		}
		retrySleep()
	}
}

// hitch creates the post and links it to lock. ok=false means the lock is
// held by someone else.
func hitch(post, lock string) (ok bool, err error) {
	f, err := os.OpenFile(post, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, fmt.Errorf("lock post %s: %w", post, err)
	}
	defer func() {
		if rerr := os.Remove(post); rerr != nil && err == nil {
			if ok {
				_ = os.Remove(lock) // do not keep a lock the caller will not know about
			}
			ok, err = false, fmt.Errorf("remove lock post: %w", rerr)
		}
	}()
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("lock post %s: %w", post, err)
	}
	lerr := os.Link(post, lock)
	if lerr == nil {
		return true, nil
	}
	// On NFS link can report failure after succeeding; the post's link
	// count tells the truth (Exim checks the same).
	var st unix.Stat_t
	if err := unix.Lstat(post, &st); err == nil && st.Nlink == 2 {
		return true, nil
	}
	if errors.Is(lerr, os.ErrExist) {
		return false, nil
	}
	return false, fmt.Errorf("lock %s: %w", lock, lerr)
}

// fcntlLock takes a whole-file write lock on f, retrying until timeout.
func fcntlLock(f *os.File, timeout time.Duration) error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	deadline := nowFunc().Add(timeout)
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("fcntl lock %s: %w", f.Name(), err)
		}
		if nowFunc().After(deadline) {
			return fmt.Errorf("fcntl lock %s: %w", f.Name(), ErrLocked)
		}
		retrySleep()
	}
}

// claim moves the appended spool file to a new private work file under
// Exim's two locks. It returns "" when there is nothing to claim. Exim's
// file is never truncated, linked or re-created: Exim makes a new one on
// its next delivery.
func claim(path, workDir, workPrefix string, minNanos int64, report func(Event)) (work string, size int64, err error) {
	// Most runs find no new mail: look before taking Exim's lock file, so
	// that an empty run never creates one a crash could leave behind.
	if fi, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) || (err == nil && fi.Mode().IsRegular() && fi.Size() == 0) {
		return "", 0, nil
	}
	unlock, err := takeLockFile(path, report)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	f, err := openRegular(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("claim %s: %w", path, err)
	}
	defer func() {
		// Closing drops the fcntl lock; it must come after the rename.
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("claim %s: close: %w", path, cerr)
		}
	}()
	if err := fcntlLock(f, fcntlTimeout); err != nil {
		return "", 0, err
	}
	var fst, lst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return "", 0, fmt.Errorf("claim %s: fstat: %w", path, err)
	}
	if err := unix.Lstat(path, &lst); err != nil {
		return "", 0, fmt.Errorf("claim %s: lstat: %w", path, err)
	}
	if fst.Dev != lst.Dev || fst.Ino != lst.Ino {
		return "", 0, fmt.Errorf("claim %s: file was replaced while opening it", path)
	}
	if fst.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", 0, fmt.Errorf("claim %s: not a regular file", path)
	}
	if fst.Nlink != 1 {
		return "", 0, fmt.Errorf("claim %s: has %d links, expected 1", path, fst.Nlink)
	}
	if fst.Size == 0 {
		return "", 0, nil
	}
	nanos := nowFunc().UnixNano()
	if nanos < minNanos {
		nanos = minNanos
	}
	for {
		work = filepath.Join(workDir, workName(workPrefix, nanos))
		// Never clobber a work file that holds mail.
		err = renameNoReplace(path, work)
		if !errors.Is(err, os.ErrExist) {
			break
		}
		nanos++
	}
	if err != nil {
		return "", 0, fmt.Errorf("claim %s: rename: %w", path, err)
	}
	if err := syncDir(workDir); err != nil {
		return "", 0, fmt.Errorf("claim %s: %w", path, err)
	}
	return work, fst.Size, nil
}

func workName(prefix string, nanos int64) string {
	return prefix + fmt.Sprintf("%020d", nanos) + ".work"
}

// parseWorkName returns the nanos of a work or journal name, or -1.
func parseWorkName(prefix, suffix, name string) int64 {
	if len(name) != len(prefix)+20+len(suffix) || name[:len(prefix)] != prefix || name[len(prefix)+20:] != suffix {
		return -1
	}
	n, err := strconv.ParseInt(name[len(prefix):len(prefix)+20], 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
