package spool

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const fixtureDir = "../testdata/exim"

// fixtureMsg is a message of expected.json, the oracle written when Exim
// produced the fixtures.
type fixtureMsg struct {
	Sender     string   `json:"sender"`
	Recipients []string `json:"recipients"`
	DataLen    int64    `json:"data_len"`
	DataSHA256 string   `json:"data_sha256"`
	// maildir: the data without the Return-path/Envelope-to/Delivery-date
	// Exim put on top
	StrippedLen    int64  `json:"data_without_exim_added_headers_len"`
	StrippedSHA256 string `json:"data_without_exim_added_headers_sha256"`
}

type fixtureFile struct {
	Format   string       `json:"format"`
	Messages []fixtureMsg `json:"messages"`
}

func loadExpected(t *testing.T) map[string]fixtureFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]fixtureFile
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	return all
}

// copyTree copies a fixture directory, so that a flush may change it.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGoldenFormats opens every mailstore, maildir and one-message-per-file
// BSMTP host directory Exim wrote, reads every message and compares it with expected.json: the
// envelope as stored, and the digest of the data as it is to be sent
// (for maildir, without the envelope fields Exim put on top). Then it
// settles all as sent and checks that nothing is left.
func TestGoldenFormats(t *testing.T) {
	all := loadExpected(t)
	byDir := map[string]map[string]fixtureFile{} // host dir -> key of the message -> entry
	for k, v := range all {
		var dir, key string
		switch {
		case strings.HasPrefix(k, "mailstore/"):
			dir, key = filepath.Dir(k), strings.TrimSuffix(filepath.Base(k), ".{env,msg}")
		case strings.HasPrefix(k, "maildir/"):
			dir, key = filepath.Dir(filepath.Dir(k)), "new-"+filepath.Base(k)
		case strings.HasPrefix(k, "bsmtp/dir/"):
			dir, key = filepath.Dir(k), filepath.Base(k)
		default:
			continue
		}
		if byDir[dir] == nil {
			byDir[dir] = map[string]fixtureFile{}
		}
		byDir[dir][key] = v
	}
	for _, variant := range []string{"mailstore/plain/", "mailstore/affix/", "maildir/batched/", "maildir/nobatch/", "bsmtp/dir/"} {
		found := false
		for d := range byDir {
			found = found || strings.HasPrefix(d, variant)
		}
		if !found {
			t.Fatalf("expected.json has no %s fixture", variant)
		}
	}
	n := 0
	for dir, want := range byDir {
		t.Run(dir, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), filepath.Base(dir))
			copyTree(t, filepath.Join(fixtureDir, dir), p)
			o := Options{Path: p, Host: "h.example", Format: "auto"}
			if strings.HasPrefix(dir, "mailstore/affix/") {
				o.MailstorePrefixLines, o.MailstoreSuffixLines = 1, 1
			}
			var ev events
			o.Report = ev.report
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			wantLayout := strings.SplitN(dir, "/", 2)[0]
			if wantLayout == "bsmtp" {
				wantLayout = "bsmtp-dir"
			}
			if s.Layout() != wantLayout {
				t.Fatalf("layout %s, want %s", s.Layout(), wantLayout)
			}
			seen := map[string]bool{}
			for m := range messages(t, s) {
				key, _, _ := strings.Cut(m.ID, ".")
				if strings.HasPrefix(key, "new-") {
					key = m.ID[:strings.LastIndexByte(m.ID, '.')]
				}
				f, ok := want[key]
				if !ok || len(f.Messages) != 1 {
					t.Fatalf("message %s: not in expected.json (or not one message there)", m.ID)
				}
				seen[key] = true
				w := f.Messages[0]
				if m.From != w.Sender || !slices.Equal(m.To, w.Recipients) {
					t.Errorf("%s: envelope <%s> %q, want <%s> %q", key, m.From, m.To, w.Sender, w.Recipients)
				}
				sum, size := w.DataSHA256, w.DataLen
				if wantLayout == "maildir" {
					sum, size = w.StrippedSHA256, w.StrippedLen
				}
				data := content(t, m)
				h := sha256.Sum256([]byte(data))
				if got := hex.EncodeToString(h[:]); got != sum || int64(len(data)) != size || m.Size != size {
					t.Errorf("%s: data sha256 %s len %d Size %d, want %s %d", key, got, len(data), m.Size, sum, size)
				}
				if eight := strings.ContainsFunc(data, func(r rune) bool { return r >= 0x80 }); m.EightBit != eight {
					t.Errorf("%s: EightBit %v, data has 8-bit octets: %v", key, m.EightBit, eight)
				}
				if err := s.Settle(m, slices.Repeat([]Outcome{Sent}, len(m.To)), ""); err != nil {
					t.Fatal(err)
				}
				n++
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if len(seen) != len(want) {
				t.Errorf("read %d messages, expected.json has %d", len(seen), len(want))
			}
			if slices.Contains(ev.kinds(), "quarantine") {
				t.Errorf("events %+v", ev.list)
			}
			left := 0
			_ = filepath.WalkDir(p, func(q string, e os.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					left++
					t.Errorf("left after all were sent: %s", q)
				}
				return nil
			})
		})
	}
	t.Logf("%d messages in %d spools", n, len(byDir))
}

