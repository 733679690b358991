package main

// What a real receiving Exim punishes and limits (issue 10): its count of
// protocol and synchronisation errors, with the session dropped after
// smtp_max_synprot_errors (default 3); recipients_max and
// smtp_accept_max_per_connection; SIZE, SMTPUTF8 and 8BITMIME not offered.
// The sink's own log is the oracle for the first: every test that flushes
// into the sink asserts, through waitDelivered and delivered, that it holds
// no protocol error, synchronisation error or dropped session.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sinkLogBad matches the sink log lines that mean a client broke the
// protocol: Exim 4.96 writes "SMTP protocol error in ...", "SMTP
// synchronization error" and "SMTP call from ... dropped: too many syntax
// or protocol errors" (with +smtp_protocol_error +smtp_syntax_error).
var sinkLogBad = regexp.MustCompile(`(?i)protocol error|synchronization error|dropped:`)

// protocolErrors returns the sink's main log lines that record a protocol
// or synchronisation error or a dropped session. It fails the test if
// the sink's config does not log them, so that the oracle cannot go blind.
func (s *sink) protocolErrors(t *testing.T) []string {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join(s.r.dir, "sink.conf"))
	if err != nil {
		t.Fatal(err)
	}
	sel := regexp.MustCompile(`(?m)^log_selector\s*=(.*)$`).FindSubmatch(conf)
	if sel == nil || !strings.Contains(string(sel[1]), "+smtp_protocol_error") || !strings.Contains(string(sel[1]), "+smtp_syntax_error") {
		t.Fatal("sink.conf: log_selector must have +smtp_protocol_error +smtp_syntax_error, or protocol errors go unlogged")
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "log", "mainlog"))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, l := range strings.Split(string(b), "\n") {
		if sinkLogBad.MatchString(l) {
			bad = append(bad, l)
		}
	}
	return bad
}

