package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// errNotRegular marks a spool-side path that is there but is not a
// regular file: a symlink, a FIFO, a device, a directory or a socket.
// Nothing but regular files is ever read or written: a symlink could point
// anywhere, and opening a FIFO waits for a writer, which would hang every
// flush and every ETRN count of the host.
var errNotRegular = errors.New("not a regular file")

// openRegular opens path without following a symlink and without waiting
// on a FIFO (O_NONBLOCK, which means nothing to a regular file), and
// refuses anything that is not a regular file, with an error naming what
// it is. A missing file gives an error that errors.Is os.ErrNotExist.
func openRegular(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%s is a symbolic link: %w", path, errNotRegular)
	case errors.Is(err, unix.ENXIO):
		// O_WRONLY|O_NONBLOCK on a FIFO without a reader.
		return nil, fmt.Errorf("%s is a FIFO: %w", path, errNotRegular)
	case err != nil:
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close() // the fstat error is the one to report
		return nil, fmt.Errorf("fstat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close() // nothing was read or written
		return nil, fmt.Errorf("%s is %s: %w", path, typeName(fi.Mode()), errNotRegular)
	}
	return f, nil
}

// typeName says in words what kind of file mode m is.
func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	}
	return "not a regular file (" + m.Type().String() + ")"
}
