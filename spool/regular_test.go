package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// noHang runs f and fails the test if it does not return within 10 s: a
// FIFO opened for reading waits for a writer forever.
func noHang(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("hung: a FIFO was opened")
	}
}

// plant puts a FIFO or a symlink (to a file holding mail) at p.
func plant(t *testing.T, kind, p string) {
	t.Helper()
	if kind == "fifo" {
		if err := mkfifo(p); err != nil {
			t.Fatal(err)
		}
		return
	}
	target := filepath.Join(t.TempDir(), "target")
	writeFile(t, target, mkmsgs(1)[0].bsmtp())
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// A FIFO or a symlink where a work file, its journal or Exim's file is
// read is passed by with a notice naming it; the other batches go out.
// The same holds for a dry run, which is also how serve counts the
// messages of an ETRN reply.
func TestNonRegularFileLayout(t *testing.T) {
	for _, dry := range []bool{false, true} {
		t.Run(map[bool]string{false: "flush", true: "dry run"}[dry], func(t *testing.T) { testNonRegularFileLayout(t, dry) })
	}
}

func testNonRegularFileLayout(t *testing.T, dry bool) {
	ms := mkmsgs(3)
	work := func(n int) string { return fmt.Sprintf(".etrnflush-h.example.%020d.work", n) }
	journal := func(n int) string { return fmt.Sprintf(".etrnflush-h.example.%020d.journal", n) }
	for _, kind := range []string{"fifo", "symlink"} {
		for _, where := range []string{"work file", "journal", "Exim's file"} {
			t.Run(kind+" as "+where, func(t *testing.T) {
				dir := t.TempDir()
				p := filepath.Join(dir, "h.example")
				writeFile(t, filepath.Join(dir, work(1)), ms[0].bsmtp())
				var want []string
				switch where {
				case "work file":
					plant(t, kind, filepath.Join(dir, work(2)))
					writeFile(t, p, ms[1].bsmtp())
					want = []string{ms[0].from, ms[1].from}
				case "journal":
					writeFile(t, filepath.Join(dir, work(2)), ms[2].bsmtp())
					plant(t, kind, filepath.Join(dir, journal(2)))
					writeFile(t, p, ms[1].bsmtp())
					want = []string{ms[0].from, ms[1].from}
				case "Exim's file":
					plant(t, kind, p)
					want = []string{ms[0].from}
				}
				ev := &events{}
				var gs []got
				noHang(t, func() { gs = drainAll(t, open(t, p, ev, dry), all(Sent)) })
				var from []string
				for _, g := range gs {
					from = append(from, g.from)
				}
				if strings.Join(from, " ") != strings.Join(want, " ") {
					t.Errorf("sent from %v, want %v", from, want)
				}
				what := map[string]string{"fifo": "is a FIFO", "symlink": "symbolic link"}[kind]
				found := false
				for _, e := range ev.list {
					if e.Kind == "notice" && strings.Contains(e.Reason, "skipped") && strings.Contains(e.Reason, what) {
						found = true
					}
				}
				if !found {
					t.Errorf("no notice saying %q: %+v", what, ev.list)
				}
			})
		}
	}
}

// The host lock, the request flag and Exim's lock file: a clear error or
// a removal, never a wait.
func TestNonRegularLockFiles(t *testing.T) {
	for _, kind := range []string{"fifo", "symlink"} {
		t.Run(kind+" as host lock", func(t *testing.T) {
			dir := t.TempDir()
			lock, _ := hostLockPaths(dir, "h.example")
			plant(t, kind, lock)
			noHang(t, func() {
				_, err := LockHost(dir, "h.example")
				if !errors.Is(err, errNotRegular) {
					t.Errorf("LockHost: %v, want a not-a-regular-file error", err)
				}
				if _, err := HostBusy(dir, "h.example"); !errors.Is(err, errNotRegular) {
					t.Errorf("HostBusy: %v, want a not-a-regular-file error", err)
				}
			})
		})
		t.Run(kind+" as request flag", func(t *testing.T) {
			dir := t.TempDir()
			_, flag := hostLockPaths(dir, "h.example")
			plant(t, kind, flag)
			noHang(t, func() {
				l, err := LockHost(dir, "h.example")
				if err != nil {
					t.Fatal(err)
				}
				if err := l.Abandon(); err != nil {
					t.Fatal(err)
				}
			})
		})
		t.Run(kind+" as Exim's lock file", func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "h.example")
			writeFile(t, p, mkmsgs(1)[0].bsmtp())
			plant(t, kind, p+".lock")
			start := time.Now()
			noHang(t, func() {
				s := open(t, p, nil, false)
				_, err := s.Next()
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Errorf("Next: %v, want an error saying the lock file is not a regular file", err)
				}
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v: waited for a lock nobody holds", d)
			}
		})
	}
}
