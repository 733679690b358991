package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameat2NoReplace renames in one step unless newpath exists (EEXIST).
// A file system without RENAME_NOREPLACE says EINVAL.
// A variable: tests take it away to run the fallback.
var renameat2NoReplace = func(oldpath, newpath string) error {
	return unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
}

// preallocate allocates n octets from off without changing the file's
// length (FALLOC_FL_KEEP_SIZE).
func preallocate(f *os.File, off, n int64) error {
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n)
}