// mkMaildir writes a maildir with the given files (name relative to the
// maildir, content), each dated one minute after the one before.
func mkMaildir(t *testing.T, p string, files ...[2]string) {
	t.Helper()
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(p, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	for i, f := range files {
		fp := filepath.Join(p, f[0])
		writeFile(t, fp, f[1])
		tm := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(fp, tm, tm); err != nil {
			t.Fatal(err)
		}
	}
}

func eximMaildirMsg(from string, to []string, body string) string {
	return "Return-path: <" + from + ">\nEnvelope-to: " + strings.Join(to, ",\n ") +
		"\nDelivery-date: Sat, 28 Nov 2026 15:54:14 +0000\n" + body
}

func openWith(t *testing.T, o Options, ev *events) Spool {
	t.Helper()
	if o.Host == "" {
		o.Host = "h.example"
	}
	if ev != nil {
		o.Report = ev.report
	}
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// TestMaildir: envelope from the top fields, which are not sent; the
// rest untouched; new/ and cur/ read oldest first, tmp/ never; a
// partial acceptance rewrites only Envelope-to:, through tmp/, keeping
// the name and the date; a fully settled message is removed.
func TestMaildir(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	body := "Received: by x\nDelivered-To: spoofed@evil.example\nSubject: hi\n\n.dot line\nbody\n"
	mkMaildir(t, p,
		[2]string{"cur/2.M2P2.host:2,S", eximMaildirMsg("b@x.example", []string{"c@h.example"}, body)},
		[2]string{"new/1.M1P1.host", eximMaildirMsg("a@x.example", []string{"a1@h.example", "\"q, q\"@h.example", "a3@h.example"}, body)},
		[2]string{"new/3.M3P3.host,S=9", "Return-path: <>\nEnvelope-to: d@h.example\n" + body},
		[2]string{"tmp/4.M4P4.host", eximMaildirMsg("e@x.example", []string{"e@h.example"}, body)},
	)
	// written first, but older
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(p, "new/1.M1P1.host"), old, old); err != nil {
		t.Fatal(err)
	}
	var ev events
	s := openWith(t, Options{Path: p}, &ev)
	if s.Layout() != "maildir" {
		t.Fatal(s.Layout())
	}
	var ms []*Message
	for m := range messages(t, s) {
		ms = append(ms, m)
		if got := content(t, m); got != body {
			t.Errorf("%s: content %q, want %q", m.ID, got, body)
		}
	}
	var envs [][]string
	for _, m := range ms {
		envs = append(envs, append([]string{m.From}, m.To...))
	}
	want := [][]string{{"a@x.example", "a1@h.example", "\"q, q\"@h.example", "a3@h.example"}, {"b@x.example", "c@h.example"}, {"", "d@h.example"}}
	if !reflect.DeepEqual(envs, want) {
		t.Fatalf("envelopes %q, want %q", envs, want)
	}
	// All three are out at once (pipelined); settle in order.
	if err := s.Settle(ms[0], []Outcome{Keep, Sent, Failed}, "550 no"); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ms[1], []Outcome{Sent}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ms[2], []Outcome{Keep}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(p, "new/1.M1P1.host"))
	if err != nil {
		t.Fatal(err)
	}
	if want := eximMaildirMsg("a@x.example", []string{"a1@h.example"}, body); string(b) != want {
		t.Errorf("rewritten message:\n%q\nwant\n%q", b, want)
	}
	fi, err := os.Stat(filepath.Join(p, "new/1.M1P1.host"))
	if err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("rewritten message dated %v, want %v (%v)", fi.ModTime(), old, err)
	}
	if got := names(t, filepath.Join(p, "cur")); len(got) != 0 {
		t.Errorf("cur/ holds %v", got)
	}
	if got := names(t, filepath.Join(p, "tmp")); !reflect.DeepEqual(got, []string{"4.M4P4.host"}) {
		t.Errorf("tmp/ holds %v", got)
	}
	f := glob(t, filepath.Join(failedDir(root, "h.example"), "*.bsmtp"))
	if len(f) != 1 {
		t.Fatalf("failed copies %v", f)
	}
	if b, err := os.ReadFile(f[0]); err != nil || string(b) != (tmsg{"a@x.example", []string{"a3@h.example"}, body}).bsmtp() {
		t.Errorf("failed copy %q", b)
	}
	// The next run sees the kept recipients only.
	gs := drainAll(t, openWith(t, Options{Path: p}, nil), all(Sent))
	if len(gs) != 2 || gs[0].to != "a1@h.example" || gs[1].to != "d@h.example" {
		t.Fatalf("second run %+v", gs)
	}
	if got := names(t, filepath.Join(p, "new")); len(got) != 0 {
		t.Errorf("new/ holds %v", got)
	}
}

