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
