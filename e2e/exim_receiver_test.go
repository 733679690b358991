//go:build e2e

package e2e

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
	"mime/quotedprintable"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

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
			// First the sink's word: a dropped session explains any other
			// difference, and nothing would arrive to wait for.
			if bad := s.protocolErrors(t); len(bad) > 0 {
				t.Fatalf("the receiving Exim logged protocol errors (exit %d):\n%s\netrnflush said:\n%s", code, strings.Join(bad, "\n"), stderr)
			}
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
			if !strings.Contains(stderr, fmt.Sprintf("event=summary host=%s sent=30 deferred=6 failed=2 ", host)) {
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

// TestEximReceiverLimits is issue 10's second case: Exim with
// recipients_max = 10 (RCPT 11 gets 452 4.5.3) and
// smtp_accept_max_per_connection = 20 (MAIL 21 gets 421), and a spool of
// 60 messages, three of them for 30 recipients (the first, the 18th, so
// that its second transaction meets the 421, and the last). One run
// delivers every recipient of every message exactly once, byte for byte,
// in new transactions and new sessions as the limits demand, leaves
// nothing, says when it reconnected, and the sink drops no session. Each
// limit is also tried alone.
func TestEximReceiverLimits(t *testing.T) {
	cases := []struct {
		name     string
		defines  []string
		sessions int // at least; exactly 1 without a connection limit
	}{
		{name: "recipients_max", defines: []string{"-DSINKRCPTMAX=10"}, sessions: 1},
		{name: "smtp_accept_max_per_connection", defines: []string{"-DSINKCONNMSGS=20"}, sessions: 3},
		{name: "both", defines: []string{"-DSINKRCPTMAX=10", "-DSINKCONNMSGS=20"}, sessions: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testEximLimits(t, tc.defines, tc.sessions)
		})
	}
}

