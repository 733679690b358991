package spool

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// HostBusy reports whether a flush of host holds the host lock in dir right
// now. It only looks: unlike LockHost it asks the holder for nothing, and
// it creates no file. The answer can be stale at once; ATRN uses it to say
// "try later" (RFC 2645's 451) rather than turn a connection around for
// hosts it then could not flush.
func HostBusy(dir, host string) (bool, error) {
	lockPath, _ := hostLockPaths(dir, host)
	f, err := openRegular(lockPath, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("host lock %s: %w", lockPath, err)
	}
	ok, err := tryFlock(f)
	if ok {
		err = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("host lock %s: %w", lockPath, err)
	}
	return !ok, nil
}
