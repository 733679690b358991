package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// wireOf counts what a sender puts on the wire for content: every bare LF
// becomes CRLF, an unterminated last line gains one.
func wireOf(b []byte) int64 {
	n := int64(len(b))
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			n++
		}
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n += 2
	}
	return n
}

// TestWireSize: the size the BSMTP parse gives for SIZE= is the size the
// content takes on the wire, for every message of the real Exim's BSMTP
// fixtures (LF, CRLF, dot lines, 8-bit, 1 MiB) and for hand-made edge
// cases, so that the sender need not read each message twice.
func TestWireSize(t *testing.T) {
	n := 0
	// Each fixture folder holds per-host spools: files, or directories
	// of q... files for bsmtp/dir.
	for _, d := range []string{"bsmtp/file", "bsmtp/file-crlf", "bsmtp/file-quirk", "bsmtp/dir"} {
		p := filepath.Join(t.TempDir(), "f")
		copyTree(t, filepath.Join(fixtureDir, d), p)
		entries, err := os.ReadDir(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			n += checkWire(t, filepath.Join(p, e.Name()))
		}
	}
	extra := filepath.Join(t.TempDir(), "h.example")
	writeFile(t, extra,
		"MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n..dot\n\n.x\nlast\n.\n"+
			"MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n.\n")
	n += checkWire(t, extra)
	if n < 20 {
		t.Errorf("only %d messages checked", n)
	}
}

func checkWire(t *testing.T, path string) int {
	t.Helper()
	s := open(t, path, nil, true)
	n := 0
	for m := range messages(t, s) {
		if m.WireSize == 0 && m.Size != 0 {
			t.Errorf("%s %s: no wire size", path, m.ID)
		}
		if m.WireSize == 0 {
			continue
		}
		if want := wireOf([]byte(content(t, m))); m.WireSize != want {
			t.Errorf("%s %s: wire size %d, the content takes %d", path, m.ID, m.WireSize, want)
		}
		n++
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}
