package spool

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"etrnflush/bsmtp"
)

// TestHeldContent: a message's content is the same whether it comes
// from what the parse read (small messages) or from the file (larger
// ones), for sizes around both limits, with dot-stuffed lines at the
// start, the end and across the parser's buffer boundaries; and a run
// that sent everything leaves no work file behind (no compaction).
func TestHeldContent(t *testing.T) {
	sizes := []int{1, 100, 4 << 10, maxHeldMsg - 10, maxHeldMsg + 10, 3, 70 << 10, maxHeld + 100, 5, 200 << 10, 4 << 10, 64<<10 - 1,
		4 << 10, 4 << 10, 4<<10 - 100, 2 << 10, 100, 4 << 10}
	var bodies []string
	var buf bytes.Buffer
	w := bsmtp.NewWriter(&buf)
	for i, n := range sizes {
		var b strings.Builder
		fmt.Fprintf(&b, ".Subject: %d\n\n", i)
		for j := 0; b.Len() < n; j++ {
			if j%3 == 0 {
				b.WriteString(".")
			}
			fmt.Fprintf(&b, "line %d of message %d\n", j, i)
		}
		b.WriteString(".\n")
		bodies = append(bodies, b.String())
		env := bsmtp.Envelope{From: fmt.Sprintf("s%d@x.example", i), To: []string{fmt.Sprintf("r%d@h.example", i)}}
		if err := w.Write(env, strings.NewReader(b.String()), false); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openWith(t, Options{Path: p}, nil)
	i := 0
	var open io.ReadCloser // the previous message's, still open
	var prev *Message
	for m := range messages(t, s) {
		if open != nil {
			// Settled and followed by another message, its buffer
			// still being read: nothing may have reused it.
			if got, err := io.ReadAll(open); err != nil || string(got) != bodies[i-1] {
				t.Errorf("message %d read across its settle: %d octets, %v", i-1, len(got), err)
			}
			if err := open.Close(); err != nil {
				t.Fatal(err)
			}
			_, held := open.(*heldReader)
			if n, err := open.Read(make([]byte, 10)); n != 0 || err == nil || (held && err == io.EOF) {
				t.Errorf("message %d: a read after close gave %d octets, %v", i-1, n, err)
			}
			// Released now: opened again, it comes from the file.
			if got := content(t, prev); got != bodies[i-1] {
				t.Errorf("message %d opened after its settle differs", i-1)
			}
		}
		if got := content(t, m); got != bodies[i] {
			t.Errorf("message %d (%d octets): content differs (%d octets, want %d)", i, sizes[i], len(got), len(bodies[i]))
		}
		// Opened twice (a retry in a new session): the same again.
		if got := content(t, m); got != bodies[i] {
			t.Errorf("message %d: second open differs", i)
		}
		var err error
		if open, err = m.Open(); err != nil {
			t.Fatal(err)
		}
		prev = m
		if err := s.Settle(m, []Outcome{Sent}, ""); err != nil {
			t.Fatal(err)
		}
		i++
	}
	if err := open.Close(); err != nil {
		t.Fatal(err)
	}
	if i != len(sizes) {
		t.Fatalf("%d messages, want %d", i, len(sizes))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	left, err := filepath.Glob(filepath.Join(dir, ".etrnflush-*"))
	if err != nil || len(left) != 0 {
		t.Fatalf("left behind: %v %v", left, err)
	}
}
