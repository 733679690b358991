//go:build e2e

package e2e

// Real-Exim tests of the mailstore and maildir spools: the writer Exim
// delivers into them with its own appendfile transports, etrnflush
// flushes them into the sink Exim. The oracle parsers here share no code
// with package spool.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// formatCase is one of Exim's non-BSMTP spool formats in writer.conf.
type formatCase struct {
	name     string
	host     string
	maildir  bool
	pre, suf int // mailstore_prefix/suffix lines the transport writes
}

var eximFormats = []formatCase{
	{name: "mailstore", host: "mailstore.rt.example"},
	{name: "mailstore-affix", host: "mailstore-affix.rt.example", pre: 1, suf: 1},
	{name: "maildir", host: "maildir.rt.example", maildir: true},
}

// spoolPath is where the writer Exim puts this format's mail for host.
func (fc formatCase) spoolPath(w *writer, host string) string {
	if fc.maildir {
		return filepath.Join(w.dir, "outmd", host)
	}
	return filepath.Join(w.dir, "outms", host)
}

// config writes an etrnflush.toml telling the affix line counts.
func (fc formatCase) config(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "etrnflush.toml")
	// bounce = false: the test reads the failed folder, and must never
	// run the machine's sendmail.
	conf := fmt.Sprintf("bounce = false\nmailstore_prefix_lines = %d\nmailstore_suffix_lines = %d\n", fc.pre, fc.suf)
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// messages reads what Exim stored, with the test's own parsers.
func (fc formatCase) messages(t *testing.T, path string) []envMsg {
	t.Helper()
	if fc.maildir {
		return maildirMessages(t, path)
	}
	return mailstoreMessages(t, path, fc.pre, fc.suf)
}

// checkNoSpoolHeaders: the sink's copy carries the sink's own Return-path:
// and Envelope-to: (its maildir transport adds them) and nothing else of
// the kind: none of the spool's envelope fields was relayed. Only a sink
// that keeps such fields (startKeepingSink) can show this, and
// parseSinkMessage would pass over a relayed one silently.
func checkNoSpoolHeaders(t *testing.T, s *sink) {
	t.Helper()
	for _, f := range maildirFiles(t, filepath.Join(s.dir, "maildir")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		hdr := b
		if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
			hdr = b[:i+1]
		}
		count := map[string]int{}
		for len(hdr) > 0 {
			end := fieldEnd(hdr)
			if name, _, ok := bytes.Cut(hdr[:end], []byte(":")); ok {
				count[strings.ToLower(string(name))]++
			}
			hdr = hdr[end:]
		}
		if count["return-path"] != 1 || count["envelope-to"] != 1 || count["delivery-date"] != 0 {
			t.Errorf("%s: Return-path x%d, Envelope-to x%d, Delivery-date x%d: want 1, 1 and 0 (the sink's own)",
				f, count["return-path"], count["envelope-to"], count["delivery-date"])
		}
	}
}

// assertFormatSpoolEmpty: no message file left (a maildir keeps its
// sub-directories), and none of etrnflush's private files.
func assertFormatSpoolEmpty(t *testing.T, path string) {
	t.Helper()
	err := filepath.WalkDir(path, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			t.Errorf("left in the spool: %s", p)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for kind, files := range privateFiles(t, filepath.Dir(path), filepath.Base(path)) {
		t.Errorf("left behind (%s): %v", kind, files)
	}
}

// TestEximFormatsRoundTrip: the varied corpus, written by a real Exim as
// a mailstore (with and without prefix and suffix lines) and as a maildir,
// flushed by etrnflush into a real Exim: every message arrives once,
// byte for byte as stored apart from the sink's own trace fields, without
// the spool's envelope fields, with the right ESMTP parameters; the log
// says which layout was detected, and nothing is left.
func TestEximFormatsRoundTrip(t *testing.T) {
	for _, fc := range eximFormats {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			s := r.startKeepingSink(t)
			w := r.newWriter(t)
			path := fc.spoolPath(w, fc.host)
			corpus := roundTripCorpus(t, fc.host)
			for _, in := range corpus {
				if err := w.inject(in.from, in.to, in.data); err != nil {
					t.Fatal(err)
				}
			}
			want := fc.messages(t, path)
			if len(want) != len(corpus) {
				t.Fatalf("the writer Exim stored %d messages, want %d", len(want), len(corpus))
			}
			multi := false
			for _, m := range want {
				multi = multi || len(m.To) > 1
			}
			if !multi {
				t.Fatal("no stored message has several recipients: the corpus does not test that")
			}
			_, stderr, code := runEtrnflush(t, "-c", fc.config(t), "--spool", path, "--to", s.addr(), "--tls", "none",
				"--helo", "test.example", fc.host)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			s.waitReplayed(t, want)
			checkNoSpoolHeaders(t, s)
			layout := strings.SplitN(fc.name, "-", 2)[0]
			if !strings.Contains(stderr, `layout="`+layout+` (detected)"`) {
				t.Errorf("the log does not say the layout was detected as %s:\n%s", layout, stderr)
			}
			if n := strings.Count(stderr, "status=sent"); n != len(want) {
				t.Errorf("%d log lines with status=sent, want %d:\n%s", n, len(want), stderr)
			}
			assertFormatSpoolEmpty(t, path)
		})
	}
}

