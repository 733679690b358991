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

// yielded lists what a run would replay, settling each as kept.
func yielded(t *testing.T, s Spool) []string {
	t.Helper()
	var out []string
	for _, g := range drainAll(t, s, all(Keep)) {
		out = append(out, g.from+">"+g.to)
	}
	return out
}

// settleFirst opens the spool at p, settles its first message with out
// and returns the still open spool, as a run killed right after that
// Settle leaves it.
func settleFirst(t *testing.T, p string, out func(*Message) []Outcome, reason string) Spool {
	t.Helper()
	s := open(t, p, nil, false)
	m, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(m, out(m), reason); err != nil {
		t.Fatal(err)
	}
	return s
}

// A message may carry up to bsmtp.MaxRecipients recipients, so a journal
// record may be that long: it must load again, or the host's mail would
// be stuck behind that work file for ever.
func TestJournalRecordForManyRecipients(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	m := tmsg{from: "s@x.example", body: "Subject: many\n\nbody\n"}
	for i := 0; i < 9000; i++ {
		m.to = append(m.to, fmt.Sprintf("r%d@h.example", i))
	}
	writeFile(t, p, m.bsmtp()+mkmsgs(1)[0].bsmtp())
	settleFirst(t, p, func(m *Message) []Outcome {
		out := all(Sent)(m)
		out[4500] = Keep // one recipient deferred, so the record is kept
		return out
	}, "")
	// Killed here: the next run must load that journal.
	got := yielded(t, open(t, p, nil, false))
	want := []string{"s@x.example>r4500@h.example", "s0@x.example>a0@h.example,b0@h.example"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after the crash the spool yields %q, want %q", got, want)
	}
}

// A journal that cannot be read fails the run, leaves the work file and
// journal for the next one, and must not bring Close down.
func TestUnreadableJournalLeavesWorkFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	work := filepath.Join(dir, workName(workPrefix("h.example"), 5))
	writeFile(t, work, join(mkmsgs(1)))
	jp := filepath.Join(dir, ".etrnflush-h.example.00000000000000000005.journal")
	if err := os.Mkdir(jp, 0o700); err != nil {
		t.Fatal(err)
	}
	s := open(t, p, nil, false)
	if _, err := s.Next(); err == nil {
		t.Fatal("Next read a work file whose journal is a directory")
	}
	if err := s.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	if _, err := os.Stat(work); err != nil {
		t.Errorf("work file gone: %v", err)
	}
}

// A later run that refuses another recipient of the same message must not
// replace the failed copy an earlier run made: the admin needs both.
func TestFailedCopiesAreNotReplaced(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	ms := mkmsgs(1) // a0, b0
	writeFile(t, p, join(ms))
	settleFirst(t, p, func(*Message) []Outcome { return []Outcome{Failed, Keep} }, "550 a0 unknown")
	// Killed before Close: the work file keeps its name and mtime, so the
	// message keeps its id.
	s := settleFirst(t, p, func(*Message) []Outcome { return []Outcome{Failed} }, "550 b0 unknown")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	copies := glob(t, filepath.Join(failedDir(dir, "h.example"), "*.bsmtp"))
	var text string
	for _, c := range copies {
		b, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		text += string(b)
	}
	for _, r := range ms[0].to {
		if strings.Count(text, "RCPT TO:<"+r+">") != 1 {
			t.Errorf("failed copies hold <%s> %d times, want once:\n%s", r, strings.Count(text, "RCPT TO:<"+r+">"), text)
		}
	}
	if len(copies) != 2 {
		t.Errorf("%d failed copies, want 2", len(copies))
	}
}

