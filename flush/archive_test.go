package flush

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

func flushArchiving(t *testing.T, path, addr, root string) (Summary, string) {
	t.Helper()
	var logBuf bytes.Buffer
	cfg := Config{
		Host:          "h.example",
		Spool:         spool.Options{Path: path},
		Sender:        sender.Options{Helo: "relay.test.example", TLS: sender.TLSNone, Timeout: 5 * time.Second, DataTimeout: 5 * time.Second},
		Log:           logging.NewWriter(&logBuf, true),
		Dests:         []string{addr},
		ArchiveDir:    root,
		ArchiveMaxAge: 30 * 24 * time.Hour,
	}
	sum, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("flush: %v\n%s", err, logBuf.String())
	}
	return sum, logBuf.String()
}

// archivedEnvelopes lists "from>to,to" of each file in the host's archive.
func archivedEnvelopes(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "h.example", "*.bsmtp"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var from string
		var to []string
		for _, l := range strings.Split(string(b), "\n") {
			if a, ok := strings.CutPrefix(l, "MAIL FROM:<"); ok {
				from = strings.TrimSuffix(a, ">")
			}
			if a, ok := strings.CutPrefix(l, "RCPT TO:<"); ok {
				to = append(to, strings.TrimSuffix(a, ">"))
			}
			if l == "DATA" {
				break
			}
		}
		out = append(out, from+">"+strings.Join(to, ","))
	}
	sort.Strings(out)
	return out
}

// TestArchiveOutcomes: only what the server took is archived, and only
// its recipients: a refused recipient and a deferred one are not, the
// deferred one is archived by the run that delivers it.
func TestArchiveOutcomes(t *testing.T) {
	be := &faultSink{faults: map[string]string{
		"RCPT a2@h.example": "550",
		"RCPT b2@h.example": "451",
	}}
	addr := startFaultSink(t, be)
	path := filepath.Join(t.TempDir(), "h.example")
	root := filepath.Join(t.TempDir(), "archive")
	writeSpool(t, path, []testMsg{
		{"a@s.example", []string{"a1@h.example", "a2@h.example"}},
		{"b@s.example", []string{"b1@h.example", "b2@h.example"}},
		{"c@s.example", []string{"c1@h.example"}},
	}, -1)
	sum, logs := flushArchiving(t, path, addr, root)
	if sum.Archived != 3 || sum.ArchiveFailed != 0 || !strings.Contains(logs, "archived=3 archive_failed=0") {
		t.Errorf("summary %+v\n%s", sum, logs)
	}
	want := []string{"a@s.example>a1@h.example", "b@s.example>b1@h.example", "c@s.example>c1@h.example"}
	if got := archivedEnvelopes(t, root); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("archive %q, want %q", got, want)
	}
	// The deferring server has gone; one that takes everything is there.
	addr = startFaultSink(t, &faultSink{})
	sum, logs = flushArchiving(t, path, addr, root)
	if sum.Archived != 1 {
		t.Errorf("second run: %+v\n%s", sum, logs)
	}
	want = append(want, "b@s.example>b2@h.example")
	sort.Strings(want)
	if got := archivedEnvelopes(t, root); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("archive %q, want %q", got, want)
	}
}

