package spool

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"
)

// On a file system with 1-second timestamps a rewrite in the same second
// keeps the date, and a freed inode number comes back: ids of different
// versions of a file can be equal. Made to collide every time here, two
// refused messages must still keep two failed copies.
func TestFailedCopiesWhenIDsCollide(t *testing.T) {
	old := genTag
	genTag = func(time.Time, uint64) string { return "same" }
	t.Cleanup(func() { genTag = old })
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	m0 := tmsg{"s0@x.example", []string{"x@h.example"}, "Subject: first\n\none\n"}
	m1 := tmsg{"s1@x.example", []string{"x@h.example"}, "Subject: second\n\ntwo\n"}
	writeFile(t, filepath.Join(p, "q1"), m0.bsmtp()+m1.bsmtp())
	// m0 refused, m1 kept: the rewrite moves m1 to m0's offset, so its id
	// is m0's.
	first := map[string]Outcome{m0.from: Failed, m1.from: Keep}
	drainAll(t, open(t, p, nil, false), func(m *Message) []Outcome { return []Outcome{first[m.From]} })
	drainAll(t, open(t, p, nil, false), all(Failed))
	var copies []string
	for _, f := range glob(t, filepath.Join(failedDir(root, "h.example"), "*.bsmtp")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		copies = append(copies, string(b))
	}
	sort.Strings(copies)
	if !reflect.DeepEqual(copies, []string{m0.bsmtp(), m1.bsmtp()}) {
		t.Fatalf("failed copies %q, want one of each message", copies)
	}
	if whys := glob(t, filepath.Join(failedDir(root, "h.example"), "*.why")); len(whys) != 2 {
		t.Errorf("reasons %v, want two", whys)
	}
}

// writeCopy never replaces a copy: the same name twice gives a suffix.
func TestWriteCopyNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "failed")
	for _, body := range []string{"one", "two", "three"} {
		err := writeCopy(dir, "id@0", func(w io.Writer) error {
			_, err := io.WriteString(w, body)
			return err
		}, "why "+body)
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"id@0.bsmtp", "id@0.why", "id@0~1.bsmtp", "id@0~1.why", "id@0~2.bsmtp", "id@0~2.why"}
	if got := names(t, dir); !reflect.DeepEqual(got, want) {
		t.Fatalf("names %v, want %v", got, want)
	}
	for stem, body := range map[string]string{"id@0": "one", "id@0~1": "two", "id@0~2": "three"} {
		if b, err := os.ReadFile(filepath.Join(dir, stem+".bsmtp")); err != nil || string(b) != body {
			t.Errorf("%s: %q %v, want %q", stem, b, err, body)
		}
	}
}

// The same copy written again (a redo after a crash between the copy and
// the record) is recognised and not written twice; a copy whose reason
// went missing in the crash gets it back.
func TestWriteCopyRedoIsOneCopy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "failed")
	body := func(w io.Writer) error { _, err := io.WriteString(w, "the message"); return err }
	if err := writeCopy(dir, "id@0", body, "550 no"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "id@0.why")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := writeCopy(dir, "id@0", body, "550 no"); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := names(t, dir), []string{"id@0.bsmtp", "id@0.why"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("names %v, want %v", got, want)
	}
}
