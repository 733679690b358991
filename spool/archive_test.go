package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestArchiveCopy: the archive file of a message is the NOOP line with the
// note, then the message for the recipients given, its data section octet
// for octet as the spool holds it (dot-stuffing and CRLF kept), then QUIT;
// a second copy gets a name of its own; a symbolic link as the host's
// folder is refused, not followed.
func TestArchiveCopy(t *testing.T) {
	for _, crlf := range []bool{false, true} {
		d := t.TempDir()
		path := filepath.Join(d, "h.example")
		ms := mkmsgs(2)
		text := join(ms)
		if crlf {
			text = strings.ReplaceAll(text, "\n", "\r\n")
		}
		writeFile(t, path, text)
		s := open(t, path, nil, false)
		root := filepath.Join(d, "archive")
		dir := ArchiveDir(root, "h.example")
		var files []string
		for m := range messages(t, s) {
			p, err := Archive(dir, m, m.To[1:], `host=h.example reply="250 ok"`, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
			if err := s.Settle(m, all(Sent)(m), ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if len(files) != 2 || files[0] == files[1] {
			t.Fatalf("archive files %q", files)
		}
		for i, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want := "NOOP etrnflush accepted host=h.example reply=\"250 ok\"\n" +
				tmsg{from: ms[i].from, to: ms[i].to[1:], body: ms[i].body}.bsmtp() + "QUIT\n"
			if crlf {
				want = strings.ReplaceAll(want, "\n", "\r\n")
			}
			if string(b) != want {
				t.Errorf("crlf=%v: archive file %d:\n%q\nwant\n%q", crlf, i, b, want)
			}
			fi, err := os.Lstat(f)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("mode of %s: %v %v", f, fi.Mode(), err)
			}
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("spool not removed after every recipient was sent: %v", err)
		}
	}

	// A symbolic link where the host's folder goes is not followed.
	d := t.TempDir()
	path := filepath.Join(d, "h.example")
	writeFile(t, path, join(mkmsgs(1)))
	elsewhere := t.TempDir()
	root := filepath.Join(d, "archive")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, ArchiveDir(root, "h.example")); err != nil {
		t.Fatal(err)
	}
	s := open(t, path, nil, false)
	for m := range messages(t, s) {
		if _, err := Archive(ArchiveDir(root, "h.example"), m, m.To, "x", time.Now()); err == nil {
			t.Error("archived through a symbolic link")
		}
		if err := s.Settle(m, all(Keep)(m), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := names(t, elsewhere); len(n) != 0 {
		t.Errorf("the link's target got %q", n)
	}
}

// TestPruneArchive: files older than the age go, younger ones, what is
// not an archive file and symbolic links stay; a killed write's temporary
// file goes.
func TestPruneArchive(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	mk := func(name string, age time.Duration) {
		t.Helper()
		p := filepath.Join(dir, name)
		writeFile(t, p, "x")
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	mk("old.bsmtp", 31*24*time.Hour)
	mk("new.bsmtp", 29*24*time.Hour)
	mk("notes.txt", 400*24*time.Hour)
	mk(".old.bsmtp.tmp-123", time.Minute)
	target := filepath.Join(t.TempDir(), "t.bsmtp")
	writeFile(t, target, "x")
	if err := os.Chtimes(target, now.Add(-400*24*time.Hour), now.Add(-400*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "link.bsmtp")); err != nil {
		t.Fatal(err)
	}
	n, err := PruneArchive(dir, 30*24*time.Hour, now)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d: %v", n, err)
	}
	if got := strings.Join(names(t, dir), " "); got != "link.bsmtp new.bsmtp notes.txt" {
		t.Errorf("left %q", got)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("the link's target: %v", err)
	}
	if n, err := PruneArchive(filepath.Join(dir, "none"), time.Hour, now); n != 0 || err != nil {
		t.Errorf("missing folder: %d %v", n, err)
	}
}
