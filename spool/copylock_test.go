package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"etrnflush/bsmtp"
)

// TestCopyLock: a copy's lock is had once at a time; a copy removed by
// the holder reads as gone to a process that opened it before; Lock of a
// failed copy and LockCopy of the same copy exclude each other.
func TestCopyLock(t *testing.T) {
	d := t.TempDir()
	path := filepath.Join(d, "h.example")
	fd := failedDir(d, "h.example")
	if err := os.Mkdir(fd, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(fd, "m1.bsmtp"), tmsg{from: "s@x.example", to: []string{"a@h.example"}, body: "Subject: s\n\nb\n"}.bsmtp())
	writeFile(t, filepath.Join(fd, "m1.why"), "550 no\n")
	fcs, err := ListFailed(path)
	if err != nil || len(fcs) != 1 {
		t.Fatalf("ListFailed: %v %v", fcs, err)
	}
	cs, err := ListCopies(fd)
	if err != nil || len(cs) != 1 {
		t.Fatalf("ListCopies: %v %v", cs, err)
	}
	unlock, err := fcs[0].Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockCopy(cs[0]); !errors.Is(err, ErrCopyBusy) {
		t.Errorf("second lock: %v, want ErrCopyBusy", err)
	}
	if err := Delete(cs[0]); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := LockCopy(cs[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock of a removed copy: %v, want not exist", err)
	}
	// Opened before the holder removed it: gone once the lock is had.
	writeFile(t, filepath.Join(fd, "m1.bsmtp"), "x")
	f, err := os.Open(filepath.Join(fd, "m1.bsmtp"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := os.Remove(filepath.Join(fd, "m1.bsmtp")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(fd, "m1.bsmtp"), "y") // a new file under the name
	if _, err := lockCopyFile(f.Name()); err != nil {
		t.Errorf("lock of the new file: %v", err)
	}
}

// TestReadCopy: one complete message is read with its envelope and
// unstuffed content; none, two, damage and a non-BSMTP copy are
// ErrNotOneMessage.
func TestReadCopy(t *testing.T) {
	d := t.TempDir()
	one := tmsg{from: "s@x.example", to: []string{"a@h.example", "b@h.example"}, body: "Subject: s\n\n.dot\nb\n"}
	for name, text := range map[string]string{
		"one":   one.bsmtp(),
		"two":   one.bsmtp() + one.bsmtp(),
		"torn":  "MAIL FROM:<s@x.example>\nRCPT TO:<a@h.example>\nDATA\nSubject: s\n",
		"empty": "",
		"inner": "MAIL FROM:<s@x.example>\nRCPT TO:<a@h.example>\nDATA\nSubject: s\n\nMAIL FROM:<t@x.example>\nRCPT TO:<c@h.example>\nDATA\nx\n.\n",
	} {
		writeFile(t, filepath.Join(d, name+".bsmtp"), text)
	}
	c := Copy{ID: "one", Files: []string{filepath.Join(d, "one.bsmtp")}}
	err := ReadCopy(c, func(env bsmtp.Envelope, content io.Reader) error {
		b, err := io.ReadAll(content)
		if env.From != "s@x.example" || len(env.To) != 2 || string(b) != one.body {
			t.Errorf("read %+v %q", env, b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"two", "torn", "empty", "inner"} {
		c := Copy{ID: name, Files: []string{filepath.Join(d, name+".bsmtp")}}
		if err := ReadCopy(c, func(bsmtp.Envelope, io.Reader) error { return nil }); !errors.Is(err, ErrNotOneMessage) {
			t.Errorf("%s: %v, want ErrNotOneMessage", name, err)
		}
	}
	if err := ReadCopy(Copy{ID: "md", Files: []string{filepath.Join(d, "md.eml")}}, nil); !errors.Is(err, ErrNotOneMessage) {
		t.Errorf("maildir copy: %v", err)
	}
}