// assertSinkLogClean: the receiving Exim logged no protocol or
// synchronisation error and dropped no session.
func (s *sink) assertSinkLogClean(t *testing.T) {
	t.Helper()
	if bad := s.protocolErrors(t); len(bad) > 0 {
		t.Errorf("the receiving Exim logged %d protocol/synchronisation errors or dropped sessions:\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
}

// TestEximSinkLogCatchesProtocolErrors checks the oracle before anything
// relies on it: a hand-made client that sends BDAT after its only RCPT
// was refused, as the old engine did, makes the sink log protocol errors
// and drop the session, and protocolErrors sees it. So a clean log in the
// other tests cannot come from an Exim that never logs them.
func TestEximSinkLogCatchesProtocolErrors(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	if bad := s.protocolErrors(t); len(bad) != 0 {
		t.Fatalf("a fresh sink's log already has errors: %v", bad)
	}
	c, err := net.DialTimeout("tcp", s.addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }() // a probe: the log is what counts
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	body := "Subject: probe\r\n\r\nprobe\r\n"
	var sb strings.Builder
	sb.WriteString("EHLO probe.example\r\n")
	for i := range 5 {
		fmt.Fprintf(&sb, "MAIL FROM:<p@probe.example>\r\nRCPT TO:<reject550p%d@sink.example>\r\nBDAT %d\r\n%sBDAT 0 LAST\r\nRSET\r\n", i, len(body), body)
	}
	sb.WriteString("QUIT\r\n")
	if _, err := io.WriteString(c, sb.String()); err != nil {
		t.Fatal(err)
	}
	// Read until Exim closes: it has logged by then.
	br := bufio.NewReader(c)
	for {
		if _, err := br.ReadString('\n'); err != nil {
			break
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		bad := s.protocolErrors(t)
		dropped := false
		for _, l := range bad {
			dropped = dropped || strings.Contains(l, "dropped:")
		}
		if len(bad) >= 2 && dropped {
			t.Logf("the sink logged, as expected:\n%s", strings.Join(bad, "\n"))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("BDAT after refused RCPTs: the sink's log shows %d protocol errors (dropped=%v), want at least 2 and a dropped session%s",
				len(bad), dropped, eximLogs(s.dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// receiverHost is a file_hosts domain of writer.conf: one appended BSMTP
// file, several recipients of a message in one entry (batch_max = 100).
const receiverHost = "file.rt.example"

// startLimitedSink starts the sink with extra -D macros and returns it.
func (r *rig) startLimitedSink(t *testing.T, defines ...string) *sink {
	t.Helper()
	return r.startSinkWith(t, defines...)
}

// sinkSessions counts the SMTP sessions of a client that said EHLO
// test.example, by the line Exim logs at the end of each ("SMTP connection
// from (test.example) [127.0.0.1] closed by QUIT", "... lost", ...): the
// line at the start names no HELO, and the daemon's start-up probe says
// no EHLO at all.
func (s *sink) sinkSessions(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "log", "mainlog"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "SMTP connection from (test.example) ")
}

// bodyLines returns n octets or a little more of varied text lines, some
// starting with a dot.
func bodyLines(tag string, n int) string {
	var sb strings.Builder
	for i := 0; sb.Len() < n; i++ {
		if i%13 == 0 {
			sb.WriteString(".")
		}
		fmt.Fprintf(&sb, "%s line %d %s\n", tag, i, strings.Repeat("abcdefghij", 1+i%7))
	}
	return sb.String()
}

// heldMessages reads what etrnflush kept for a BSMTP file spool: the
// file itself if Exim wrote to it again, and every work file.
func heldMessages(t *testing.T, path string) []envMsg {
	t.Helper()
	var msgs []envMsg
	if _, err := os.Stat(path); err == nil {
		msgs = append(msgs, parseBSMTPFile(t, path)...)
	}
	for _, f := range privateFiles(t, filepath.Dir(path), filepath.Base(path))["work"] {
		msgs = append(msgs, parseBSMTPFile(t, f)...)
	}
	return msgs
}

// failedMessages reads the failed folder: each copy with the reason
// etrnflush wrote beside it, keyed by Message-Id.
func failedMessages(t *testing.T, path string) (msgs []envMsg, why map[string]string) {
	t.Helper()
	why = map[string]string{}
	for _, f := range privateFiles(t, filepath.Dir(path), filepath.Base(path))["failed"] {
		switch {
		case strings.HasSuffix(f, ".bsmtp"):
			copies := parseBSMTPFile(t, f)
			b, err := os.ReadFile(strings.TrimSuffix(f, ".bsmtp") + ".why")
			if err != nil {
				t.Errorf("failed copy %s has no reason: %v", f, err)
			}
			for _, m := range copies {
				why[m.id()] = string(b)
			}
			msgs = append(msgs, copies...)
		case strings.HasSuffix(f, ".why"):
		default:
			t.Errorf("unexpected file in the failed folder: %s", f)
		}
	}
	return msgs, why
}

// TestEximReceiverBlockedHead is issue 10's first case against a real
// Exim with its default smtp_max_synprot_errors (3): a spool whose head is
// one 300 KB message deferred at RCPT (five 64 KiB chunks), five small
// messages deferred at RCPT and two refused at RCPT, then 30 ordinary
// ones (one of them 150 KB, so accepted multi-chunk messages are in the
// batch too). One run, with CHUNKING and with --no-chunking, delivers the
// 30 byte for byte in one session, keeps the 6 in the spool untouched,
// puts the 2 in the failed folder with Exim's 550, and Exim logs no
// protocol or synchronisation error and drops nothing. The old engine
// (a BDAT behind each unanswered RCPT) had Exim drop the session within
// the first messages, and every later run the same.
func TestEximReceiverBlockedHead(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		name := "chunking"
		if !chunking {
			name = "no-chunking"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			s := r.startSink(t) // CHUNKING and PIPELINING offered, defaults otherwise
			w := r.newWriter(t)
			host := receiverHost
			path := w.filePath(host)
			inject := func(kind string, i int, local string, size int) {
				t.Helper()
				msg := fmt.Sprintf("From: <alice@sender.example>\nSubject: %s %d\nMessage-ID: <%s-%d@test.example>\n\n%s",
					kind, i, kind, i, bodyLines(fmt.Sprintf("%s-%d", kind, i), size))
				if err := w.inject("alice@sender.example", []string{local + "@" + host}, []byte(msg)); err != nil {
					t.Fatal(err)
				}
			}
			inject("big-deferred", 0, "defer451big", 300_000)
			for i := range 5 {
				inject("deferred", i, fmt.Sprintf("defer451s%d", i), 400)
			}
			for i := range 2 {
				inject("refused", i, fmt.Sprintf("reject550r%d", i), 400)
			}
			for i := range 30 {
				size := 300 + 97*i
				if i == 10 {
					size = 150_000
				}
				inject("ordinary", i, fmt.Sprintf("u%d", i), size)
			}
			stored := spoolMessages(t, path)
			if len(stored) != 38 || !strings.HasPrefix(stored[0].id(), "<big-deferred-") || len(stored[0].Data) < 300_000 {
				t.Fatalf("the writer Exim stored %d messages, first %s; want 38, the 300 KB deferred one first", len(stored), stored[0])
			}
			var wantSent, wantKept, wantFailed []envMsg
			for _, m := range stored {
				switch {
				case strings.HasPrefix(m.id(), "<ordinary-"):
					wantSent = append(wantSent, m)
				case strings.HasPrefix(m.id(), "<refused-"):
					wantFailed = append(wantFailed, m)
				default:
					wantKept = append(wantKept, m)
				}
			}

			args := []string{"--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example"}
			if !chunking {
				args = append(args, "--no-chunking")
			}
			start := time.Now()
			_, stderr, code := runEtrnflush(t, append(args, host)...)
			took := time.Since(start)
			if code != 75 {
				t.Fatalf("exit %d, want 75 (deferred mail left); stderr:\n%s", code, stderr)
			}
			s.waitReplayed(t, wantSent) // asserts the clean sink log too
			sessions := s.sinkSessions(t)
			t.Logf("%d messages (%d sent, %d deferred, %d refused) in %s, %d session(s)",
				len(stored), len(wantSent), len(wantKept), len(wantFailed), took.Round(time.Millisecond), sessions)
			if sessions != 1 {
				t.Errorf("the sink saw %d sessions, want 1: nothing here should end one", sessions)
			}
			for status, n := range map[string]int{"sent": 30, "deferred": 6, "failed": 2} {
				if got := strings.Count(stderr, " status="+status+" "); got != n {
					t.Errorf("%d log lines with status=%s, want %d:\n%s", got, status, n, stderr)
				}
			}
			if !strings.Contains(stderr, fmt.Sprintf("host=%s summary sent=30 deferred=6 failed=2 ", host)) {
				t.Errorf("no summary sent=30 deferred=6 failed=2:\n%s", stderr)
			}
			sameMessages(t, "kept in the spool", wantKept, heldMessages(t, path))
			failed, why := failedMessages(t, path)
			sameMessages(t, "failed folder", wantFailed, failed)
			for id, text := range why {
				if !strings.Contains(text, "550") {
					t.Errorf("failed %s: reason %q, want the sink's 550", id, text)
				}
			}
			lines := s.receptions(t)
			if len(lines) != 30 {
				t.Fatalf("the sink logged %d receptions, want 30", len(lines))
			}
			for _, l := range lines {
				if got := logChunking.MatchString(l); got != chunking {
					t.Errorf("CHUNKING used=%v, want %v: %s", got, chunking, l)
				}
			}
		})
	}
}
