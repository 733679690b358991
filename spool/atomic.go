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
	return writeAtomic(filepath.Dir(path), path, perm, time.Time{}, write)
}

// writeAtomic is WriteFileAtomic with the temporary file in tmpDir, which
// must be on the same file system (a maildir writes in tmp/ and renames
// into new/), and, unless mtime is zero, the new file dated mtime, so that
// a rewritten message keeps its place in the oldest-first order.
func writeAtomic(tmpDir, path string, perm os.FileMode, mtime time.Time, write func(io.Writer) error) (err error) {
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
	if err := renameFile(tmp, path); err != nil {
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