// openWithLateAppend opens a spool whose file ends in an incomplete
// transaction for victim@, and appends a complete message for d@ to the
// work file as soon as that tail is quarantined, as a writer that takes
// only the fcntl lock could.
func openWithLateAppend(t *testing.T) (s Spool, p string) {
	t.Helper()
	fastLocks(t, time.Second, 200*time.Millisecond)
	dir := t.TempDir()
	p = filepath.Join(dir, "h.example")
	writeFile(t, p, "MAIL FROM:<a@x.example>\nRCPT TO:<victim@h.example>\nDATA\nSubject: partial\n")
	late := tmsg{from: "c@x.example", to: []string{"d@h.example"}, body: "Subject: for d only\n\nconfidential\n"}
	appended := false
	s, err := Open(Options{Path: p, Host: "h.example", Report: func(e Event) {
		if e.Kind == "quarantine" && !appended {
			appended = true
			appendWork(t, dir, late.bsmtp())
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

// An incomplete tail quarantined in one pass must stay a region of its own
// when a late append follows it: read from its start, the tail and the
// append look like one message for the tail's recipient, with the
// appended message's envelope in its data.
func TestQuarantinedTailKeepsItsBoundary(t *testing.T) {
	s, p := openWithLateAppend(t)
	var sent []string
	for _, g := range drainAll(t, s, all(Sent)) {
		sent = append(sent, g.from+">"+g.to)
	}
	if strings.Join(sent, " ") != "c@x.example>d@h.example" {
		t.Fatalf("first run sent %q, want only the late message", sent)
	}
	if got := yielded(t, open(t, p, nil, false)); got != nil {
		t.Errorf("the next run would send %q: the late message merged into the quarantined tail", got)
	}
}

// The same, for a run killed before the compaction: the next run reads
// the work file from the start, with the q record in the journal.
func TestQuarantinedTailKeepsItsBoundaryAfterCrash(t *testing.T) {
	s, p := openWithLateAppend(t)
	m, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(m, all(Keep)(m), ""); err != nil {
		t.Fatal(err)
	}
	// Killed here, before Close: the next run starts from offset 0.
	got := yielded(t, open(t, p, nil, false))
	if strings.Join(got, " ") != "c@x.example>d@h.example" {
		t.Errorf("after the crash the spool yields %q, want only the late message", got)
	}
}

// A reboot may renumber the device (LVM, md): the journal must still be
// recognised by the work file's inode, or a whole batch is sent again.
func TestJournalSurvivesDeviceRenumbering(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	writeFile(t, p, join(mkmsgs(2)))
	settleFirst(t, p, all(Sent), "")
	// Killed; then the device number changes.
	js := glob(t, filepath.Join(dir, ".etrnflush-h.example.*.journal"))
	if len(js) != 1 {
		t.Fatalf("journals: %v", js)
	}
	b, err := os.ReadFile(js[0])
	if err != nil {
		t.Fatal(err)
	}
	head, rest, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(head)
	f[2] = "99999"
	writeFile(t, js[0], strings.Join(f, " ")+"\n"+rest)
	got := yielded(t, open(t, p, nil, false))
	if strings.Join(got, " ") != "s1@x.example>a1@h.example,b1@h.example" {
		t.Errorf("after a device renumbering the spool yields %q, want only the unsent message", got)
	}
}

// A run killed during an atomic write leaves its temporary file; the next
// run that owns it removes it, and leaves another host's alone.
func TestStaleTemporaryFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	writeFile(t, p, join(mkmsgs(1)))
	fd := failedDir(dir, "h.example")
	if err := mkdirPrivate(fd); err != nil {
		t.Fatal(err)
	}
	ours := []string{
		filepath.Join(dir, ".etrnflush-h.example.00000000000000000005.work.tmp-123"),
		filepath.Join(dir, ".etrnflush-h.example.00000000000000000005.journal.tmp-9"),
		filepath.Join(fd, ".0001.x@0-abcd.bsmtp.tmp-77"),
	}
	// A host name may hold the temporary files' infix itself.
	p2 := filepath.Join(dir, "a.tmp-1.example")
	ours2 := filepath.Join(dir, ".etrnflush-a.tmp-1.example.00000000000000000005.work.tmp-123")
	theirs := []string{
		filepath.Join(dir, ".etrnflush-other.example.00000000000000000005.work.tmp-123"),
		// A host whose name starts with ours and a dot shares our prefix.
		filepath.Join(dir, ".etrnflush-h.example.org.00000000000000000005.journal.tmp-9"),
	}
	for _, f := range append(ours, theirs...) {
		writeFile(t, f, "partial")
	}
	ev := &events{}
	s := open(t, p, ev, false)
	for _, f := range ours {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was not removed: %v", f, err)
		}
	}
	for _, f := range theirs {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("another host's temporary file was touched: %v", err)
		}
	}
	if n := strings.Count(strings.Join(ev.kinds(), " "), "notice"); n != len(ours) {
		t.Errorf("%d notices for %d removals: %v", n, len(ours), ev.list)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, ours2, "partial")
	if err := open(t, p2, nil, false).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ours2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was not removed: %v", ours2, err)
	}
	// A dry run changes nothing, not even that.
	writeFile(t, ours[0], "partial")
	yielded(t, open(t, p, nil, true))
	if _, err := os.Stat(ours[0]); err != nil {
		t.Errorf("a dry run removed %s: %v", ours[0], err)
	}
}

// Temporary files carry their target's name, within the file name limit.
func TestTempPatternFits(t *testing.T) {
	long := strings.Repeat("q", 255)
	for _, target := range []string{"/d/.etrnflush-h.example.00000000000000000005.work", "/d/x/" + long, "/d/" + workName(workPrefix(strings.Repeat("h", 253)), 5)} {
		pat := tempPattern(target)
		if len(pat)+10 > 255 || !strings.HasPrefix(pat, ".") || !strings.HasSuffix(pat, tempInfix+"*") {
			t.Errorf("tempPattern(%q) = %q", target, pat)
		}
	}
}
