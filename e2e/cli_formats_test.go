//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIFormatLayouts: on the built binary, a spool directory that mixes
// layouts or holds something unknown stops with exit status 78 and the
// reason, before anything is touched; a format that does not match what
// is on disk too. A damaged entry is quarantined and the rest delivered,
// exit 65.
func TestCLIFormatLayouts(t *testing.T) {
	mk := func(t *testing.T, spool string, entries ...string) {
		t.Helper()
		for _, e := range entries {
			p := filepath.Join(spool, e)
			if strings.HasSuffix(e, "/") {
				if err := os.MkdirAll(p, 0o700); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("alice@sender.example\nbob@layout.example\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name    string
		entries []string
		file    bool // the spool is a file
		args    []string
		code    int
		stderr  string
	}{
		{"maildir and mailstore", []string{"new/", "cur/", "a.env", "a.msg"}, false, nil, exConfig, "mixes spool layouts: mailstore (a.env), maildir (cur/)"},
		{"bsmtp and maildir", []string{"q1xXKke-770089", "tmp/"}, false, nil, exConfig, "mixes spool layouts: bsmtp (q1xXKke-770089), maildir (tmp/)"},
		{"unknown entry", []string{"new/", "README"}, false, nil, exConfig, `unexpected entry "README"`},
		{"maildir format on a file", nil, true, []string{"--format", "maildir"}, exConfig, "is a file, but format is maildir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			spool := filepath.Join(dir, "layout.example")
			if tc.file {
				if err := os.WriteFile(spool, []byte("MAIL FROM:<a@b.example>\nRCPT TO:<c@layout.example>\nDATA\nx\n.\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				mk(t, spool, tc.entries...)
			}
			before := treeSnapshot(t, dir)
			args := append([]string{"--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "test.example"}, tc.args...)
			_, stderr, code := runEtrnflush(t, append(args, "layout.example")...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr does not say %q:\n%s", tc.stderr, stderr)
			}
			after := treeSnapshot(t, dir)
			delete(after, ".etrnflush-layout.example.lock")
			delete(after, ".etrnflush-layout.example.last") // the run's record, for list
			if d := diffSnapshots(before, after); d != "" {
				t.Errorf("the spool directory changed:\n%s", d)
			}
		})
	}

	// A damaged maildir message beside a good one: the good one goes out,
	// the damaged one to quarantine with its reason, exit 65.
	dir := t.TempDir()
	spool := filepath.Join(dir, "layout.example")
	mk(t, spool, "new/", "cur/", "tmp/")
	for name, content := range map[string]string{
		"new/1.M1P1.mx": "Return-path: <alice@sender.example>\nEnvelope-to: bob@layout.example\n\nhello\n",
		"new/2.M2P2.mx": "Return-path: <alice@sender.example>\nReceived: by x\n\nno Envelope-to\n",
	} {
		if err := os.WriteFile(filepath.Join(spool, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder(t)
	_, stderr, code := runEtrnflush(t, "--spool", spool, "--to", rec.addr, "--tls", "none", "--helo", "test.example", "layout.example")
	if code != exDataErr {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exDataErr, stderr)
	}
	if got := rec.messages(); len(got) != 1 || string(got[0].Data) != "\nhello\n" || got[0].To[0] != "bob@layout.example" {
		t.Errorf("received %v, want the good message without its envelope fields", got)
	}
	for _, want := range []string{`layout="maildir (detected)"`, "status=quarantined", "no Return-path: and Envelope-to:"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("log does not say %q:\n%s", want, stderr)
		}
	}
	q := filepath.Join(dir, ".etrnflush-layout.example.quarantine")
	if ents, err := os.ReadDir(q); err != nil || len(ents) != 2 {
		t.Errorf("quarantine holds %v (%v), want the message and its reason", ents, err)
	}
}
