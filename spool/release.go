package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"etrnflush/bsmtp"
)

// ErrNotReleasable means a copy cannot be put back into the spool by
// etrnflush: the spool's layout is not known or not one a BSMTP copy can
// join, or the copy is not a complete BSMTP message. Nothing was changed.
var ErrNotReleasable = errors.New("cannot be released")

// Release puts the copy c back into the spool at path, so that the next
// flush sends it, and then removes it from its folder. Only a BSMTP copy
// (every failed copy; a quarantined BSMTP file or region) is released,
// and only one that reads as complete messages, so that a damaged
// region never becomes part of Exim's file:
//   - a one-message-per-file BSMTP directory gets a new file, written
//     whole under a temporary name first, as Exim writes its own;
//   - an appended BSMTP file gets the copy appended under Exim's lock
//     file and fcntl lock, exactly as Exim appends; a flush claims the
//     file under the same locks, so it sees the copy whole or not at all.
//
// A missing spool path is refused: Exim may be set to write a file or a
// directory there, and guessing wrong would make Exim's next delivery
// fail. A mailstore or maildir spool is refused too: the copy would need
// the site's mailstore affixes or Exim's envelope header lines. So is an
// empty directory with format "auto" (or ""): an emptied mailstore looks
// the same, and a BSMTP file in it would make it a mixed spool that no
// flush reads once Exim writes there again.
// It returns where the copy went.
func Release(path, format string, c Copy) (string, error) {
	path = filepath.Clean(path)
	var src string
	for _, f := range c.Files {
		if strings.HasSuffix(f, ".bsmtp") {
			src = f
		}
	}
	if src == "" {
		return "", fmt.Errorf("%s is not a BSMTP copy (%s): %w; move it back by hand", c.ID, strings.Join(c.Files, ", "), ErrNotReleasable)
	}
	data, err := readCopy(src)
	if err != nil {
		return "", err
	}
	if why := checkComplete(data); why != "" {
		return "", fmt.Errorf("%s: %s: %w", src, why, ErrNotReleasable)
	}
	fi, err := os.Lstat(path)
	var dest string
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("spool %s does not exist, so its layout (file or directory) is unknown: %w; release it once Exim has written the spool again", path, ErrNotReleasable)
	case err != nil:
		return "", fmt.Errorf("spool %s: %w", path, err)
	case fi.Mode().IsRegular():
		if err := appendLocked(path, data); err != nil {
			return "", err
		}
		dest = path
	case fi.IsDir():
		layout := format
		if format == "" || format == "auto" {
			if layout, err = classifyDir(path); err != nil {
				return "", err
			}
			if layout == "bsmtp" {
				if empty, err := dirEmpty(path); err != nil {
					return "", err
				} else if empty {
					return "", fmt.Errorf("spool %s is an empty directory: BSMTP or mailstore cannot be told (set format = \"bsmtp\" for the host, or release once Exim has written to it): %w", path, ErrNotReleasable)
				}
			}
		}
		if layout != "bsmtp" {
			return "", fmt.Errorf("spool %s is a %s: a BSMTP copy cannot join it: %w", path, layout, ErrNotReleasable)
		}
		// "q" makes it one of Exim's names for this layout (classifyDir);
		// the time keeps it apart from Exim's and from other releases.
		dest = filepath.Join(path, "qetrnflush-"+strconv.FormatInt(time.Now().UnixNano(), 36))
		err = writeFileNew(dest, 0o600, func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		})
		if err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("spool %s is %s: %w", path, typeName(fi.Mode()), ErrNotReleasable)
	}
	// The copy is in the spool and on disk; only now may the folder
	// forget it. A crash in between leaves it in both: a second release
	// would send it twice, a lost one would not be sent at all.
	if err := Delete(c); err != nil {
		return dest, fmt.Errorf("released to %s, but %w", dest, err)
	}
	return dest, nil
}

// dirEmpty reports whether dir has no entry but hidden ones (ours and
// unfinished writes).
func dirEmpty(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("spool %s: %w", dir, err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			return false, nil
		}
	}
	return true, nil
}

// Delete removes a copy's files, the reason last, so that a copy cut
// short by a crash still shows in a listing.
func Delete(c Copy) error {
	for _, f := range c.Files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	if len(c.Files) > 0 {
		return syncDir(filepath.Dir(c.Files[0]))
	}
	return nil
}

// maxRelease bounds the copy read into memory: a failed copy is one
// message, and Exim's message_size_limit is 50 MB by default.
const maxRelease = 256 << 20

func readCopy(p string) ([]byte, error) {
	f, err := openRegular(p, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	data, rerr := io.ReadAll(io.LimitReader(f, maxRelease+1))
	if cerr := f.Close(); cerr != nil && rerr == nil {
		rerr = cerr
	}
	if rerr != nil {
		return nil, fmt.Errorf("read %s: %w", p, rerr)
	}
	if len(data) > maxRelease {
		return nil, fmt.Errorf("%s is larger than %d octets: %w", p, maxRelease, ErrNotReleasable)
	}
	return data, nil
}

// checkComplete says why data is not one or more complete BSMTP
// messages, "" when it is.
func checkComplete(data []byte) string {
	r := bsmtp.NewReader(strings.NewReader(string(data)))
	n := 0
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err.Error()
		}
		if e.Msg == nil {
			return "damaged: " + e.Damage
		}
		if e.Inner != nil {
			return "holds an envelope inside a message (a torn append?)"
		}
		n++
	}
	if n == 0 {
		return "holds no message"
	}
	return ""
}

// appendLocked appends data to Exim's spool file under Exim's two locks.
func appendLocked(path string, data []byte) (err error) {
	unlock, err := takeLockFile(path, func(Event) {})
	if err != nil {
		return err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	f, err := openRegular(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("append to %s: close: %w", path, cerr)
		}
	}()
	if err := fcntlLock(f, fcntlTimeout); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("append to %s: sync: %w", path, err)
	}
	return nil
}