// TestEximFormatsPartial: against the sink's scripted answers, a message
// for a recipient that is accepted, one refused (550) and one deferred
// (451): the accepted one arrives, the refused one goes to the failed
// folder with the 550, and the spool keeps the message for the deferred
// one only (the .env or the Envelope-to: rewritten), the data untouched.
// A rerun changes nothing but offers the deferred one again.
func TestEximFormatsPartial(t *testing.T) {
	for _, fc := range eximFormats {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			s := r.startSink(t)
			w := r.newWriter(t)
			host := fc.host
			path := fc.spoolPath(w, host)
			data := []byte("From: <alice@sender.example>\nSubject: partial\nMessage-ID: <partial@test.example>\n\nbody\n.\n..two\n")
			to := []string{"ok1@" + host, "reject550a@" + host, "defer451a@" + host}
			if err := w.inject("alice@sender.example", to, data); err != nil {
				t.Fatal(err)
			}
			if err := w.inject("alice@sender.example", []string{"ok2@" + host}, []byte("Subject: fine\nMessage-ID: <fine@test.example>\n\nfine\n")); err != nil {
				t.Fatal(err)
			}
			stored := fc.messages(t, path)
			orig := map[string]envMsg{}
			for _, m := range stored {
				orig[m.id()] = m
			}
			p := orig["<partial@test.example>"]
			args := []string{"-c", fc.config(t), "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example", host}
			for run := 1; run <= 2; run++ {
				_, stderr, code := runEtrnflush(t, args...)
				if code != 75 {
					t.Fatalf("run %d: exit %d, want 75; stderr:\n%s", run, code, stderr)
				}
				sent := byID(t, s.delivered(t), orig, true)
				if want := map[string][]string{"<partial@test.example>": {"ok1@" + host}, "<fine@test.example>": {"ok2@" + host}}; !mapsEqual(sent, want) {
					t.Errorf("run %d: sink received %v, want %v", run, sent, want)
				}
				left := fc.messages(t, path)
				if len(left) != 1 || left[0].From != p.From || !slices.Equal(left[0].To, []string{"defer451a@" + host}) || !bytes.Equal(left[0].Data, p.Data) {
					t.Fatalf("run %d: spool holds %v, want %s for defer451a only", run, left, p)
				}
				priv := privateFiles(t, filepath.Dir(path), host)
				var copies []envMsg
				for _, f := range priv["failed"] {
					if strings.HasSuffix(f, ".bsmtp") {
						copies = append(copies, parseBSMTPFile(t, f)...)
						why, err := os.ReadFile(strings.TrimSuffix(f, ".bsmtp") + ".why")
						if err != nil || !bytes.Contains(why, []byte("550")) {
							t.Errorf("%s: reason %q %v, want the 550", f, why, err)
						}
					}
				}
				if len(copies) != 1 || !slices.Equal(copies[0].To, []string{"reject550a@" + host}) || !bytes.Equal(copies[0].Data, p.Data) {
					t.Errorf("run %d: failed folder holds %v, want the message for reject550a only", run, copies)
				}
				if len(priv["quarantine"]) > 0 || len(priv["tmp"]) > 0 {
					t.Errorf("run %d: quarantined or temporary files: %v", run, priv)
				}
			}
			if fc.maildir {
				if ents, err := os.ReadDir(filepath.Join(path, "tmp")); err != nil || len(ents) != 0 {
					t.Errorf("maildir tmp/ holds %v (%v)", ents, err)
				}
			}
		})
	}
}
