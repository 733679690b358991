package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// tempFile is the part of *os.File that WriteFileAtomic uses; tests swap in
// a fake to inject a failure at each step.
type tempFile interface {
	io.Writer
	Name() string
	Chmod(os.FileMode) error
	Sync() error
	Close() error
}

// Each step of WriteFileAtomic goes through a package variable so that a
// test can make exactly that step fail.
var (
	createTemp = func(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) }
	renameFile = os.Rename
	removeFile = os.Remove
	syncDir    = syncDirectory
)

// tempInfix marks our temporary files. A temporary file is named after
// its target (".TARGET.tmp-RANDOM"): hidden, so Exim and our own spool
// listing pass it by, and attributable, so that after a crash the run that
// owns the target can remove it (removeStaleTemps).
const tempInfix = ".tmp-"

func tempPattern(path string) string {
	return "." + shorten(strings.TrimPrefix(filepath.Base(path), "."), 220) + tempInfix + "*"
}

// removeStaleTemps removes the temporary files of interrupted atomic writes
// in dir whose names start with prefix. Only the holder of the host lock
// calls it, so no write of ours is in progress there. A missing dir has
// none.
func removeStaleTemps(dir, prefix string, report func(Event)) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range ents {
		if staleTemp(e, prefix) {
			if err := removeTemp(dir, e.Name(), report); err != nil {
				return err
			}
		}
	}
	return nil
}

// staleTemp tells our temporary files whose names start with prefix from
// the other entries of a directory listing.
func staleTemp(e fs.DirEntry, prefix string) bool {
	n := e.Name()
	return strings.HasPrefix(n, prefix) && strings.Contains(n, tempInfix) && e.Type().IsRegular()
}

func removeTemp(dir, name string, report func(Event)) error {
	if err := removeFile(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale temporary file: %w", err)
	}
	report(Event{Kind: "notice", ID: name, Reason: "removed the temporary file of an interrupted write in " + dir})
	return nil
}

// WriteFileAtomic replaces path with what write produces, so that a crash
// at any instant leaves either the old file or the complete new one. The
// new file gets exactly perm (the umask is 0 when Exim runs us). On any
// error the temporary file is removed and path is left untouched.
func WriteFileAtomic(path string, perm os.FileMode, write func(io.Writer) error) error {
	return writeAtomic(filepath.Dir(path), path, perm, time.Time{}, false, write)
}

// writeFileNew is WriteFileAtomic for a file that must not exist yet: if
// path exists, it is left alone and the error is os.ErrExist. The rename
// does not replace (the O_EXCL of a file written through a temporary one).
func writeFileNew(path string, perm os.FileMode, write func(io.Writer) error) error {
	return writeAtomic(filepath.Dir(path), path, perm, time.Time{}, true, write)
}

// writeAtomic is WriteFileAtomic with the temporary file in tmpDir, which
// must be on the same file system (a maildir writes in tmp/ and renames
// into new/), and, unless mtime is zero, the new file dated mtime, so that
// a rewritten message keeps its place in the oldest-first order. With
// noReplace, an existing path is left as it is (os.ErrExist).
func writeAtomic(tmpDir, path string, perm os.FileMode, mtime time.Time, noReplace bool, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := createTemp(tmpDir, tempPattern(path))
	if err != nil {
		return fmt.Errorf("write %s: create temp: %w", path, err)
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err == nil {
			return
		}
		if !closed {
			_ = f.Close() // the write already failed; its error is the one to report
		}
		_ = removeFile(tmp) // best effort: a leftover temp file holds no mail of its own
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: chmod temp: %w", path, err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	if err := write(bw); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: flush: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(tmp, mtime, mtime); err != nil {
			return fmt.Errorf("write %s: date temp: %w", path, err)
		}
	}
	rename := renameFile
	if noReplace {
		rename = renameNoReplace
	}
	if err := rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	// Past the rename the new content is in place; a failed directory sync
	// must still be reported because the rename may not survive a crash.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDirectory makes renames, links and unlinks in dir durable.
func syncDirectory(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		_ = d.Close() // the sync error matters more
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// mkdirPrivate creates dir with mode 0700 whatever the umask.
func mkdirPrivate(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if err != nil && !os.IsExist(err) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err == nil {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("chmod %s: %w", dir, err)
		}
		return syncDir(filepath.Dir(dir))
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	return nil
}

// renameNoReplace renames oldpath to newpath unless newpath exists
// (os.ErrExist). RENAME_NOREPLACE does it in one step; a file system
// without it (EINVAL) or a system without renameat2 (ENOSYS: the BSDs)
// gets link(2) and unlink(2), which fail the same way on an existing
// name.
func renameNoReplace(oldpath, newpath string) error {
	err := renameat2NoReplace(oldpath, newpath)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		if err != nil {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
		}
		return nil
	}
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return os.Remove(oldpath)
}

// moveNoReplace moves src to dst, never replacing dst (os.ErrExist), and
// reports whether src was there at all. A rename that fails with EXDEV (the
// spool directory is a file system of its own, our folders are beside it)
// becomes a copy: written through a temporary file in dst's directory,
// fsynced, renamed into place without replacing, the directory fsynced,
// and only then src removed. A crash in between leaves both, never
// neither. Only a regular file is copied; anything else cannot be moved
// across file systems and is an error.
func moveNoReplace(src, dst string) (moved bool, err error) {
	err = renameNoReplace(src, dst)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		if _, lerr := os.Lstat(src); errors.Is(lerr, os.ErrNotExist) {
			return false, nil
		}
		return false, err
	case !errors.Is(err, unix.EXDEV):
		return false, err
	}
	in, err := openRegular(src, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("move %s across file systems: %w", src, err)
	}
	fi, err := in.Stat()
	if err == nil {
		err = writeFileNew(dst, fi.Mode().Perm(), func(w io.Writer) error {
			_, err := io.Copy(w, in)
			return err
		})
	}
	if cerr := in.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close %s: %w", src, cerr)
	}
	if err != nil {
		return false, err
	}
	if err := os.Remove(src); err != nil {
		return false, fmt.Errorf("move %s: copied to %s, but: %w", src, dst, err)
	}
	return true, nil
}
