//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// logPrefix is what comes before the fields of a log line: a file's time
// stamp, the program and pid, and the level word of a warning or error.
var logPrefix = regexp.MustCompile(`^(?:\S+ )?etrnflush\[\d+\]: (?:warning: |error: )?`)

var logKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// parseFields splits "k=v k=v ..." as the LOGGING section defines it: a
// value is a double-quoted Go string or a token without spaces or quotes;
// one space between fields. A bare value may hold \xHH escapes.
func parseFields(s string) ([][2]string, error) {
	var out [][2]string
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || !logKey.MatchString(s[:eq]) {
			return nil, fmt.Errorf("no key=value at %q", s)
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%s: bad quoted value at %q", key, s)
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
			if strings.ContainsRune(val, '"') {
				return nil, fmt.Errorf("%s: unquoted value %q holds a quote", key, val)
			}
		}
		out = append(out, [2]string{key, val})
		if s == "" {
			break
		}
		if s[0] != ' ' || len(s) == 1 || s[1] == ' ' {
			return nil, fmt.Errorf("after %s: want one space and a field, have %q", key, s)
		}
		s = s[1:]
	}
	return out, nil
}

// documentedEvents are the event names the LOGGING section of
// etrnflush(8) shows.
func documentedEvents(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("man/etrnflush.8")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), `\-`, "-")
	a, z := strings.Index(s, "\n.SH LOGGING\n"), strings.Index(s, "\n.SH ENVIRONMENT\n")
	if a < 0 || z < a {
		t.Fatal("no LOGGING section")
	}
	ev := map[string]bool{}
	for _, m := range regexp.MustCompile(`event=([a-z][a-z0-9-]*)`).FindAllStringSubmatch(s[a:z], -1) {
		ev[m[1]] = true
	}
	return ev
}

// TestLogLinesSchema: every line of a few representative runs (a flush
// with -vv that sends, defers, refuses and quarantines from a claimed
// BSMTP file; a flush of what is left to a dead port; the dry run's
// listing; an etrnflush serve session) is key=value with event= first,
// each event is documented in LOGGING, and the summary's counts add up.
func TestLogLinesSchema(t *testing.T) {
	dir := t.TempDir()
	host := "h.example"
	spoolPath := filepath.Join(dir, host)
	var b strings.Builder
	b.WriteString(bsmtpEntry("a@x.example", "ok@h.example", "Message-ID: <m1@x.example>\n"))
	b.WriteString("MAIL FROM:<b@x.example>\nRCPT TO:<one@h.example>\nRCPT TO:<two-refuse@h.example>\nRCPT TO:<three-defer1@h.example>\nDATA\nSubject: p\n\nbody\n.\n")
	b.WriteString(bsmtpEntry(`"c d"@x.example`, "four-defer1@h.example", ""))
	b.WriteString("MAIL FROM:<e@x.example>\nRCPT TO:<f@h.example>\nDATA\nSubject: cut\n") // torn: quarantined
	if err := os.WriteFile(spoolPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	rx := newPolicyRecorder(t, markerPolicy)
	cfg := writeConfig(t, dir, "")
	var lines []string
	add := func(text string, prefixed bool) {
		for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			if l == "" {
				continue
			}
			if prefixed {
				p := logPrefix.FindString(l)
				if p == "" {
					t.Errorf("log line without the prefix: %q", l)
					continue
				}
				l = l[len(p):]
			}
			lines = append(lines, l)
		}
	}
	_, stderr, code := runEtrnflush(t, "-c", cfg, "flush", "-vv", "--to", rx.addr, "--tls", "none", "--helo", "tx.example", host)
	if code != exTempFail {
		t.Fatalf("flush: exit %d, want 75\n%s", code, stderr)
	}
	add(stderr, true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runEtrnflush(t, "-c", cfg, "flush", "-v", "--to", dead, "--tls", "none", "--helo", "tx.example", host)
	if code != exTempFail {
		t.Fatalf("flush to a dead port: exit %d, want 75\n%s", code, stderr)
	}
	add(stderr, true)
	if err := os.WriteFile(spoolPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runEtrnflush(t, "-c", cfg, "--dry-run", host)
	if code != exDataErr {
		t.Fatalf("dry run: exit %d, want 65\n%s%s", code, out, stderr)
	}
	add(out, false)
	add(stderr, true)

	logFile := filepath.Join(dir, "serve.log")
	sconf := writeConfig(t, dir, "log = \""+logFile+"\"\n[serve]\netrn_clients = [\"127.0.0.1\"]\n[host.\"quiet.example\"]\nroute = \"192.0.2.1\"\n")
	// writeConfig's own log = "stderr" comes first: the later one is an
	// error, so the file is written without it.
	if err := os.WriteFile(sconf, []byte("helo = \"provider.example\"\nbounce = false\nspool_dir = \""+dir+"\"\nlog = \""+logFile+"\"\n[serve]\netrn_clients = [\"127.0.0.1\"]\n[host.\"quiet.example\"]\nroute = \"192.0.2.1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, sconf)
	p.cmd(t, "", 220, "provider.example")
	p.cmd(t, "EHLO customer.example", 250, "ETRN")
	p.cmd(t, "ETRN nowhere.example", 459, "unknown node")
	p.cmd(t, "ETRN quiet.example", 251, "no messages")
	p.cmd(t, "QUIT", 221, "closing")
	if code := p.wait(t); code != 0 {
		t.Errorf("serve exited %d: %s", code, p.stderr.String())
	}
	sl, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	add(string(sl), true)

	documented := documentedEvents(t)
	seen := map[string]int{}
	for _, l := range lines {
		f, err := parseFields(l)
		if err != nil {
			t.Errorf("not key=value: %v\n  %q", err, l)
			continue
		}
		if len(f) == 0 || f[0][0] != "event" {
			t.Errorf("event= is not first: %q", l)
			continue
		}
		ev := f[0][1]
		seen[ev]++
		if !documented[ev] {
			t.Errorf("event=%s is not documented in LOGGING: %q", ev, l)
		}
		if ev == "summary" {
			checkSummary(t, l, f)
		}
	}
	for _, ev := range []string{"message", "summary", "claim", "quarantine", "smtp", "kept", "connect-failed",
		"would-send", "would-quarantine", "connect", "disconnect", "etrn"} {
		if seen[ev] == 0 {
			t.Errorf("no event=%s line in these runs (seen %v)", ev, seen)
		}
	}
}

// checkSummary: the message buckets add up to messages=, the recipient
// counts to rcpts=.
func checkSummary(t *testing.T, line string, f [][2]string) {
	t.Helper()
	v := map[string]int{}
	for _, kv := range f {
		v[kv[0]], _ = strconv.Atoi(kv[1])
	}
	if _, dry := v["dry_run"]; dry || strings.Contains(line, "dry_run=") {
		return
	}
	if m := v["sent"] + v["deferred"] + v["failed"] + v["quarantined"] + v["uncertain"] + v["partial"]; m != v["messages"] {
		t.Errorf("summary buckets add up to %d, messages=%d: %q", m, v["messages"], line)
	}
	if r := v["rcpt_sent"] + v["rcpt_failed"] + v["rcpt_deferred"] + v["rcpt_uncertain"]; r != v["rcpts"] {
		t.Errorf("rcpt_ counts add up to %d, rcpts=%d: %q", r, v["rcpts"], line)
	}
}
