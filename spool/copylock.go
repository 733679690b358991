package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"etrnflush/bsmtp"
)

// ErrCopyBusy means another process (a flush's bounces, or the bounce
// command) holds the copy: it is returning it to its sender right now.
var ErrCopyBusy = errors.New("another etrnflush is returning this copy to its sender right now")

// ErrNotOneMessage means a copy is not one complete BSMTP message: a
// mailstore or maildir entry, damage, or more than one transaction.
var ErrNotOneMessage = errors.New("not one complete BSMTP message")

// lockCopyFile takes an flock on the copy file at p, so that two
// processes never return one copy to its sender at once (the sender
// would get two DSNs). The lock goes with the descriptor: unlock closes
// it. A copy removed by the holder before the lock was had is reported
// as not existing.
func lockCopyFile(p string) (unlock func() error, err error) {
	f, err := openRegular(p, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	ok, err := tryFlock(f)
	if err == nil && !ok {
		err = ErrCopyBusy
	}
	if err == nil {
		var held, now unix.Stat_t
		if err = unix.Fstat(int(f.Fd()), &held); err == nil {
			if lerr := unix.Lstat(p, &now); lerr != nil || now.Ino != held.Ino || now.Dev != held.Dev {
				err = fmt.Errorf("%s: %w", p, os.ErrNotExist)
			}
		}
	}
	if err != nil {
		_ = f.Close() // read-only; the lock goes with it
		return nil, err
	}
	return f.Close, nil
}

// Lock takes the copy's lock (see lockCopyFile): ErrCopyBusy when another
// process holds it.
func (c FailedCopy) Lock() (unlock func() error, err error) { return lockCopyFile(c.path) }

// bsmtpFile is the copy's BSMTP file, "" when it has none.
func (c Copy) bsmtpFile() string {
	for _, f := range c.Files {
		if strings.HasSuffix(f, ".bsmtp") {
			return f
		}
	}
	return ""
}

// LockCopy takes the lock of a BSMTP copy (see lockCopyFile).
func LockCopy(c Copy) (unlock func() error, err error) {
	p := c.bsmtpFile()
	if p == "" {
		return nil, fmt.Errorf("%s: %w", c.ID, ErrNotOneMessage)
	}
	return lockCopyFile(p)
}

// ReadCopy calls use with the envelope and the content (not dot-stuffed)
// of a copy that is one complete BSMTP message; anything else is
// ErrNotOneMessage. The file is closed when use returns.
func ReadCopy(c Copy, use func(env bsmtp.Envelope, content io.Reader) error) (err error) {
	p := c.bsmtpFile()
	if p == "" {
		return fmt.Errorf("%s is not a BSMTP copy: %w", c.ID, ErrNotOneMessage)
	}
	f, err := openRegular(p, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: %w", p, cerr)
		}
	}()
	rd := bsmtp.NewReader(f)
	e, err := rd.Next()
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%s holds no message: %w", p, ErrNotOneMessage)
	case err != nil:
		return fmt.Errorf("%s: %w", p, err)
	case e.Msg == nil:
		return fmt.Errorf("%s: damaged (%s): %w", p, e.Damage, ErrNotOneMessage)
	case e.Inner != nil:
		return fmt.Errorf("%s holds an envelope inside its message: %w", p, ErrNotOneMessage)
	}
	if _, err := rd.Next(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s holds more than one message: %w", p, ErrNotOneMessage)
	}
	data := io.NewSectionReader(f, e.Msg.DataStart, e.Msg.DataEnd-e.Msg.DataStart)
	return use(e.Msg.Envelope, bsmtp.Unstuff(data))
}