// TestMaildirDeliveredTo: qmail style, the prefix stripped, both fields
// removed; a later Delivered-To: is an earlier hop's and stays.
func TestMaildirDeliveredTo(t *testing.T) {
	p := filepath.Join(t.TempDir(), "h.example")
	body := "Delivered-To: earlier@hop.example\nSubject: x\n\nbody\n"
	mkMaildir(t, p,
		[2]string{"new/1", "Return-Path: <a@x.example>\nDelivered-To: isp-ppp-bob@h.example\n" + body},
		[2]string{"new/2", "Return-Path: <a@x.example>\nDelivered-To: other-bob@h.example\n" + body},
	)
	var ev events
	s := openWith(t, Options{Path: p, Format: "maildir", MaildirEnvelope: "delivered-to", DeliveredToPrefix: "ISP-ppp-"}, &ev)
	gs := drainAll(t, s, all(Sent))
	if want := []got{{"a@x.example", "bob@h.example", body}}; !reflect.DeepEqual(gs, want) {
		t.Fatalf("got %+v, want %+v", gs, want)
	}
	if k := ev.kinds(); !reflect.DeepEqual(k, []string{"quarantine"}) || !strings.Contains(ev.list[0].Reason, "delivered_to_prefix") {
		t.Fatalf("events %+v", ev.list)
	}
}

