//go:build e2e

package e2e

// Interop of the pipelined engine with a real Exim receiver: CHUNKING on
// and off, through TLS with a certificate the test makes, and recipient
// coalescing of the copies a real Exim writes with batch_max = 1.

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

var (
	logTLS      = regexp.MustCompile(` X=TLS1\.[23]\S*`)
	logChunking = regexp.MustCompile(` K( |$)`)
	// Exim 4.96's +pipelining: "L" when the client pipelined (with a
	// "." or "*" marking whether early pipelining was offered), the same
	// with "-" appended when PIPELINING was offered and not used.
	logPipe  = regexp.MustCompile(` L[.*]?( |$)`)
	logProto = regexp.MustCompile(` P=(\S+)`)
)

// TestEximSinkLogsFeatures checks the sink's own log before anything
// relies on it: a hand-made client that pipelines and sends BDAT gets the
// K and L flags on its "<=" line, one that does neither gets none. So the
// assertions of TestEximPipelineInterop cannot pass for want of a flag
// that Exim never writes.
func TestEximSinkLogsFeatures(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	body := "Subject: probe\r\n\r\nprobe body\r\n"
	type step struct {
		send    string
		replies int
	}
	dialogue := func(steps ...step) {
		t.Helper()
		c, err := net.DialTimeout("tcp", s.addr(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }() // a probe: the log is what counts
		if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		readReply := func() string {
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("reading reply: %v", err)
				}
				if len(l) < 4 || l[3] != '-' {
					return l
				}
			}
		}
		readReply() // greeting
		for _, st := range steps {
			if _, err := io.WriteString(c, st.send); err != nil {
				t.Fatal(err)
			}
			for range st.replies {
				if r := readReply(); r[0] != '2' && r[0] != '3' {
					t.Fatalf("probe %q: reply %q", st.send, r)
				}
			}
		}
	}
	// Pipelined, BDAT: every command of the transaction in one write.
	dialogue(step{"EHLO probe.example\r\n", 1},
		step{"MAIL FROM:<p1@probe.example>\r\nRCPT TO:<a@sink.example>\r\n" + fmt.Sprintf("BDAT %d LAST\r\n", len(body)) + body, 3},
		step{"QUIT\r\n", 1})
	// Lock-step, DATA.
	dialogue(step{"EHLO probe.example\r\n", 1}, step{"MAIL FROM:<p2@probe.example>\r\n", 1}, step{"RCPT TO:<a@sink.example>\r\n", 1},
		step{"DATA\r\n", 1}, step{body + ".\r\n", 1}, step{"QUIT\r\n", 1})
	s.waitDelivered(t, 2)
	lines := s.receptions(t)
	if len(lines) != 2 {
		t.Fatalf("%d reception lines, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		chunked, piped := logChunking.MatchString(l), logPipe.MatchString(l)
		switch {
		case strings.Contains(l, "<= p1@"):
			if !chunked || !piped {
				t.Errorf("pipelined BDAT probe: K=%v L=%v in %q", chunked, piped, l)
			}
		case strings.Contains(l, "<= p2@"):
			if chunked || piped {
				t.Errorf("lock-step DATA probe: K=%v L=%v in %q", chunked, piped, l)
			}
		}
	}
}

