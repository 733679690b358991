package spool

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDirLayout(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	ms := mkmsgs(4)
	files := map[string]string{
		"q2":            ms[1].bsmtp(), // written later, yielded second
		"q1":            ms[0].bsmtp(),
		"q3":            ms[2].bsmtp() + ms[3].bsmtp(), // several messages in one file
		"temp.123.host": ms[0].bsmtp(),                 // Exim still writing
		".hidden":       ms[0].bsmtp(),
		"qbad":          "MAIL FROM:<a@b>\nBOGUS\n.\n",
	}
	base := time.Now().Add(-time.Hour)
	order := []string{"q1", "q2", "q3", "qbad", "temp.123.host", ".hidden"}
	for i, n := range order {
		writeFile(t, filepath.Join(p, n), files[n])
		tm := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(filepath.Join(p, n), tm, tm); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(root, "elsewhere")
	writeFile(t, target, ms[0].bsmtp())
	if err := os.Symlink(target, filepath.Join(p, "qlink")); err != nil {
		t.Fatal(err)
	}
	var ev events
	s := open(t, p, &ev, false)
	if s.Layout() != "bsmtp-dir" {
		t.Fatal(s.Layout())
	}
	// q1 all sent, q2 one kept, q3 first failed+kept, second sent; two in
	// flight at a time.
	var inflight []*Message
	var seen []string
	outs := [][]Outcome{{Sent, Sent}, {Sent, Keep}, {Failed, Keep}, {Sent, Sent}}
	settled := 0
	for m := range messages(t, s) {
		seen = append(seen, m.From)
		inflight = append(inflight, m)
		if len(inflight) == 2 {
			if err := s.Settle(inflight[0], outs[settled], "550 gone"); err != nil {
				t.Fatal(err)
			}
			settled++
			inflight = inflight[1:]
		}
	}
	for _, m := range inflight {
		if err := s.Settle(m, outs[settled], "550 gone"); err != nil {
			t.Fatal(err)
		}
		settled++
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{ms[0].from, ms[1].from, ms[2].from, ms[3].from}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("yielded %v, want %v", seen, want)
	}
	if got, want := names(t, p), []string{".hidden", "q2", "q3", "qlink", "temp.123.host"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dir holds %v, want %v", got, want)
	}
	for n, want := range map[string]string{
		"q2":            (tmsg{ms[1].from, ms[1].to[1:], ms[1].body}).bsmtp(),
		"q3":            (tmsg{ms[2].from, ms[2].to[1:], ms[2].body}).bsmtp(),
		"temp.123.host": files["temp.123.host"],
	} {
		b, err := os.ReadFile(filepath.Join(p, n))
		if err != nil || string(b) != want {
			t.Fatalf("%s holds %q", n, b)
		}
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != ms[0].bsmtp() {
		t.Fatal("symlink target touched")
	}
	q := glob(t, filepath.Join(quarantineDir(root, "h.example"), "qbad.*"))
	if len(q) != 2 {
		t.Fatalf("quarantine %v", q)
	}
	f := glob(t, filepath.Join(failedDir(root, "h.example"), "*.bsmtp"))
	if len(f) != 1 {
		t.Fatalf("failed %v", f)
	}
	if b, err := os.ReadFile(f[0]); err != nil || string(b) != (tmsg{ms[2].from, ms[2].to[:1], ms[2].body}).bsmtp() {
		t.Fatalf("failed copy %q", b)
	}
	if !strings.Contains(strings.Join(ev.kinds(), ","), "quarantine") {
		t.Fatalf("events %v", ev.list)
	}
	// Next run: the kept recipients only.
	s = open(t, p, nil, false)
	gs := drainAll(t, s, all(Sent))
	if len(gs) != 2 || gs[0].to != ms[1].to[1] || gs[1].to != ms[2].to[1] {
		t.Fatalf("second run %v", gs)
	}
	if got := names(t, p); !reflect.DeepEqual(got, []string{".hidden", "qlink", "temp.123.host"}) {
		t.Fatalf("dir holds %v", got)
	}
}

func TestDetect(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(t *testing.T, p string)
		format string
		layout string
		found  string // LayoutError.Found, "" for none
	}{
		{"missing", func(*testing.T, string) {}, "auto", "none", ""},
		{"file", func(t *testing.T, p string) { writeFile(t, p, "") }, "auto", "bsmtp-file", ""},
		{"empty dir", mkdir(), "auto", "bsmtp-dir", ""},
		{"exim dir", mkdir("q1xXKke-770089", "temp.1.h", ".x"), "auto", "bsmtp-dir", ""},
		{"maildir", mkdir("new/", "cur/", "tmp/"), "auto", "maildir", ""},
		{"maildir new only", mkdir("new/", "maildirsize"), "auto", "maildir", ""},
		{"mailstore", mkdir("1xX-0007hE-1F-0007hH.env", "1xX-0007hE-1F-0007hH.msg"), "auto", "mailstore", ""},
		{"mailstore in progress", mkdir("1xX-0007hE-1F-0007hH.tmp", "1xX-0007hE-1F-0007hH.msg"), "auto", "mailstore", ""},
		{"maildir and mailstore", mkdir("new/", "a.env"), "auto", "", "mixed"},
		{"bsmtp and mailstore", mkdir("q1xXKke-770089", "a.msg"), "auto", "", "mixed"},
		{"other names", mkdir("message1"), "auto", "", "unknown"},
		{"other names forced", mkdir("message1"), "bsmtp", "bsmtp-dir", ""},
		{"maildir format", func(*testing.T, string) {}, "maildir", "none", ""},
		{"maildir format on a file", func(t *testing.T, p string) { writeFile(t, p, "") }, "maildir", "", "bsmtp-file"},
		{"mailstore forced", mkdir("new/", "a.env"), "mailstore", "mailstore", ""},
		{"maildir new is a symlink", func(t *testing.T, p string) {
			mkdir("cur/")(t, p)
			if err := os.Symlink(t.TempDir(), filepath.Join(p, "new")); err != nil {
				t.Fatal(err)
			}
		}, "auto", "", "unknown"},
		{"bad format", func(*testing.T, string) {}, "mbox", "", "unknown"},
		{"fifo", func(t *testing.T, p string) {
			if err := mkfifo(p); err != nil {
				t.Fatal(err)
			}
		}, "auto", "", "unknown"},
		{"dir with leftover work", func(t *testing.T, p string) {
			mkdir()(t, p)
			writeFile(t, filepath.Join(filepath.Dir(p), workName(workPrefix("h.example"), 1)), "")
		}, "auto", "", "mixed"},
		{"missing with leftover work", func(t *testing.T, p string) {
			writeFile(t, filepath.Join(filepath.Dir(p), workName(workPrefix("h.example"), 1)), "")
		}, "auto", "bsmtp-file", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "h.example")
			c.setup(t, p)
			s, err := Open(Options{Path: p, Host: "h.example", Format: c.format})
			var le *LayoutError
			if c.found != "" {
				if !errors.As(err, &le) || le.Found != c.found {
					t.Fatalf("err %v, want LayoutError %s", err, c.found)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Layout() != c.layout {
				t.Fatalf("layout %s, want %s", s.Layout(), c.layout)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mkdir(entries ...string) func(t *testing.T, p string) {
	return func(t *testing.T, p string) {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e, "/") {
				if err := os.Mkdir(filepath.Join(p, e), 0o700); err != nil {
					t.Fatal(err)
				}
				continue
			}
			writeFile(t, filepath.Join(p, e), "")
		}
	}
}

// TestDirFailedCopiesAcrossRewrites: a file of two messages for the same
// recipient; the first is refused and the second kept in one run, the
// second refused in the next. The rewrite moved the second message to the
// offset the first had, and keeps the file's date: its failed copy must
// not replace the first one's.
func TestDirFailedCopiesAcrossRewrites(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	m0 := tmsg{"s0@x.example", []string{"x@h.example"}, "Subject: first\n\none\n"}
	m1 := tmsg{"s1@x.example", []string{"x@h.example"}, "Subject: second\n\ntwo\n"}
	writeFile(t, filepath.Join(p, "q1"), m0.bsmtp()+m1.bsmtp())
	first := map[string]Outcome{m0.from: Failed, m1.from: Keep}
	drainAll(t, open(t, p, nil, false), func(m *Message) []Outcome { return []Outcome{first[m.From]} })
	gs := drainAll(t, open(t, p, nil, false), all(Failed))
	if len(gs) != 1 || gs[0].from != m1.from {
		t.Fatalf("second run yielded %+v", gs)
	}
	if got := names(t, p); len(got) != 0 {
		t.Fatalf("spool holds %v", got)
	}
	var copies []string
	for _, f := range glob(t, filepath.Join(failedDir(root, "h.example"), "*.bsmtp")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		copies = append(copies, string(b))
	}
	if !reflect.DeepEqual(copies, []string{m0.bsmtp(), m1.bsmtp()}) && !reflect.DeepEqual(copies, []string{m1.bsmtp(), m0.bsmtp()}) {
		t.Fatalf("failed copies %q, want one of each message", copies)
	}
}

// TestDirFileMessageLimit: a BSMTP directory file is read message by
// message into memory (for the rewrite), and Exim writes one message per
// file; a file with more than the limit is quarantined whole instead of
// filling memory, and so is a file with much damage, with a few reasons.
func TestDirFileMessageLimit(t *testing.T) {
	old := maxDirFileMessages
	maxDirFileMessages = 3
	t.Cleanup(func() { maxDirFileMessages = old })
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(p, "q1"), join(mkmsgs(3)))
	writeFile(t, filepath.Join(p, "q2"), join(mkmsgs(4)))
	// Damage: a few reasons are kept, not one per damaged line.
	writeFile(t, filepath.Join(p, "q3"), strings.Repeat("MAIL FROM:<a@b.example>\nBOGUS\n.\n", 1000))
	for i, n := range []string{"q2", "q3"} {
		tm := time.Now().Add(time.Duration(i+1) * time.Minute)
		if err := os.Chtimes(filepath.Join(p, n), tm, tm); err != nil {
			t.Fatal(err)
		}
	}
	var ev events
	gs := drainAll(t, open(t, p, &ev, false), all(Sent))
	if len(gs) != 3 {
		t.Fatalf("sent %d messages, want q1's 3", len(gs))
	}
	var q []string
	for _, e := range ev.list {
		if e.Kind == "quarantine" {
			q = append(q, e.Reason)
		}
	}
	if len(q) != 2 || !strings.Contains(q[0], "more than 3 messages") || strings.Count(q[1], "BOGUS") > maxDamageReasons {
		t.Fatalf("quarantined %q", q)
	}
	if got := glob(t, filepath.Join(quarantineDir(root, "h.example"), "q2.*.bsmtp")); len(got) != 1 {
		t.Fatalf("quarantine holds %v", names(t, quarantineDir(root, "h.example")))
	}
}