// TestMailstore: pairs read oldest first; a .tmp (Exim still writing)
// never touched; partial acceptance rewrites the .env only, keeping the
// prefix and suffix lines and the date; removal takes .env and .msg.
func TestMailstore(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	body := "Subject: hi\n\n.dot\nbody \xc3\xa9\n"
	files := [][2]string{
		{"b.msg", body},
		{"b.env", "X-Prefix: b\n\nr1@h.example\nr2@h.example\nr3@h.example\nX-Suffix: end\n"},
		{"a.msg", "Subject: a\n\nA\n"},
		{"a.env", "X-Prefix: a\ns@x.example\nr@h.example\nX-Suffix: end\n"},
		{"c.tmp", "X-Prefix: c\n"},
		{"c.msg", "Subject: c\n"},
	}
	base := time.Now().Add(-time.Hour)
	for i, f := range files {
		fp := filepath.Join(p, f[0])
		writeFile(t, fp, f[1])
		tm := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(fp, tm, tm); err != nil {
			t.Fatal(err)
		}
	}
	envDate := base.Add(time.Minute)
	var ev events
	s := openWith(t, Options{Path: p, MailstorePrefixLines: 1, MailstoreSuffixLines: 1}, &ev)
	if s.Layout() != "mailstore" {
		t.Fatal(s.Layout())
	}
	m1, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("third Next: %v", err)
	}
	if m1.From != "" || !slices.Equal(m1.To, []string{"r1@h.example", "r2@h.example", "r3@h.example"}) || !m1.EightBit || content(t, m1) != body {
		t.Fatalf("first %+v", m1)
	}
	if m2.From != "s@x.example" || content(t, m2) != "Subject: a\n\nA\n" {
		t.Fatalf("second %+v", m2)
	}
	if err := s.Settle(m1, []Outcome{Sent, Keep, Failed}, "550 no"); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(m2, []Outcome{Sent}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(ev.list) != 1 || ev.list[0].Kind != "layout" {
		t.Errorf("events %+v (c.msg has a .tmp: no orphan)", ev.list)
	}
	if got := names(t, p); !reflect.DeepEqual(got, []string{"b.env", "b.msg", "c.msg", "c.tmp"}) {
		t.Fatalf("spool holds %v", got)
	}
	b, err := os.ReadFile(filepath.Join(p, "b.env"))
	if err != nil || string(b) != "X-Prefix: b\n\nr2@h.example\nX-Suffix: end\n" {
		t.Fatalf("rewritten .env %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(p, "b.env")); err != nil || !fi.ModTime().Equal(envDate) {
		t.Errorf("rewritten .env dated %v, want %v", fi.ModTime(), envDate)
	}
	if b, err := os.ReadFile(filepath.Join(p, "b.msg")); err != nil || string(b) != body {
		t.Fatalf(".msg changed: %q %v", b, err)
	}
	f := glob(t, filepath.Join(failedDir(root, "h.example"), "*.bsmtp"))
	if len(f) != 1 {
		t.Fatalf("failed copies %v", f)
	}
	if b, err := os.ReadFile(f[0]); err != nil || string(b) != (tmsg{"", []string{"r3@h.example"}, body}).bsmtp() {
		t.Errorf("failed copy %q", b)
	}
	// Removal takes the .env first; a .msg left by a crash in between
	// is reported, every run, and left alone.
	if err := os.Remove(filepath.Join(p, "c.tmp")); err != nil {
		t.Fatal(err)
	}
	ev = events{}
	gs := drainAll(t, openWith(t, Options{Path: p, Format: "mailstore", MailstorePrefixLines: 1, MailstoreSuffixLines: 1}, &ev), all(Sent))
	if len(gs) != 1 || gs[0].to != "r2@h.example" {
		t.Fatalf("second run %+v", gs)
	}
	if k := ev.kinds(); !reflect.DeepEqual(k, []string{"orphan"}) || ev.list[0].ID != "c.msg" {
		t.Fatalf("events %+v", ev.list)
	}
	if got := names(t, p); !reflect.DeepEqual(got, []string{"c.msg"}) {
		t.Fatalf("spool holds %v", got)
	}
}

// TestDamagedEntries: each damaged entry is quarantined whole with a
// reason naming the trouble, a symlink is never followed, and the good
// message beside them still goes out.
func TestDamagedEntries(t *testing.T) {
	type entry struct{ name, content string }
	cases := []struct {
		name    string
		format  string
		entries []entry
		symlink string // entry name of a symlink to a file outside the spool
		reason  string // in the quarantine reason; "" for none
		notice  string // in a notice; "" for none
	}{
		{"env without msg", "mailstore", []entry{{"x.env", "s@x.example\nr@h.example\n"}}, "", ".env without its .msg", ""},
		{"empty env", "mailstore", []entry{{"x.env", ""}, {"x.msg", "S: x\n\nb\n"}}, "", ".env: empty", ""},
		{"recipient with CR", "mailstore", []entry{{"x.env", "s@x.example\nr\r@h.example\n"}, {"x.msg", "S: x\n\nb\n"}}, "", "control character 0x0d", ""},
		{"recipient with NUL", "mailstore", []entry{{"x.env", "s@x.example\nr\x00@h.example\n"}, {"x.msg", "S: x\n\nb\n"}}, "", "control character 0x00", ""},
		{"env without final LF", "mailstore", []entry{{"x.env", "s@x.example\nr@h.example"}, {"x.msg", "S: x\n\nb\n"}}, "", "no line end", ""},
		{"env with only a sender", "mailstore", []entry{{"x.env", "s@x.example\n"}, {"x.msg", "S: x\n\nb\n"}}, "", "need at least 2", ""},
		{"prefix not configured", "mailstore", []entry{{"x.env", "X-Prefix: /var/spool/x\ns@x.example\nr@h.example\n"}, {"x.msg", "S: x\n\nb\n"}}, "", "has no '@'", ""},
		{"msg is a symlink", "mailstore", []entry{{"x.env", "s@x.example\nr@h.example\n"}}, "x.msg", ".msg is not a regular file", "not a regular file"},
		{"env is a symlink", "mailstore", nil, "x.env", "", "not a regular file"},
		{"mixed line ends", "mailstore", []entry{{"x.env", "s@x.example\nr@h.example\n"}, {"x.msg", "S: x\r\n\nb\n"}}, "", "mixed LF and CRLF", ""},
		{"bare CR at the end", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: r@h.example\n\nb\r"}}, "", "bare CR", ""},
		{"bare CR at the end on a buffer boundary", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: r@h.example\n\n" + strings.Repeat("b", 64<<10-1) + "\r"}}, "", "bare CR", ""},
		{"no Envelope-to", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nReceived: by x\n\nb\n"}}, "", "envelope is unknown", ""},
		{"no envelope at all", "maildir", []entry{{"new/x", "Received: by x\nDelivered-To: r@h.example\n\nb\n"}}, "", "envelope is unknown", ""},
		{"Return-path with white space", "maildir", []entry{{"new/x", "Return-path: <s s@x.example>\nEnvelope-to: r@h.example\n\nb\n"}}, "", "white space", ""},
		{"Return-path without brackets", "maildir", []entry{{"new/x", "Return-path: s@x.example\nEnvelope-to: r@h.example\n\nb\n"}}, "", "is not <address>", ""},
		{"Envelope-to with NUL", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: r\x00@h.example\n\nb\n"}}, "", "control character 0x00", ""},
		{"Envelope-to with an empty address", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: r@h.example,,\n\nb\n"}}, "", "empty address", ""},
		{"Envelope-to unbalanced quote", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: \"r@h.example\n\nb\n"}}, "", "unbalanced quote", ""},
		{"Envelope-to fold without comma", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: r@h.example\n t@h.example\n\nb\n"}}, "", "white space", ""},
		{"Envelope-to space inside an address", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: r@h.example, t @h.example\n\nb\n"}}, "", "white space", ""},
		{"Envelope-to cut short", "maildir", []entry{{"new/x", "Return-path: <s@x.example>\nEnvelope-to: r@h.example,\n t@h.ex"}}, "", "cut short", ""},
		{"maildir symlink", "maildir", nil, "new/x", "", "not a regular file"},
		{"maildir file in tmp", "maildir", []entry{{"tmp/x", "garbage"}}, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, "h.example")
			var goodName, goodContent string
			if c.format == "mailstore" {
				if err := os.Mkdir(p, 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(p, "ok.msg"), "Subject: ok\n\nfine\n")
				goodName, goodContent = "ok.env", "s@x.example\nok@h.example\n"
			} else {
				mkMaildir(t, p)
				goodName, goodContent = "new/ok", eximMaildirMsg("s@x.example", []string{"ok@h.example"}, "Subject: ok\n\nfine\n")
			}
			writeFile(t, filepath.Join(p, goodName), goodContent)
			for _, e := range c.entries {
				writeFile(t, filepath.Join(p, e.name), e.content)
			}
			outside := filepath.Join(root, "outside")
			const secret = "s@x.example\nstolen@h.example\n"
			writeFile(t, outside, secret)
			if c.symlink != "" {
				if err := os.Symlink(outside, filepath.Join(p, c.symlink)); err != nil {
					t.Fatal(err)
				}
			}
			var ev events
			gs := drainAll(t, openWith(t, Options{Path: p, Format: "auto"}, &ev), all(Sent))
			if len(gs) != 1 || gs[0].to != "ok@h.example" || gs[0].body != "Subject: ok\n\nfine\n" {
				t.Fatalf("sent %+v, want the good message only", gs)
			}
			if b, err := os.ReadFile(outside); err != nil || string(b) != secret {
				t.Fatalf("file outside the spool touched: %q %v", b, err)
			}
			var quarantined, notices []string
			for _, e := range ev.list {
				switch e.Kind {
				case "quarantine":
					quarantined = append(quarantined, e.Reason)
				case "notice":
					notices = append(notices, e.Reason)
				}
			}
			qd := quarantineDir(root, "h.example")
			if c.reason == "" {
				if len(quarantined) != 0 {
					t.Fatalf("quarantined: %q", quarantined)
				}
			} else {
				if len(quarantined) != 1 || !strings.Contains(quarantined[0], c.reason) {
					t.Fatalf("quarantined %q, want one naming %q", quarantined, c.reason)
				}
				whys := glob(t, filepath.Join(qd, "*.why"))
				if len(whys) != 1 {
					t.Fatalf("quarantine holds %v", names(t, qd))
				}
				if b, err := os.ReadFile(whys[0]); err != nil || !strings.Contains(string(b), c.reason) {
					t.Fatalf("%s: %q %v", whys[0], b, err)
				}
				// Every file of the damaged entry is in quarantine, as it was.
				for _, e := range c.entries {
					if _, err := os.Lstat(filepath.Join(p, e.name)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s still in the spool", e.name)
					}
					ext := filepath.Ext(e.name)
					if c.format == "maildir" {
						ext = ".eml"
					}
					q := glob(t, filepath.Join(qd, "*"+ext))
					if len(q) != 1 {
						t.Fatalf("quarantine holds %v, want one %s", names(t, qd), ext)
					}
					if b, err := os.ReadFile(q[0]); err != nil || string(b) != e.content {
						t.Errorf("%s in quarantine: %q, want %q", q[0], b, e.content)
					}
				}
			}
			if c.notice == "" && len(notices) != 0 || c.notice != "" && (len(notices) != 1 || !strings.Contains(notices[0], c.notice)) {
				t.Fatalf("notices %q, want one naming %q", notices, c.notice)
			}
		})
	}
}

// TestFormatDryRun: a dry run over damaged mailstore and maildir spools
// reports what it would quarantine and changes nothing.
func TestFormatDryRun(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	mkMaildir(t, p,
		[2]string{"new/a", eximMaildirMsg("s@x.example", []string{"r@h.example"}, "S: a\n\nb\n")},
		[2]string{"new/bad", "Received: x\n\nb\n"},
		[2]string{"tmp/.a.tmp-123", "ours, from a killed rewrite"},
	)
	before := names(t, filepath.Join(p, "new"))
	var ev events
	s := openWith(t, Options{Path: p, DryRun: true}, &ev)
	gs := drainAll(t, s, all(Sent))
	if len(gs) != 1 {
		t.Fatalf("%+v", gs)
	}
	if !slices.Contains(ev.kinds(), "quarantine") || !strings.HasPrefix(ev.list[len(ev.list)-1].Reason, "would quarantine") {
		t.Fatalf("events %+v", ev.list)
	}
	if got := names(t, filepath.Join(p, "new")); !reflect.DeepEqual(got, before) {
		t.Fatalf("new/ %v, was %v", got, before)
	}
	if got := names(t, filepath.Join(p, "tmp")); len(got) != 1 {
		t.Fatalf("tmp/ %v", got)
	}
	if _, err := os.Stat(quarantineDir(root, "h.example")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("quarantine folder created by a dry run")
	}
	// A real run removes our temporary file from tmp/.
	drainAll(t, openWith(t, Options{Path: p}, nil), all(Sent))
	if got := names(t, filepath.Join(p, "tmp")); len(got) != 0 {
		t.Fatalf("tmp/ %v", got)
	}
}

// TestFailedCopyPlainData: the failed copy of a maildir or mailstore
// message is BSMTP, whose data must end in a line end: one missing from
// the message is added (as on the wire), and CRLF data stays CRLF.
func TestFailedCopyPlainData(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"no final line end", "Subject: x\n\n.last line", "Subject: x\n\n..last line\n"},
		{"CRLF", "Subject: x\r\n\r\n.dot\r\n", "Subject: x\r\n\r\n..dot\r\n"},
		{"CRLF without final line end", "Subject: x\r\n\r\nend", "Subject: x\r\n\r\nend\r\n"},
		// The reader's buffer is 64 KiB: a last line that fills it exactly
		// meets the end of the file in a read of its own.
		{"no final line end on a buffer boundary", "Subject: x\n\n" + strings.Repeat("a", 64<<10), "Subject: x\n\n" + strings.Repeat("a", 64<<10) + "\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, "h.example")
			mkMaildir(t, p, [2]string{"new/1", "Return-path: <s@x.example>\nEnvelope-to: r@h.example\n" + c.body})
			gs := drainAll(t, openWith(t, Options{Path: p}, nil), all(Failed))
			if len(gs) != 1 || gs[0].body != c.body {
				t.Fatalf("yielded %+v", gs)
			}
			f := glob(t, filepath.Join(failedDir(root, "h.example"), "*.bsmtp"))
			if len(f) != 1 {
				t.Fatalf("failed copies %v", f)
			}
			b, err := os.ReadFile(f[0])
			eol := "\n"
			if strings.Contains(c.body, "\r\n") {
				eol = "\r\n"
			}
			want := "MAIL FROM:<s@x.example>" + eol + "RCPT TO:<r@h.example>" + eol + "DATA" + eol + c.want + "." + eol
			if err != nil || string(b) != want {
				t.Fatalf("failed copy %q, want %q (%v)", b, want, err)
			}
			if got := names(t, filepath.Join(p, "new")); len(got) != 0 {
				t.Fatalf("new/ holds %v", got)
			}
		})
	}
}

// TestQuarantineLongName: a damaged maildir message whose name is as long
// as a file name may be still goes to quarantine, under a shortened name.
func TestQuarantineLongName(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "h.example")
	long := "new/" + strings.Repeat("n", 250)
	mkMaildir(t, p, [2]string{long, "Received: by x\n\nno envelope\n"})
	var ev events
	drainAll(t, openWith(t, Options{Path: p}, &ev), all(Sent))
	q := names(t, quarantineDir(root, "h.example"))
	if len(q) != 2 || !slices.Contains(ev.kinds(), "quarantine") {
		t.Fatalf("quarantine holds %v; events %+v", q, ev.list)
	}
	b, err := os.ReadFile(filepath.Join(quarantineDir(root, "h.example"), strings.TrimSuffix(q[0], ".eml")+".eml"))
	if err != nil || string(b) != "Received: by x\n\nno envelope\n" {
		t.Fatalf("quarantined copy %q %v", b, err)
	}
}