// TestEximPipelineInterop: the round-trip corpus, written by a real Exim,
// flushed through STARTTLS (--tls encrypt, the test's own self-signed
// certificate) into a real Exim with CHUNKING offered and not, arrives
// byte for byte; Exim's log shows TLS on every message, BDAT exactly when
// CHUNKING was offered, and PIPELINING.
func TestEximPipelineInterop(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		name := "chunking"
		if !chunking {
			name = "no-chunking"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			cert, key := r.makeCert(t)
			defines := []string{"-DSINKTLSCRT=" + cert, "-DSINKTLSKEY=" + key}
			if !chunking {
				defines = append(defines, "-DSINKCHUNKHOSTS=")
			}
			s := r.startSinkWith(t, defines...)
			w := r.newWriter(t)
			const host = "file.rt.example"
			path := w.filePath(host)
			corpus := roundTripCorpus(t, host)
			for _, in := range corpus {
				if err := w.inject(in.from, in.to, in.data); err != nil {
					t.Fatal(err)
				}
			}
			want := spoolMessages(t, path)
			if len(want) != len(corpus) {
				t.Fatalf("the writer Exim stored %d messages, want %d", len(want), len(corpus))
			}
			_, stderr, code := runEtrnflush(t, "--spool", path, "--to", s.addr(), "--tls", "encrypt",
				"--helo", "test.example", "--max-inflight", "4", host)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			s.waitReplayed(t, want)
			if n := strings.Count(stderr, "status=sent"); n != len(want) {
				t.Errorf("%d log lines with status=sent, want %d:\n%s", n, len(want), stderr)
			}
			assertNoMailLeft(t, path)

			lines := s.receptions(t)
			if len(lines) != len(want) {
				t.Fatalf("sink logged %d receptions, want %d", len(lines), len(want))
			}
			piped := 0
			for _, l := range lines {
				if !logTLS.MatchString(l) {
					t.Errorf("received without TLS 1.2+: %s", l)
				}
				if p := logProto.FindStringSubmatch(l); p == nil || !strings.Contains(p[1], "esmtps") {
					t.Errorf("protocol is not ESMTP over TLS: %s", l)
				}
				if got := logChunking.MatchString(l); got != chunking {
					t.Errorf("CHUNKING offered=%v, BDAT used=%v: %s", chunking, got, l)
				}
				if logPipe.MatchString(l) {
					piped++
				}
			}
			// Exim flags a message L when its commands arrived pipelined;
			// the first message of the connection may come after EHLO's
			// reply alone, so not every line needs it.
			if piped < len(lines)-1 {
				t.Errorf("only %d of %d receptions pipelined:\n%s", piped, len(lines), strings.Join(lines, "\n"))
			}
		})
	}
}

