package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a small tmpfs at dir for the test, or skips it when
// not root: an unprivileged user cannot mount one.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (the spool on a file system of its own)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// A spool directory on a file system of its own: the quarantine folder
// beside it is on another, so moving a damaged entry there is a copy. The
// damaged entry ends up in quarantine, gone from the spool, and the others
// are delivered; an entry that cannot be moved at all (a FIFO cannot be
// copied) is skipped with a notice and does not stop the rest.
func TestQuarantineAcrossFileSystems(t *testing.T) {
	for _, layout := range []string{"bsmtp-dir", "mailstore", "maildir"} {
		t.Run(layout, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, "h.example")
			mountTmpfs(t, p, "4m")
			var bad, good, fifo string
			switch layout {
			case "bsmtp-dir":
				writeFile(t, filepath.Join(p, "q1bad"), "MAIL FROM:<a@b>\nBOGUS\n.\n")
				writeFile(t, filepath.Join(p, "q2"), mkmsgs(1)[0].bsmtp())
				bad, good = "q1bad", "q2"
			case "mailstore":
				writeFile(t, filepath.Join(p, "a.env"), "")
				writeFile(t, filepath.Join(p, "a.msg"), "Subject: a\n\nA\n")
				writeFile(t, filepath.Join(p, "b.env"), "s@x.example\nok@h.example\n")
				writeFile(t, filepath.Join(p, "b.msg"), "Subject: b\n\nB\n")
				writeFile(t, filepath.Join(p, "c.env"), "s@x.example\nc@h.example\n")
				if err := mkfifo(filepath.Join(p, "c.msg")); err != nil {
					t.Fatal(err)
				}
				bad, good, fifo = "a.env", "b.env", "c.env"
			case "maildir":
				mkMaildir(t, p)
				writeFile(t, filepath.Join(p, "new", "1bad"), "Received: by x\n\nno envelope\n")
				writeFile(t, filepath.Join(p, "new", "2ok"), eximMaildirMsg("s@x.example", []string{"ok@h.example"}, "Subject: ok\n\nfine\n"))
				bad, good = "new/1bad", "new/2ok"
			}
			ev := &events{}
			var gs []got
			noHang(t, func() { gs = drainAll(t, open(t, p, ev, false), all(Sent)) })
			if len(gs) != 1 {
				t.Fatalf("sent %+v, want the good entry's message", gs)
			}
			for _, n := range []string{bad, good} {
				if _, err := os.Lstat(filepath.Join(p, n)); err == nil {
					t.Errorf("%s still in the spool", n)
				}
			}
			qd := quarantineDir(root, "h.example")
			if len(glob(t, filepath.Join(qd, "*.why"))) != 1 || len(names(t, qd)) < 2 {
				t.Errorf("quarantine holds %v, want the damaged entry and its reason", names(t, qd))
			}
			if fifo != "" {
				if _, err := os.Lstat(filepath.Join(p, fifo)); err != nil {
					t.Errorf("the entry that could not be moved is gone: %v", err)
				}
				found := false
				for _, e := range ev.list {
					if e.Kind == "notice" && strings.Contains(e.Reason, "could not be quarantined") && strings.Contains(e.Reason, "FIFO") {
						found = true
					}
				}
				if !found {
					t.Errorf("no notice for the entry that could not be moved: %+v", ev.list)
				}
			}
		})
	}
}
