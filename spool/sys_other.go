//go:build !linux

package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameat2NoReplace: renameat2 is Linux's. ENOSYS sends renameNoReplace
// to link(2) and unlink(2), which refuse an existing name just as well.
var renameat2NoReplace = func(oldpath, newpath string) error { return unix.ENOSYS }

// preallocate: there is no fallocate that keeps the length (the BSDs'
// posix_fallocate extends the file, which a journal reader would take for
// records). ENOSYS makes the journal go without, as on NFS.
func preallocate(f *os.File, off, n int64) error { return unix.ENOSYS }
