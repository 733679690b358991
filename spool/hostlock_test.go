package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostLock(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, ".etrnflush-h.example.again")
	a, err := LockHost(dir, "h.example")
	if err != nil {
		t.Fatal(err)
	}
	if a.TakeAgain() {
		t.Fatal("TakeAgain true without a request")
	}
	// flock excludes a second open file description even in this process.
	if _, err := LockHost(dir, "h.example"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second lock: %v, want ErrBusy", err)
	}
	if _, err := os.Stat(flag); err != nil {
		t.Fatalf("pass request flag not set: %v", err)
	}
	other, err := LockHost(dir, "other.example")
	if err != nil {
		t.Fatalf("other host: %v", err)
	}
	if again, err := other.Release(); again || err != nil {
		t.Fatalf("other release: %v %v", again, err)
	}
	again, err := a.Release()
	if err != nil || !again {
		t.Fatalf("Release = %v, %v; want again with the lock held", again, err)
	}
	if _, err := os.Stat(flag); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("flag still there: %v", err)
	}
	if _, err := LockHost(dir, "h.example"); !errors.Is(err, ErrBusy) {
		t.Fatalf("lock not held after again: %v", err)
	}
	if !a.TakeAgain() {
		t.Fatal("TakeAgain false after a request")
	}
	if a.TakeAgain() {
		t.Fatal("TakeAgain did not clear the request")
	}
	if again, err := a.Release(); again || err != nil {
		t.Fatalf("final release: %v %v", again, err)
	}
	b, err := LockHost(dir, "h.example")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, ".etrnflush-h.example.lock"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file mode: %v %v", fi.Mode().Perm(), err)
	}
	if _, err := b.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestPrivNameFitsAndStaysDistinct(t *testing.T) {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	other := long[:len(long)-1] + "e"
	for _, name := range []string{"short.example", long, other} {
		p := privName(name)
		if len(name) <= maxPrivName && p != name {
			t.Errorf("privName(%q) = %q, want it unchanged", name, p)
		}
		if n := len(".etrnflush-" + p + "." + strings.Repeat("0", 20) + ".journal"); n > 255 {
			t.Errorf("journal name for a %d-octet name is %d octets", len(name), n)
		}
		if privName(name) != p {
			t.Errorf("privName(%q) is not stable", name)
		}
	}
	if privName(long) == privName(other) {
		t.Errorf("two 253-octet names that differ at the end share %q", privName(long))
	}
	dir := t.TempDir()
	l, err := LockHost(dir, long)
	if err != nil {
		t.Fatalf("LockHost with a 253-octet host: %v", err)
	}
	if _, err := l.Release(); err != nil {
		t.Fatal(err)
	}
}

// Abandon frees the lock at once, even with a pass asked for, and the
// next run takes it as that pass.
func TestHostLockAbandon(t *testing.T) {
	dir := t.TempDir()
	l, err := LockHost(dir, "h.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockHost(dir, "h.example"); err != ErrBusy {
		t.Fatalf("second LockHost: %v, want ErrBusy", err)
	}
	if err := l.Abandon(); err != nil {
		t.Fatal(err)
	}
	if err := l.Abandon(); err == nil {
		t.Error("a second Abandon succeeded")
	}
	l2, err := LockHost(dir, "h.example")
	if err != nil {
		t.Fatalf("LockHost after Abandon: %v", err)
	}
	if l2.TakeAgain() {
		t.Error("the request was not consumed by the run that took the lock")
	}
	if again, err := l2.Release(); err != nil || again {
		t.Fatalf("Release = %v, %v", again, err)
	}
}