// TestEximCoalesce: a real Exim with batch_max = 1 writes one copy of a
// message per recipient; the flush gives the receiving Exim one
// transaction with all the recipients (one reception in its log, one
// delivery per recipient of identical content), and logs one line per
// copy, each with its own recipient and the same coalesced= id.
func TestEximCoalesce(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	w := r.newWriter(t)
	const host = "one.rt.example"
	path := w.filePath(host)
	to := []string{"ann@" + host, "ben@" + host, "cat@" + host, "dan@" + host, "eve@" + host}
	msgA := []byte("From: alice@sender.example\nSubject: coalesce me\nMessage-ID: <co-a@sender.example>\n\none body for five\n.leading dot\n")
	msgB := []byte("From: alice@sender.example\nSubject: alone\nMessage-ID: <co-b@sender.example>\n\nanother body\n")
	if err := w.inject("alice@sender.example", to, msgA); err != nil {
		t.Fatal(err)
	}
	if err := w.inject("alice@sender.example", to[:2], msgB); err != nil {
		t.Fatal(err)
	}
	want := spoolMessages(t, path)
	if len(want) != len(to)+2 {
		t.Fatalf("the writer Exim stored %d copies, want %d (batch_max = 1)", len(want), len(to)+2)
	}
	for _, m := range want {
		if len(m.To) != 1 {
			t.Fatalf("a spool entry with %d recipients; the writer is not batch_max = 1", len(m.To))
		}
	}
	_, stderr, code := runEtrnflush(t, "--spool", path, "--to", s.addr(), "--tls", "none",
		"--helo", "test.example", host)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	// The sink's maildir transport (batch_max = 10000) stores one file per
	// transaction, listing every RCPT it got: what arrives must be the two
	// messages, each once, byte for byte, with all its copies' recipients.
	merged := map[string]*envMsg{}
	var wantTxns []envMsg
	for _, m := range want {
		k := m.From + "\x00" + string(m.Data)
		if g, ok := merged[k]; ok {
			g.To = append(g.To, m.To...)
			continue
		}
		merged[k] = &envMsg{From: m.From, To: append([]string(nil), m.To...), Data: m.Data}
	}
	for _, g := range merged {
		wantTxns = append(wantTxns, *g)
	}
	got := s.waitDelivered(t, 2)
	sameMessages(t, "sink", wantTxns, got)
	if lines := s.receptions(t); len(lines) != 2 {
		t.Errorf("sink logged %d receptions, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	// Per copy: one line, its own recipient, status=sent, and the copies
	// of one transaction share one coalesced= id.
	line := regexp.MustCompile(` id=(\S+) (?:message_id=\S+ )?(?:exim_id=\S+ )?from=<alice@sender\.example> to=<([^>]+)> size=\d+ status=sent coalesced=(\S+) reply=`)
	txnOf := map[string]string{}
	ids := map[string]bool{}
	for _, m := range line.FindAllStringSubmatch(stderr, -1) {
		if ids[m[1]] {
			t.Errorf("id %s logged twice", m[1])
		}
		ids[m[1]] = true
		if _, dup := txnOf[m[2]+m[3]]; dup {
			t.Errorf("recipient %s logged twice in transaction %s", m[2], m[3])
		}
		txnOf[m[2]+m[3]] = m[3]
	}
	if len(ids) != len(to)+2 {
		t.Errorf("%d per-copy lines with status=sent and coalesced=, want %d:\n%s", len(ids), len(to)+2, stderr)
	}
	groups := map[string]int{}
	for _, tx := range txnOf {
		groups[tx]++
	}
	if len(groups) != 2 {
		t.Errorf("copies logged under %d coalesced ids, want 2: %v", len(groups), groups)
	}
	assertNoMailLeft(t, path)
}

// TestEximEngineSwitches: --no-chunking, --no-pipelining and the
// config's chunking and pipelining keys reach the engine: Exim's log
// shows BDAT (K) and pipelined commands (L) only where they were allowed.
func TestEximEngineSwitches(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	const host = "file.rt.example"
	cfgFile := func(body string) string {
		p := filepath.Join(t.TempDir(), "etrnflush.toml")
		if err := os.WriteFile(p, []byte("log = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name       string
		args       []string
		chunk, pip bool
	}{
		{"defaults", []string{"-c", cfgFile("")}, true, true},
		{"--no-chunking", []string{"-c", cfgFile(""), "--no-chunking"}, false, true},
		{"chunking = false", []string{"-c", cfgFile("[host.\"" + host + "\"]\nchunking = false\n")}, false, true},
		{"--no-pipelining --no-chunking", []string{"-c", cfgFile(""), "flush", "--no-pipelining", "--no-chunking"}, false, false},
		{"pipelining = false, chunking = false", []string{"-c", cfgFile("pipelining = false\nchunking = false\n")}, false, false},
	}
	seen := 0
	for _, tc := range cases {
		w := r.newWriter(t)
		path := w.filePath(host)
		for i := range 3 {
			msg := fmt.Sprintf("Subject: switch %s %d\nMessage-ID: <sw-%d-%d@sender.example>\n\nbody %d\n", tc.name, i, seen, i, i)
			if err := w.inject("alice@sender.example", []string{fmt.Sprintf("u%d@%s", i, host)}, []byte(msg)); err != nil {
				t.Fatal(err)
			}
		}
		args := append(append([]string(nil), tc.args...), "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example", host)
		if _, stderr, code := runEtrnflush(t, args...); code != 0 {
			t.Fatalf("%s: exit %d; stderr:\n%s", tc.name, code, stderr)
		}
		s.waitDelivered(t, seen+3)
		lines := s.receptions(t)
		if len(lines) != seen+3 {
			t.Fatalf("%s: sink logged %d receptions, want %d", tc.name, len(lines), seen+3)
		}
		piped := 0
		for _, l := range lines[seen:] {
			if got := logChunking.MatchString(l); got != tc.chunk {
				t.Errorf("%s: BDAT used=%v, want %v: %s", tc.name, got, tc.chunk, l)
			}
			if logPipe.MatchString(l) {
				piped++
			}
		}
		switch {
		case tc.pip && piped < 2:
			t.Errorf("%s: %d of 3 receptions pipelined, want at least 2:\n%s", tc.name, piped, strings.Join(lines[seen:], "\n"))
		case !tc.pip && piped > 0:
			t.Errorf("%s: %d receptions pipelined, want none:\n%s", tc.name, piped, strings.Join(lines[seen:], "\n"))
		}
		assertNoMailLeft(t, path)
		seen += 3
	}
}
