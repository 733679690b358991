package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrBusy means another flush for the same host holds the host lock; it has
// been asked for one more pass, so this run has nothing to do.
var ErrBusy = errors.New("another flush for this host is running")

// HostLock serialises flushes of one host. It is an flock on a file that is
// never removed (removing an flock'd file lets two holders exist at once).
type HostLock struct {
	f    *os.File
	flag string
}

func hostLockPaths(dir, host string) (lock, flag string) {
	n := privName(host)
	return filepath.Join(dir, ".etrnflush-"+n+".lock"), filepath.Join(dir, ".etrnflush-"+n+".again")
}

// LockHost takes the per-host lock in dir. When another run holds it, the
// holder is asked for another pass (a flag file), and ErrBusy is returned:
// the mail that triggered this run is then picked up by the holder.
func LockHost(dir, host string) (*HostLock, error) {
	lockPath, flag := hostLockPaths(dir, host)
	f, err := openRegular(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("host lock %s: %w", lockPath, err)
	}
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close() // the chmod error is the one to report
		return nil, fmt.Errorf("host lock %s: %w", lockPath, err)
	}
	ok, err := tryFlock(f)
	if err == nil && !ok {
		// Ask the holder for another pass, then try once more: it may have
		// released the lock before it could see the request.
		if err = touch(flag); err == nil {
			ok, err = tryFlock(f)
		}
	}
	if err != nil || !ok {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("host lock %s: %w", lockPath, err)
		}
		return nil, ErrBusy
	}
	// This run is a full pass: any request made before now is satisfied.
	if err := removeIfExists(flag); err != nil {
		_ = f.Close() // report the removal error; closing drops the lock
		return nil, fmt.Errorf("host lock %s: %w", lockPath, err)
	}
	return &HostLock{f: f, flag: flag}, nil
}

// TakeAgain reports (and consumes) a request from another run for one more
// pass since the lock was taken or last checked.
func (l *HostLock) TakeAgain() bool {
	return os.Remove(l.flag) == nil
}

// Release drops the lock. If a pass was requested meanwhile and the lock can
// be had again, it keeps the lock and returns again=true: the caller must do
// one more pass and call Release again.
func (l *HostLock) Release() (again bool, err error) {
	if l.f == nil {
		return false, errors.New("host lock released twice")
	}
	if err := unix.Flock(int(l.f.Fd()), unix.LOCK_UN); err != nil {
		return false, l.closeWith(fmt.Errorf("unlock host: %w", err))
	}
	if _, err := os.Lstat(l.flag); err == nil {
		ok, err := tryFlock(l.f)
		if err != nil {
			return false, l.closeWith(fmt.Errorf("relock host: %w", err))
		}
		if ok {
			if err := removeIfExists(l.flag); err != nil {
				return false, l.closeWith(fmt.Errorf("relock host: %w", err))
			}
			return true, nil
		}
	}
	return false, l.closeWith(nil)
}

// Abandon drops the lock without looking for requests: for a run that
// stops on an error or an unreachable host, where another pass would
// deliver nothing now. A request made meanwhile stays on disk; the next
// run to take the lock counts as the pass it asked for.
func (l *HostLock) Abandon() error {
	if l.f == nil {
		return errors.New("host lock released twice")
	}
	return l.closeWith(nil)
}

func (l *HostLock) closeWith(err error) error {
	cerr := l.f.Close()
	l.f = nil
	if err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("close host lock: %w", cerr)
	}
	return nil
}

func tryFlock(f *os.File) (bool, error) {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return false, fmt.Errorf("flock: %w", err)
		}
	}
}

// touch creates path (0600) if it does not exist.
func touch(path string) error {
	f, err := openRegular(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close() // report the chmod error
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
