package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	// The last page may hold a little: write octet by octet too.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// On a full disk no message is handed out: the run could not record
// what it sends. The spool is left as it was.
func TestNothingHandedOutOnFullDisk(t *testing.T) {
	root := filepath.Join(t.TempDir(), "fs")
	mountTmpfs(t, root, "1m")
	p := filepath.Join(root, "h.example")
	content := join(mkmsgs(5))
	writeFile(t, p, content)
	fill(t, filepath.Join(root, "filler"))
	s := open(t, p, nil, false)
	m, err := s.Next()
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Next: %v %v, want a disk full error", m, err)
	}
	if err := s.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	if err := os.Remove(filepath.Join(root, "filler")); err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, w := range glob(t, filepath.Join(root, ".etrnflush-h.example.*.work")) {
		b, err := os.ReadFile(w)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if string(all) != content {
		t.Fatalf("the claimed batch is not the spool as it was: %q", all)
	}
	if got := yielded(t, open(t, p, nil, false)); len(got) != 5 {
		t.Fatalf("with room again the spool yields %d messages, want 5", len(got))
	}
}

// Messages handed out have room for their records: the disk filling up
// while they are in flight does not keep their outcomes from the journal.
func TestInFlightRecordsFitAfterDiskFills(t *testing.T) {
	root := filepath.Join(t.TempDir(), "fs")
	mountTmpfs(t, root, "2m")
	p := filepath.Join(root, "h.example")
	const n = 1500 // records of more than three pages
	ms := mkmsgs(n)
	writeFile(t, p, join(ms))
	s := open(t, p, nil, false)
	var out []*Message
	for {
		m, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	fill(t, filepath.Join(root, "filler"))
	for _, m := range out {
		if err := s.Settle(m, all(Sent)(m), ""); err != nil {
			t.Fatalf("Settle %s on a full disk: %v", m.ID, err)
		}
	}
	// Killed here: the journal must say all were sent.
	if got := yielded(t, open(t, p, nil, false)); got != nil {
		t.Fatalf("%d messages would be sent again", len(got))
	}
}
