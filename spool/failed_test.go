package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"etrnflush/bsmtp"
)

// TestFailedCopies: only complete copies (.bsmtp and .why) are listed; a
// .bsmtp still without its .why (a kill mid-write) is left alone, a .why
// whose .bsmtp is gone (a kill mid-removal) is cleared; Read gives the
// envelope and the unstuffed content; Remove takes both files.
func TestFailedCopies(t *testing.T) {
	d := t.TempDir()
	path := filepath.Join(d, "h.example")
	fd := failedDir(d, "h.example")
	if got, err := ListFailed(path); err != nil || got != nil {
		t.Fatalf("no folder: %v %v", got, err)
	}
	if err := os.Mkdir(fd, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(fd, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var b strings.Builder
	if err := bsmtp.NewWriter(&b).Write(bsmtp.Envelope{From: "s@x.example", To: []string{"a@h.example"}},
		strings.NewReader("Subject: s\n\n.dotted line\n"), false); err != nil {
		t.Fatal(err)
	}
	write("m1-aa.bsmtp", b.String())
	write("m1-aa.why", "550 5.1.1 no such user\n")
	write("m2-bb.bsmtp", b.String()) // its .why not yet written
	write("m3-cc.why", "550 gone\n") // its .bsmtp already removed
	got, err := ListFailed(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Stem != "m1-aa" || got[0].Why != "550 5.1.1 no such user" || time.Since(got[0].ModTime) > time.Hour {
		t.Fatalf("listed %+v", got)
	}
	if _, err := os.Stat(filepath.Join(fd, "m3-cc.why")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan .why not cleared: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fd, "m2-bb.bsmtp")); err != nil {
		t.Errorf("incomplete copy touched: %v", err)
	}
	err = got[0].Read(func(env bsmtp.Envelope, content io.Reader) error {
		c, err := io.ReadAll(content)
		if err != nil {
			return err
		}
		if env.From != "s@x.example" || len(env.To) != 1 || env.To[0] != "a@h.example" || string(c) != "Subject: s\n\n.dotted line\n" {
			t.Errorf("read %+v %q", env, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := got[0].Remove(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"m1-aa.bsmtp", "m1-aa.why"} {
		if _, err := os.Stat(filepath.Join(fd, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Remove: %v", n, err)
		}
	}
}

func TestWarnedMarks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.example")
	if ok, err := Warned(path, "k1"); err != nil || ok {
		t.Fatalf("before: %v %v", ok, err)
	}
	if err := MarkWarned(path, "k1"); err != nil {
		t.Fatal(err)
	}
	if err := MarkWarned(path, "k1"); err != nil {
		t.Fatalf("marking twice: %v", err)
	}
	if ok, err := Warned(path, "k1"); err != nil || !ok {
		t.Fatalf("after: %v %v", ok, err)
	}
	if err := MarkWarned(path, "../x"); err == nil {
		t.Errorf("a key with a path was taken")
	}
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(warnedDir(path), "k1"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := MarkWarned(path, "k2"); err != nil {
		t.Fatal(err)
	}
	if err := PruneWarned(path, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	k1, _ := Warned(path, "k1")
	k2, _ := Warned(path, "k2")
	if k1 || !k2 {
		t.Errorf("after pruning: k1 %v (want gone), k2 %v (want kept)", k1, k2)
	}
}
