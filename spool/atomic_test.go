package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// faultFile fails one step of WriteFileAtomic.
type faultFile struct {
	*os.File
	step string
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.step == "write" {
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

// WriteString and ReadFrom hide *os.File's, which bufio would use directly.
func (f *faultFile) WriteString(s string) (int, error) { return f.Write([]byte(s)) }

func (f *faultFile) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{f}, r)
}

func (f *faultFile) Chmod(m os.FileMode) error {
	if f.step == "chmod" {
		return syscall.EPERM
	}
	return f.File.Chmod(m)
}

func (f *faultFile) Sync() error {
	if f.step == "sync" {
		return syscall.EIO
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	err := f.File.Close()
	if f.step == "close" {
		return syscall.EIO
	}
	return err
}

func TestWriteFileAtomicFaults(t *testing.T) {
	cases := []struct {
		step string
		want error
	}{
		{"create", syscall.EMFILE},
		{"chmod", syscall.EPERM},
		{"write", syscall.ENOSPC},
		{"callback", syscall.ENOSPC},
		{"sync", syscall.EIO},
		{"close", syscall.EIO},
		{"rename", syscall.EXDEV},
		{"syncdir", syscall.EIO},
	}
	for _, c := range cases {
		t.Run(c.step, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "target")
			writeFile(t, p, "original\n")
			oc, or, os_ := createTemp, renameFile, syncDir
			t.Cleanup(func() { createTemp, renameFile, syncDir = oc, or, os_ })
			createTemp = func(d, pat string) (tempFile, error) {
				if c.step == "create" {
					return nil, c.want
				}
				f, err := os.CreateTemp(d, pat)
				if err != nil {
					return nil, err
				}
				return &faultFile{File: f, step: c.step}, nil
			}
			renameFile = func(a, b string) error {
				if c.step == "rename" {
					return &os.LinkError{Op: "rename", Old: a, New: b, Err: c.want}
				}
				return os.Rename(a, b)
			}
			syncDir = func(d string) error {
				if c.step == "syncdir" {
					return c.want
				}
				return syncDirectory(d)
			}
			// Larger than the internal buffer, so Write reaches the file.
			big := strings.Repeat("new content line\n", 10000)
			err := WriteFileAtomic(p, 0o600, func(w io.Writer) error {
				if c.step == "callback" {
					return fmt.Errorf("producer: %w", syscall.ENOSPC)
				}
				_, err := io.WriteString(w, big)
				return err
			})
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			b, rerr := os.ReadFile(p)
			if rerr != nil {
				t.Fatal(rerr)
			}
			want := "original\n"
			if c.step == "syncdir" {
				want = big // the rename happened; only its durability is unknown
			}
			if string(b) != want {
				t.Fatalf("target changed after failed %s: %d bytes", c.step, len(b))
			}
			if left := glob(t, filepath.Join(dir, ".*.tmp-*")); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

func TestWriteFileAtomicPerm(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, perm := range []os.FileMode{0o600, 0o640} {
		p := filepath.Join(dir, "f")
		if err := WriteFileAtomic(p, perm, func(w io.Writer) error {
			_, err := io.WriteString(w, "x")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), perm)
		}
	}
	q := filepath.Join(dir, "q")
	if err := mkdirPrivate(q); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(q); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v %v, want 0700", fi.Mode().Perm(), err)
	}
}
