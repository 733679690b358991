package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"etrnflush/bsmtp"
)

// FailedDir is the folder beside the spool at path where copies of
// refused messages are set aside (see writeFailed).
func FailedDir(path string) string {
	p := filepath.Clean(path)
	return failedDir(filepath.Dir(p), filepath.Base(p))
}

// QuarantineDir is the folder beside the spool at path where damaged
// entries are moved.
func QuarantineDir(path string) string {
	p := filepath.Clean(path)
	return quarantineDir(filepath.Dir(p), filepath.Base(p))
}

// Copy is one entry of a failed or quarantine folder: STEM.why with the
// reason, and the files of the copy itself (STEM.bsmtp for a failed copy
// or a quarantined BSMTP region or file; STEM.env and STEM.msg for a
// mailstore pair; STEM.eml for a maildir message).
type Copy struct {
	ID     string    // the stem
	Reason string    // the .why file's one line
	Time   time.Time // when it was set aside (the .why file's time)
	Files  []string  // full paths of the copy's files, .why last
	Size   int64     // of the copy's files, .why not counted
}

// copyExts are the suffixes a copy's own files have, in the order listed.
var copyExts = []string{".bsmtp", ".env", ".msg", ".eml"}

// ListCopies reads a failed or quarantine folder without changing it. A
// folder that does not exist holds nothing. Names starting with "." are
// unfinished atomic writes and are passed by.
func ListCopies(dir string) ([]Copy, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	var out []Copy
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".why") || !e.Type().IsRegular() {
			continue
		}
		why := filepath.Join(dir, n)
		c := Copy{ID: strings.TrimSuffix(n, ".why")}
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		c.Time = fi.ModTime()
		reason, err := readSmall(why, 4096)
		if err != nil {
			return nil, err
		}
		c.Reason = strings.TrimSpace(reason)
		for _, ext := range copyExts {
			if !names[c.ID+ext] {
				continue
			}
			p := filepath.Join(dir, c.ID+ext)
			fi, err := os.Lstat(p)
			if err != nil {
				return nil, err
			}
			c.Files = append(c.Files, p)
			c.Size += fi.Size()
		}
		c.Files = append(c.Files, why)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// CopyEnvelope is the envelope of the first message of a BSMTP copy, for a
// listing; a copy of another kind gives an error.
func CopyEnvelope(c Copy) (bsmtp.Envelope, error) {
	for _, f := range c.Files {
		if !strings.HasSuffix(f, ".bsmtp") {
			continue
		}
		fh, err := openRegular(f, os.O_RDONLY, 0)
		if err != nil {
			return bsmtp.Envelope{}, err
		}
		e, rerr := bsmtp.NewReader(io.LimitReader(fh, maxRelease)).Next()
		if cerr := fh.Close(); cerr != nil && rerr == nil {
			rerr = cerr
		}
		if rerr != nil {
			return bsmtp.Envelope{}, rerr
		}
		if e.Msg == nil {
			return bsmtp.Envelope{}, errors.New(e.Damage)
		}
		return e.Msg.Envelope, nil
	}
	return bsmtp.Envelope{}, errors.New("not a BSMTP copy")
}

// Holds reports whether there is anything to flush at path: the spool
// itself, or the work files or journals an earlier claim left beside it.
// It only looks; a flush of a host for which it is false has nothing to
// do and need not create even its lock file.
func Holds(path string) (bool, error) {
	p := filepath.Clean(path)
	if _, err := os.Lstat(p); err == nil {
		return true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	works, journals, _, err := listWork(filepath.Dir(p), filepath.Base(p))
	if err != nil {
		return false, err
	}
	return len(works)+len(journals) > 0, nil
}

// procLocks is where Linux lists the locks held; tests may point it
// elsewhere.
var procLocks = "/proc/locks"

// Running reports whether a flush of host holds its lock in dir. It looks
// the lock file's inode up in /proc/locks instead of trying the lock:
// even a moment's try would make a flush starting then think another one
// runs, and leave its mail to a run that does not exist.
func Running(dir, host string) (bool, error) {
	lock, _ := hostLockPaths(dir, host)
	var st unix.Stat_t
	if err := unix.Lstat(lock, &st); errors.Is(err, unix.ENOENT) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("stat %s: %w", lock, err)
	}
	b, err := os.ReadFile(procLocks)
	if err != nil {
		return false, err
	}
	// "1: FLOCK  ADVISORY  WRITE 23214 fe:00:9997562 0 EOF": the device's
	// major and minor in hex, the inode in decimal.
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "FLOCK" && f[5] == want {
			return true, nil
		}
	}
	return false, nil
}