// TestArchiveFailureKeepsFlushing: an archive root that cannot be made (a
// file stands there) fails the first copy; it is logged once, nothing more
// is tried, and every message is delivered and removed all the same.
func TestArchiveFailureKeepsFlushing(t *testing.T) {
	be := &faultSink{}
	addr := startFaultSink(t, be)
	path := filepath.Join(t.TempDir(), "h.example")
	root := filepath.Join(t.TempDir(), "archive")
	if err := os.WriteFile(root, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	writeSpool(t, path, []testMsg{
		{"a@s.example", []string{"a1@h.example"}},
		{"b@s.example", []string{"b1@h.example"}},
	}, -1)
	sum, logs := flushArchiving(t, path, addr, root)
	if sum.Sent != 2 || sum.Archived != 0 || sum.ArchiveFailed != 2 || sum.Left() {
		t.Errorf("summary %+v\n%s", sum, logs)
	}
	if n := strings.Count(logs, "event=archive-failed"); n != 1 {
		t.Errorf("%d archive-failed lines, want 1:\n%s", n, logs)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("spool not removed: %v", err)
	}
}

// TestLeftUnreachable: an unreachable host leaves something only while
// messages are counted as kept or a DSN was not handed over.
func TestLeftUnreachable(t *testing.T) {
	for _, c := range []struct {
		s    Summary
		left bool
	}{
		{Summary{Unreachable: true}, false},
		{Summary{Unreachable: true, Failed: 2, Bounced: 2}, false},
		{Summary{Unreachable: true, Deferred: 1}, true},
		{Summary{Unreachable: true, Failed: 1, BounceFailed: 1}, true},
	} {
		if got := c.s.Left(); got != c.left {
			t.Errorf("%+v: Left %v, want %v", c.s, got, c.left)
		}
	}
}

// TestBounceSkipsLockedCopy: a failed copy whose lock another process
// holds (the bounce command) is left to it: no DSN, not counted as a
// failed bounce; once released, the next run bounces it.
func TestBounceSkipsLockedCopy(t *testing.T) {
	be := &faultSink{faults: map[string]string{"RCPT a1@h.example": "550"}}
	addr := startFaultSink(t, be)
	path := filepath.Join(t.TempDir(), "h.example")
	writeSpool(t, path, []testMsg{{"a@s.example", []string{"a1@h.example"}}}, -1)
	out := t.TempDir()
	sm := fakeSendmail(t, out)
	t.Setenv("FAKE_SENDMAIL_EXIT", "1")
	sum, logs := flushBouncing(t, path, addr, sm)
	if sum.BounceFailed != 1 {
		t.Fatalf("run 1: %+v\n%s", sum, logs)
	}
	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	copies, err := spool.ListFailed(path)
	if err != nil || len(copies) != 1 {
		t.Fatalf("failed folder: %v %v", copies, err)
	}
	unlock, err := copies[0].Lock()
	if err != nil {
		t.Fatal(err)
	}
	sum, logs = flushBouncing(t, path, "", sm)
	if sum.Bounced != 0 || sum.BounceFailed != 0 || sum.Left() || len(dsnFiles(t, out)) != 1 {
		t.Errorf("run 2, copy held elsewhere: %+v, %d sendmail calls\n%s", sum, len(dsnFiles(t, out)), logs)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	sum, logs = flushBouncing(t, path, "", sm)
	if sum.Bounced != 1 || len(dsnFiles(t, out)) != 2 {
		t.Errorf("run 3: %+v\n%s", sum, logs)
	}
}

// TestArchiveInSpoolRefused: an archive root that puts the host's folder
// in the spool's own directory (where it would be taken for a host) is
// refused at the first copy, logged once, and nothing is pruned there.
func TestArchiveInSpoolRefused(t *testing.T) {
	be := &faultSink{}
	addr := startFaultSink(t, be)
	dir := t.TempDir()
	path := filepath.Join(dir, "h.example")
	writeSpool(t, path, []testMsg{{"a@s.example", []string{"a1@h.example"}}}, -1)
	old := filepath.Join(dir, "arch", "h.example", "old.bsmtp")
	if err := os.MkdirAll(filepath.Dir(old), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(old, time.Now().Add(-400*24*time.Hour), time.Now().Add(-400*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	sum, logs := flushArchiving(t, path, addr, filepath.Join(dir, "arch"))
	if sum.Sent != 1 || sum.ArchiveFailed != 1 || strings.Count(logs, "event=archive-failed") != 1 || !strings.Contains(logs, "spool's directory") {
		t.Errorf("summary %+v\n%s", sum, logs)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("pruned in the spool's directory: %v", err)
	}
}