func testEximLimits(t *testing.T, defines []string, minSessions int) {
	r := newRig(t)
	s := r.startSinkWith(t, defines...)
	w := r.newWriter(t)
	host := receiverHost
	path := w.filePath(host)
	const n, wide = 60, 30
	isWide := func(i int) bool { return i == 0 || i == 17 || i == n-1 }
	for i := range n {
		var to []string
		switch {
		case isWide(i):
			for j := range wide {
				to = append(to, fmt.Sprintf("w%d-%d@%s", i, j, host))
			}
		case i%7 == 3:
			to = []string{fmt.Sprintf("a%d@%s", i, host), fmt.Sprintf("b%d@%s", i, host)}
		default:
			to = []string{fmt.Sprintf("a%d@%s", i, host)}
		}
		msg := fmt.Sprintf("From: <alice@sender.example>\nSubject: limits %d\nMessage-ID: <limits-%d@test.example>\n\n%s",
			i, i, bodyLines(fmt.Sprintf("limits-%d", i), 200+50*i))
		if err := w.inject("alice@sender.example", to, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	stored := spoolMessages(t, path)
	if len(stored) != n {
		t.Fatalf("the writer Exim stored %d messages, want %d", len(stored), n)
	}
	orig := map[string]envMsg{}
	want := map[string]bool{} // Message-Id + recipient
	for _, m := range stored {
		orig[m.id()] = m
		for _, to := range m.To {
			want[m.id()+" "+to] = true
		}
	}
	if got := len(orig["<limits-17@test.example>"].To); got != wide {
		t.Fatalf("message 17 was stored with %d recipients, want %d in one entry", got, wide)
	}

	start := time.Now()
	_, stderr, code := runEtrnflush(t, "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example", host)
	took := time.Since(start)
	var bad []string
	for _, l := range s.protocolErrors(t) {
		// Exim's 421 at MAIL 21 ends the session for etrnflush, but Exim
		// reads on through what was already pipelined (a window of
		// messages) and counts each RSET there as a non-mail command:
		// a drop after its own 421, which costs nothing. Only that one
		// is allowed, and only with a connection limit.
		if minSessions > 1 && strings.Contains(l, "dropped: too many nonmail commands") {
			continue
		}
		bad = append(bad, l)
	}
	if len(bad) > 0 {
		t.Errorf("the receiving Exim logged protocol errors or dropped a session (exit %d):\n%s", code, strings.Join(bad, "\n"))
	}
	if code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	// What delivered() does, without its second report of the same log.
	for deadline := time.Now().Add(60 * time.Second); queuedMessages(t, filepath.Join(s.dir, "spool")) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sink queue not empty after 60s%s", eximLogs(s.dir))
		}
	}
	got := s.read(t, maildirFiles(t, filepath.Join(s.dir, "maildir")))
	count := map[string]int{}
	rcpts := 0
	for _, m := range got {
		o, ok := orig[m.id()]
		switch {
		case !ok:
			t.Errorf("the sink received a message never spooled: %s", m)
			continue
		case string(o.Data) != string(m.Data) || o.From != m.From:
			t.Errorf("%s arrived changed: from <%s>, stored <%s>%s", m.id(), m.From, o.From, firstDiff(o.Data, m.Data))
		}
		if len(m.To) > 10 && slices.Contains(defines, "-DSINKRCPTMAX=10") {
			t.Errorf("%s: one transaction with %d recipients passed recipients_max = 10", m.id(), len(m.To))
		}
		for _, to := range m.To {
			count[m.id()+" "+to]++
			rcpts++
		}
	}
	missing, dup := 0, 0
	for k := range want {
		switch c := count[k]; {
		case c == 0:
			missing++
		case c > 1:
			dup++
			t.Errorf("%s: received %d times, want once", k, c)
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d recipients never arrived", missing, len(want))
	}
	for k, c := range count {
		if !want[k] {
			t.Errorf("%s: received %d times, never spooled", k, c)
		}
	}
	sessions := s.sinkSessions(t)
	reconnects := strings.Count(stderr, "event=reconnect ")
	if i := strings.Index(stderr, " event=summary "); i >= 0 {
		t.Logf("etrnflush:%s", strings.SplitN(stderr[i:], "\n", 2)[0])
	}
	t.Logf("%d messages, %d recipients delivered (%d spooled), %d transactions at the sink, %d sessions (%d reconnects logged) in %s",
		n, rcpts, len(want), len(got), sessions, reconnects, took.Round(time.Millisecond))
	wantTxns := n
	if slices.Contains(defines, "-DSINKRCPTMAX=10") {
		wantTxns += 3 * 2 // each 30-recipient message in three
	}
	if len(got) != wantTxns {
		t.Errorf("the sink received %d transactions, want %d", len(got), wantTxns)
	}
	if sessions < minSessions || sessions != reconnects+1 || (minSessions == 1 && sessions != 1) {
		t.Errorf("%d sessions at the sink and %d reconnect lines; want %d or more sessions, one more than reconnects:\n%s",
			sessions, reconnects, minSessions, stderr)
	}
	if c := strings.Count(stderr, " status=sent "); c != n {
		t.Errorf("%d log lines with status=sent, want %d:\n%s", c, n, stderr)
	}
	if !strings.Contains(stderr, fmt.Sprintf("event=summary host=%s sent=%d deferred=0 failed=0 ", host, n)) {
		t.Errorf("no summary sent=%d deferred=0 failed=0:\n%s", n, stderr)
	}
	assertNoMailLeft(t, path)
}

// TestEximReceiverMailRefusals: a spool of 15 messages whose sender the
// sink refuses at MAIL (550), as a blocked sender domain gives. Each goes
// to the failed folder and the run exits 0. Pipelined, each transaction
// is followed by an RSET (the MAIL reply is not in yet when the next one
// is written), and Exim, with no message accepted, counts the RSETs as
// non-mail commands: after smtp_accept_max_nonmail (10) it answers the
// next one 554 and drops the session. Nothing behind that RSET was
// processed, so etrnflush offers it in a new session; that drop, and no
// other, is allowed in the sink's log.
func TestEximReceiverMailRefusals(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	w := r.newWriter(t)
	host := receiverHost
	path := w.filePath(host)
	for i := range 15 {
		msg := fmt.Sprintf("From: <reject550s@sender.example>\nSubject: refused %d\nMessage-ID: <mailrej-%d@test.example>\n\nbody %d\n", i, i, i)
		if err := w.inject("reject550s@sender.example", []string{fmt.Sprintf("a%d@%s", i, host)}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	stored := spoolMessages(t, path)
	_, stderr, code := runEtrnflush(t, "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example", host)
	for _, l := range s.protocolErrors(t) {
		if !strings.Contains(l, "dropped: too many nonmail commands") {
			t.Errorf("the receiving Exim logged: %s", l)
		}
	}
	if code != 0 {
		t.Errorf("exit %d, want 0 (every message refused with a 5xx); stderr:\n%s", code, stderr)
	}
	if strings.Contains(stderr, "status=uncertain") {
		t.Errorf("a message refused at MAIL ended uncertain:\n%s", stderr)
	}
	failed, _ := failedMessages(t, path)
	sameMessages(t, "failed folder", stored, failed)
	assertOnlyFailedLeft(t, path)
}

// TestEximReceiverCannotCarry is issue 10's SIZE, SMTPUTF8 and 8BITMIME
// cases against a real Exim that lacks what the message needs. A message
// larger than the sink's SIZE (message_size_limit) and one for a
// non-ASCII address to a sink that does not offer SMTPUTF8 fail at once:
// in the failed folder with the reason (5.3.4, 5.6.7) in the log and
// beside the copy, never offered, exit 0 as for any 5xx. 8-bit content to
// a sink without 8BITMIME (accept_8bitmime = false) arrives converted to
// quoted-printable, 7-bit only and decoding to the original body, logged
// converted=7bit; with eight_bit = "refuse" it fails with 5.6.3 instead.
// A plain message beside each shows the session itself is fine.
func TestEximReceiverCannotCarry(t *testing.T) {
	host := receiverHost
	eightBody := "Grüße aus Köln, naïve café, 日本語\nsecond line\n.dot line\n" + strings.Repeat("long ü line ", 20) + "\n"
	eightMsg := "From: <alice@sender.example>\nSubject: eight bit\nMessage-ID: <eight@test.example>\nMIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + eightBody
	cases := []struct {
		name    string
		defines []string
		config  string
		msg     injection // the message the sink cannot carry as it is
		fails   string    // the status code of its local refusal; "" if it is converted
	}{
		{name: "size", defines: []string{"-DSINKSIZEMAX=100K"},
			msg: injection{"alice@sender.example", []string{"big@" + host},
				[]byte("From: <alice@sender.example>\nSubject: too big\nMessage-ID: <big@test.example>\n\n" + bodyLines("big", 200_000))},
			fails: "5.3.4"},
		{name: "smtputf8", defines: []string{"-DSINKNOUTF8"},
			msg: injection{"alice@sender.example", []string{"用户@" + host},
				[]byte("From: <alice@sender.example>\nSubject: utf8 address\nMessage-ID: <utf8@test.example>\n\nfor a UTF-8 address\n")},
			fails: "5.6.7"},
		{name: "8bitmime-convert", defines: []string{"-DSINKNO8BITMIME"},
			msg: injection{"alice@sender.example", []string{"eight@" + host}, []byte(eightMsg)}},
		{name: "8bitmime-refuse", defines: []string{"-DSINKNO8BITMIME"}, config: "eight_bit = \"refuse\"\n",
			msg:   injection{"alice@sender.example", []string{"eight@" + host}, []byte(eightMsg)},
			fails: "5.6.3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			s := r.startSinkWith(t, tc.defines...)
			w := r.newWriter(t)
			path := w.filePath(host)
			plain := injection{"alice@sender.example", []string{"plain@" + host},
				[]byte("From: <alice@sender.example>\nSubject: plain\nMessage-ID: <plain@test.example>\n\nplain body\n")}
			for _, in := range []injection{tc.msg, plain} {
				if err := w.inject(in.from, in.to, in.data); err != nil {
					t.Fatal(err)
				}
			}
			stored := spoolMessages(t, path)
			if len(stored) != 2 {
				t.Fatalf("the writer Exim stored %d messages, want 2", len(stored))
			}
			hard, easy := stored[0], stored[1]
			cfg := filepath.Join(t.TempDir(), "etrnflush.toml")
			if err := os.WriteFile(cfg, []byte("log = \"stderr\"\nbounce = false\n"+tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := runEtrnflush(t, "-c", cfg, "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example", host)
			if code != 0 {
				t.Fatalf("exit %d, want 0 (nothing left for later: a local refusal is final, as a 5xx); stderr:\n%s", code, stderr)
			}
			// The outcome lines: the plain message's and the other one's
			// (the log escapes a non-ASCII address, so match the plain one).
			var hardLine string
			for _, l := range strings.Split(stderr, "\n") {
				if strings.Contains(l, " status=") && !strings.Contains(l, " to=<plain@") {
					if hardLine != "" {
						t.Errorf("two outcome lines for one message:\n%s\n%s", hardLine, l)
					}
					hardLine = l
				}
			}
			if tc.fails != "" {
				s.waitReplayed(t, []envMsg{easy})
				failed, why := failedMessages(t, path)
				sameMessages(t, "failed folder", []envMsg{hard}, failed)
				if !strings.Contains(why[hard.id()], tc.fails) {
					t.Errorf("reason beside the failed copy: %q, want %s", why[hard.id()], tc.fails)
				}
				if !strings.Contains(hardLine, " status=failed ") || !strings.Contains(hardLine, tc.fails) {
					t.Errorf("log line for %s: %q, want status=failed with %s:\n%s", hard.id(), hardLine, tc.fails, stderr)
				}
				// Never offered: the sink saw one MAIL only, the plain one's.
				if b, err := os.ReadFile(filepath.Join(s.dir, "log", "mainlog")); err != nil {
					t.Fatal(err)
				} else if strings.Contains(string(b), hard.id()[1:len(hard.id())-1]) {
					t.Errorf("the sink's log mentions %s, which should never have been offered", hard.id())
				}
				assertOnlyFailedLeft(t, path)
				if len(s.receptions(t)) != 1 {
					t.Errorf("the sink logged %d receptions, want 1:\n%s", len(s.receptions(t)), strings.Join(s.receptions(t), "\n"))
				}
				return
			}
			// Converted: the plain one arrives as it was, the 8-bit one
			// 7-bit only, as quoted-printable that decodes to its body.
			got := s.waitDelivered(t, 2)
			var conv *envMsg
			for i, m := range got {
				switch m.id() {
				case easy.id():
					sameMessages(t, "plain message", []envMsg{easy}, []envMsg{m})
					checkMailParams(t, m)
				case hard.id():
					conv = &got[i]
				default:
					t.Errorf("unexpected message at the sink: %s", m)
				}
			}
			if conv == nil {
				t.Fatalf("the 8-bit message did not arrive:\n%s", stderr)
			}
			if strings.Contains(strings.ToUpper(conv.MailCmd), "BODY=8BITMIME") {
				t.Errorf("MAIL %q asks for 8BITMIME, which the sink does not offer", conv.MailCmd)
			}
			for i, c := range conv.Data {
				if c >= 0x80 {
					t.Fatalf("octet %d of the converted message is 8-bit (%#x): %q", i, c, conv.Data[max(0, i-30):min(len(conv.Data), i+30)])
				}
			}
			hdr, body, ok := strings.Cut(string(conv.Data), "\n\n")
			if !ok {
				t.Fatalf("no header/body separator in %q", conv.Data)
			}
			if n := strings.Count(strings.ToLower(hdr), "content-transfer-encoding:"); n != 1 ||
				!strings.Contains(strings.ToLower(hdr), "content-transfer-encoding: quoted-printable") {
				t.Errorf("converted header: want one Content-Transfer-Encoding: quoted-printable, got:\n%s", hdr)
			}
			dec, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
			if err != nil {
				t.Fatalf("the converted body is not quoted-printable: %v\n%s", err, body)
			}
			if string(dec) != eightBody {
				t.Errorf("the converted body decodes to something else:%s", firstDiff([]byte(eightBody), dec))
			}
			if !strings.Contains(hardLine, " status=sent ") || !strings.Contains(hardLine, " converted=7bit ") {
				t.Errorf("log line for the 8-bit message: %q, want status=sent converted=7bit:\n%s", hardLine, stderr)
			}
			assertNoMailLeft(t, path)
		})
	}
}

// assertOnlyFailedLeft: nothing is left to send (the spool file empty or
// gone, no work file, journal, temporary or quarantined file); only the
// failed folder holds something.
func assertOnlyFailedLeft(t *testing.T, path string) {
	t.Helper()
	if fi, err := os.Stat(path); err == nil && fi.Size() != 0 {
		t.Errorf("spool file %s still holds %d octets", path, fi.Size())
	}
	for kind, files := range privateFiles(t, filepath.Dir(path), filepath.Base(path)) {
		if kind != "failed" {
			t.Errorf("left behind (%s): %v", kind, files)
		}
	}
}