// BenchmarkDrainLayouts: the spool's own cost per message (list, open,
// parse, read the data, settle as sent, which removes it) for each
// directory layout, 1,000 small messages of two recipients per op.
func BenchmarkDrainLayouts(b *testing.B) {
	const n = 1000
	body := "Received: from root by mx.isp.example with local (Exim 4.96)\n\tid 1xXKkg-0001DH-11\n" +
		"From: Alice <alice@sender.example>\nSubject: bench\n\n" + strings.Repeat("a line of the body of the message\n", 10)
	layouts := []struct {
		name  string
		write func(p string, i int) error
	}{
		{"bsmtp-dir", func(p string, i int) error {
			return os.WriteFile(filepath.Join(p, fmt.Sprintf("q%06d", i)),
				[]byte(tmsg{"s@x.example", []string{"a@h.example", "b@h.example"}, body}.bsmtp()), 0o600)
		}},
		{"mailstore", func(p string, i int) error {
			if err := os.WriteFile(filepath.Join(p, fmt.Sprintf("m%06d.msg", i)), []byte(body), 0o600); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(p, fmt.Sprintf("m%06d.env", i)), []byte("s@x.example\na@h.example\nb@h.example\n"), 0o600)
		}},
		{"maildir", func(p string, i int) error {
			return os.WriteFile(filepath.Join(p, "new", fmt.Sprintf("%d.M1P1.mx", i)),
				[]byte(eximMaildirMsg("s@x.example", []string{"a@h.example", "b@h.example"}, body)), 0o600)
		}},
	}
	for _, l := range layouts {
		b.Run(l.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				p := filepath.Join(b.TempDir(), "h.example")
				if err := os.MkdirAll(filepath.Join(p, "new"), 0o700); err != nil {
					b.Fatal(err)
				}
				if l.name != "maildir" {
					if err := os.Remove(filepath.Join(p, "new")); err != nil {
						b.Fatal(err)
					}
				}
				for i := range n {
					if err := l.write(p, i); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				s, err := Open(Options{Path: p, Host: "h.example", Format: "auto"})
				if err != nil {
					b.Fatal(err)
				}
				got := 0
				for {
					m, err := s.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					rc, err := m.Open()
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, rc); err != nil {
						b.Fatal(err)
					}
					if err := rc.Close(); err != nil {
						b.Fatal(err)
					}
					if err := s.Settle(m, []Outcome{Sent, Sent}, ""); err != nil {
						b.Fatal(err)
					}
					got++
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				if got != n {
					b.Fatalf("drained %d of %d", got, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/msg")
		})
	}
}

// TestFormatsStreamLargeMessage: a 32 MiB message is read, sent, set
// aside for a refused recipient and rewritten for a deferred one without
// ever being held in memory: what the spool allocates meanwhile stays far
// below the message's size.
func TestFormatsStreamLargeMessage(t *testing.T) {
	const size = 32 << 20
	line := strings.Repeat("x", 99) + "\n"
	writeBody := func(t *testing.T, p, head string) {
		t.Helper()
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(f)
		_, _ = w.WriteString(head + "Subject: big\n\n")
		for i := 0; i < size/len(line); i++ {
			_, _ = w.WriteString(line)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, layout := range []string{"mailstore", "maildir"} {
		t.Run(layout, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, "h.example")
			to := []string{"a@h.example", "b@h.example", "c@h.example"}
			if layout == "maildir" {
				mkMaildir(t, p)
				writeBody(t, filepath.Join(p, "new", "1"), "Return-path: <s@x.example>\nEnvelope-to: "+strings.Join(to, ",\n ")+"\n")
			} else {
				if err := os.Mkdir(p, 0o700); err != nil {
					t.Fatal(err)
				}
				writeBody(t, filepath.Join(p, "1.msg"), "")
				writeFile(t, filepath.Join(p, "1.env"), "s@x.example\n"+strings.Join(to, "\n")+"\n")
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			s := openWith(t, Options{Path: p}, nil)
			m, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := m.Open()
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			if err != nil || n < size-int64(len(line)) {
				t.Fatalf("read %d octets: %v", n, err)
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Settle(m, []Outcome{Sent, Keep, Failed}, "550 no"); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Errorf("allocated %d octets for a %d-octet message", alloc, size)
			}
			f := glob(t, filepath.Join(failedDir(root, "h.example"), "*.bsmtp"))
			if fi, err := os.Stat(f[0]); len(f) != 1 || err != nil || fi.Size() < size-int64(len(line)) {
				t.Errorf("failed copy %v: %v", f, err)
			}
			gs := drainAll(t, openWith(t, Options{Path: p}, nil), all(Keep))
			if len(gs) != 1 || gs[0].to != "b@h.example" || len(gs[0].body) < size-len(line) {
				t.Errorf("after the rewrite: %d messages to %v", len(gs), gs)
			}
		})
	}
}

// TestMailstoreAffixLines: Exim writes an empty line for a prefix or
// suffix that expands to nothing, and nothing at all for one whose
// expansion is forced to fail. With one prefix line configured, an empty
// first line is then either that prefix before a sender or the null
// sender of a .env without prefix: reading it either way could make a
// recipient the sender, and drop it. Such a .env is quarantined; an empty
// suffix line is not ambiguous (a recipient is never empty). A prefix or
// suffix line the settings do not count is no address, even with an '@'.
func TestMailstoreAffixLines(t *testing.T) {
	for _, c := range []struct {
		name     string
		pre, suf int
		env      string
		reason   string // "" : read as from/to
		from, to string
	}{
		{"empty prefix line", 1, 0, "\nr1@h.example\nr2@h.example\n", "prefix line 1 is empty", "", ""},
		{"empty prefix line, suffix", 1, 1, "\nr1@h.example\nr2@h.example\nX-Suffix: end\n", "prefix line 1 is empty", "", ""},
		{"empty suffix line", 0, 1, "s@x.example\nr1@h.example\n\n", "", "s@x.example", "r1@h.example"},
		{"prefix and null sender", 1, 0, "X-Prefix: p\n\nr1@h.example\n", "", "", "r1@h.example"},
		// A prefix or suffix line the settings do not count, read as an
		// address because it holds an '@'.
		{"prefix not configured", 0, 0, "From: mailstore@isp.example\ns@x.example\nr1@h.example\n", "white space", "", ""},
		{"suffix not configured", 0, 0, "s@x.example\nr1@h.example\nX-Suffix: by mailstore@isp.example\n", "white space", "", ""},
		{"quoted sender", 0, 0, "\"s s\"@x.example\nr1@h.example\n", "", "\"s s\"@x.example", "r1@h.example"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, "h.example")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(p, "x.env"), c.env)
			writeFile(t, filepath.Join(p, "x.msg"), "Subject: x\n\nb\n")
			var ev events
			s := openWith(t, Options{Path: p, MailstorePrefixLines: c.pre, MailstoreSuffixLines: c.suf}, &ev)
			gs := drainAll(t, s, all(Sent))
			var q []string
			for _, e := range ev.list {
				if e.Kind == "quarantine" {
					q = append(q, e.Reason)
				}
			}
			if c.reason == "" {
				if len(q) != 0 || len(gs) != 1 || gs[0].from != c.from || gs[0].to != c.to {
					t.Fatalf("sent %+v, quarantined %q; want from <%s> to %s", gs, q, c.from, c.to)
				}
				return
			}
			if len(gs) != 0 {
				t.Fatalf("sent %+v", gs)
			}
			if len(q) != 1 || !strings.Contains(q[0], c.reason) {
				t.Fatalf("quarantined %q, want one naming %q", q, c.reason)
			}
			if got := names(t, quarantineDir(root, "h.example")); len(got) != 3 {
				t.Fatalf("quarantine holds %v", got)
			}
		})
	}
}
