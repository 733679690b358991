package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// crashFormat is a mailstore or maildir layout for runCrashCase: how to
// write the spool, and how to read its state back.
type crashFormat struct {
	fc    formatCase
	write func(t *testing.T, path string, msgs []envMsg)
}

// partlyDone counts the messages of tc's spool that a run left with fewer
// recipients than were spooled.
func (tc crashCase) partlyDone(t *testing.T, path string, byID map[string]envMsg) int {
	t.Helper()
	if tc.format == nil {
		return partlyDone(t, path, tc.dir, byID)
	}
	n := 0
	for _, m := range tc.format.fc.messages(t, path) {
		if w, ok := byID[m.id()]; ok && len(m.To) < len(w.To) {
			n++
		}
	}
	return n
}

// tempDirs are where else than beside the spool a rewrite of tc's layout
// puts its temporary files: a maildir's tmp/.
func (tc crashCase) tempDirs(path string) []string {
	if tc.format != nil && tc.format.fc.maildir {
		return []string{filepath.Join(path, "tmp")}
	}
	return nil
}

// assertNoMailLeft: nothing pending is left. In a mailstore a kill
// between the removal of a .env and of its .msg leaves an orphan .msg,
// reported by later runs and left alone by design (the .env is the pair's
// commit point): those are expected, and only those.
func (tc crashCase) assertNoMailLeft(t *testing.T, path string) {
	t.Helper()
	if tc.format == nil {
		assertNoMailLeft(t, path)
		return
	}
	if !tc.format.fc.maildir {
		orphans, err := filepath.Glob(filepath.Join(path, "*.msg"))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range orphans {
			base := strings.TrimSuffix(o, ".msg")
			for _, ext := range []string{".env", ".tmp"} {
				if _, err := os.Lstat(base + ext); err == nil {
					t.Errorf("%s%s left in the spool", base, ext)
				}
			}
			if err := os.Remove(o); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%d orphan .msg files left by kills between the removal of a .env and of its .msg", len(orphans))
	}
	assertFormatSpoolEmpty(t, path)
}

// writeCrashMailstore writes msgs as Exim's mailstore_format does, one
// .env/.msg pair each, oldest first by date.
func writeCrashMailstore(t *testing.T, dir string, msgs []envMsg) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	for i, m := range msgs {
		base := filepath.Join(dir, fmt.Sprintf("1xXKkf-%06d-0c-0001AD", i))
		env := m.From + "\n" + strings.Join(m.To, "\n") + "\n"
		mt := t0.Add(time.Duration(i) * time.Second)
		for _, f := range [][2]string{{".msg", string(m.Data)}, {".env", env}} {
			if err := os.WriteFile(base+f[0], []byte(f[1]), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(base+f[0], mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
	sameMessages(t, "crash mailstore", msgs, mailstoreMessages(t, dir, 0, 0))
}

// writeCrashMaildir writes msgs as Exim's maildir_format with
// return_path_add, envelope_to_add and delivery_date_add does, into new/.
func writeCrashMaildir(t *testing.T, dir string, msgs []envMsg) {
	t.Helper()
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	for i, m := range msgs {
		mt := t0.Add(time.Duration(i) * time.Second)
		p := filepath.Join(dir, "new", fmt.Sprintf("%d.M%dP4670.mx.isp.example", mt.Unix(), i))
		hdr := "Return-path: <" + m.From + ">\nEnvelope-to: " + strings.Join(m.To, ",\n ") +
			"\nDelivery-date: " + mt.Format(time.RFC1123Z) + "\n"
		if err := os.WriteFile(p, append([]byte(hdr), m.Data...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	sameMessages(t, "crash maildir", msgs, maildirMessages(t, dir))
}

// TestCrashSIGKILLFormats: TestCrashSIGKILLOutcomes for the mailstore and
// maildir layouts. Kills land right after the 250 to a partly deferred
// transaction (the .env or the Envelope-to: about to be rewritten) and
// right after a 5xx (the failed copy being written), among others; the
// recorder keeps what arrived octet for octet, so a maildir's envelope
// fields sent on would show as changed data.
func TestCrashSIGKILLFormats(t *testing.T) {
	mailstore := &crashFormat{fc: formatCase{name: "mailstore"}, write: writeCrashMailstore}
	maildir := &crashFormat{fc: formatCase{name: "maildir", maildir: true}, write: writeCrashMaildir}
	plans := func() []*killPoint {
		return []*killPoint{
			{kind: killAfterReply, n: 1, partial: true},
			{kind: killAfterRefusal, n: 1},
			{kind: killBeforeReply, n: 1, partial: true},
			{kind: killAfterReply, n: 2, partial: true, delay: 300 * time.Microsecond},
			{kind: killMidBody, n: 3, bytes: 500},
			{kind: killAfterRefusal, n: 2, delay: time.Millisecond},
			{kind: killAfterReply, n: 2, partial: true, delay: 2 * time.Millisecond},
			{kind: killAfterMail, n: 2},
			{kind: killBeforeReply, n: 3, partial: true},
			{kind: killAfterReply, n: 1, partial: true, delay: time.Millisecond},
			{kind: killAfterRefusal, n: 1, delay: 200 * time.Microsecond},
			{kind: killBeforeReply, n: 5},
		}
	}
	acceptAll := func() []*killPoint {
		return []*killPoint{
			{kind: killBeforeReply, n: 2},
			{kind: killAfterMail, n: 4},
			{kind: killMidBody, n: 3, bytes: 100},
			{kind: killAfterReply, n: 5},
			{kind: killAfterReply, n: 1, delay: time.Millisecond},
			{kind: killMidBody, n: 2, bytes: 0},
			{kind: killBeforeReply, n: 6},
			{kind: killAfterReply, n: 3, delay: 500 * time.Microsecond},
		}
	}
	cases := []crashCase{
		{name: "mailstore/partial", format: mailstore, n: 60, policy: markerPolicy, plans: plans(), timers: 3,
			minKills: 10, minPartial: 4, minRefusal: 2},
		{name: "maildir/partial", format: maildir, n: 60, policy: markerPolicy, plans: plans(), timers: 3,
			minKills: 10, minPartial: 4, minRefusal: 2},
		{name: "mailstore/accept-all", format: mailstore, n: 50, plans: acceptAll(), timers: 2, minKills: 7},
		{name: "maildir/accept-all", format: maildir, n: 50, plans: acceptAll(), timers: 2, minKills: 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runCrashCase(t, tc) })
	}
}
