package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/bsmtp"
)

// TestSinkSwitches: the sink hides exactly what it is told to, and its
// EHLO reply stays well-formed (one final "250 " line) however the
// hidden keywords lay in it.
func TestSinkSwitches(t *testing.T) {
	for _, tc := range []struct {
		o          sinkOptions
		pipe, chnk bool
	}{
		{sinkOptions{pipelining: true, chunking: true}, true, true},
		{sinkOptions{pipelining: true}, true, false},
		{sinkOptions{chunking: true}, false, true},
		{sinkOptions{}, false, false},
	} {
		s, err := startSink(tc.o)
		if err != nil {
			t.Fatal(err)
		}
		kws, err := ehloKeywords(s.addr)
		if err != nil {
			t.Fatalf("%+v: %v", tc.o, err)
		}
		if got := slices.Contains(kws, "PIPELINING"); got != tc.pipe {
			t.Errorf("%+v: PIPELINING advertised %v, want %v (%q)", tc.o, got, tc.pipe, kws)
		}
		if got := slices.Contains(kws, "CHUNKING"); got != tc.chnk {
			t.Errorf("%+v: CHUNKING advertised %v, want %v (%q)", tc.o, got, tc.chnk, kws)
		}
		if !slices.Contains(kws, "8BITMIME") || !slices.Contains(kws, "SIZE") {
			t.Errorf("%+v: other keywords lost: %q", tc.o, kws)
		}
		// A whole transaction still works through the filter.
		c, err := smtp.Dial(s.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendMail("a@s.example", []string{"b@h.example", "c@h.example"}, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
			t.Errorf("%+v: SendMail: %v", tc.o, err)
		}
		if err := c.Quit(); err != nil {
			t.Errorf("%+v: QUIT: %v", tc.o, err)
		}
		if m, r := s.msgs(), s.rcpts(); m != 1 || r != 2 {
			t.Errorf("%+v: sink counted %d messages, %d recipients; want 1, 2", tc.o, m, r)
		}
		if err := s.close(); err != nil {
			t.Error(err)
		}
	}
}

// TestSinkRefuses: with refuse set, RCPT answers 450 exactly for the
// marked recipients, and a message keeps its other recipients.
func TestSinkRefuses(t *testing.T) {
	s, err := startSink(sinkOptions{pipelining: true, chunking: true, refuse: refuseMarker})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.close() }() // counts are read before
	c, err := smtp.Dial(s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }() // QUIT is not what is tested
	if err := c.Mail("a@s.example", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt(refuseMarker+"1-0@h.example", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 450 {
		t.Errorf("RCPT of a marked recipient: %v, want a 450", err)
	}
	if err := c.Rcpt("user1-1@h.example", nil); err != nil {
		t.Errorf("RCPT of an unmarked recipient: %v", err)
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(wc, "Subject: x\r\n\r\nbody\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
	if m, r, f := s.msgs(), s.rcpts(), s.refused.Load(); m != 1 || r != 1 || f != 1 {
		t.Errorf("sink counted %d messages, %d recipients, %d refused; want 1 each", m, r, f)
	}
	spec := spoolSpec{n: 100, refuseEvery: 5}
	if !spec.refused(0) || spec.refused(1) || spec.accepted() != 80 {
		t.Errorf("spec %+v: refused(0) %v, refused(1) %v, accepted %d; want the head refused and 80 accepted", spec, spec.refused(0), spec.refused(1), spec.accepted())
	}
}

// echoServer answers every line with one line, at once: 503 to a line
// starting with BAD, 250 to any other.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				if _, err := io.WriteString(c, "220 hello\r\n"); err != nil {
					return
				}
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					code := "250 "
					if strings.HasPrefix(l, "BAD") {
						code = "503 "
					}
					if _, err := io.WriteString(c, code+l); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestProxyCountsRoundTrips: a client that waits for each reply pays one
// round trip per command, one that streams its commands pays one in all,
// the delay is really added, and commands are counted even when split
// across writes.
func TestProxyCountsRoundTrips(t *testing.T) {
	const rtt = 60 * time.Millisecond
	p, err := startProxy(echoServer(t), rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.close() }()

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		if _, err := br.ReadString('\n'); err != nil { // greeting
			t.Fatal(err)
		}
		return c, br
	}
	// Lock-step: 5 commands, each waits for its reply.
	c, br := dial()
	start := time.Now()
	for _, cmd := range []string{"MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n", "DATA\r\n", "BDAT 3 LAST\r\n", "QUIT\r\n"} {
		if _, err := io.WriteString(c, cmd); err != nil {
			t.Fatal(err)
		}
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 5*rtt {
		t.Errorf("5 lock-step commands took %s, less than 5 RTT: no delay added", el)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitConns(t, p)
	st := p.snapshot()
	if st.roundTrips != 5 {
		t.Errorf("lock-step: %d round trips counted, want 5", st.roundTrips)
	}
	if st.mails != 1 || st.datas != 1 || st.bdats != 1 {
		t.Errorf("lock-step: counted MAIL %d DATA %d BDAT %d, want 1 each", st.mails, st.datas, st.bdats)
	}

	if st.badSeq != 0 {
		t.Errorf("lock-step: %d out-of-sequence replies counted, want 0", st.badSeq)
	}

	// Streaming: 50 commands written without waiting, split mid-word,
	// then all replies read; one in ten is refused as out of sequence.
	c, br = dial()
	var all strings.Builder
	for i := range 50 {
		if i%10 == 9 {
			all.WriteString("BAD\r\n")
			continue
		}
		all.WriteString("MAIL FROM:<a@b>\r\n")
	}
	s := all.String()
	for i := 0; i < len(s); i += 7 {
		if _, err := io.WriteString(c, s[i:min(i+7, len(s))]); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitConns(t, p)
	st2 := p.snapshot()
	if d := st2.roundTrips - st.roundTrips; d != 1 {
		t.Errorf("streaming: %d round trips counted, want 1 (the wait for the greeting)", d)
	}
	if d := st2.mails - st.mails; d != 45 {
		t.Errorf("streaming: %d MAIL counted, want 45", d)
	}
	if d := st2.badSeq - st.badSeq; d != 5 {
		t.Errorf("streaming: %d out-of-sequence replies counted, want 5", d)
	}
}

// waitConns lets the proxy's pumps see the close before counts are read.
func waitConns(t *testing.T, p *proxy) {
	t.Helper()
	time.Sleep(3 * p.rtt)
}

// TestGeneratedSpool: the generated spool parses back with the sizes and
// recipients asked for.
func TestGeneratedSpool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.example")
	if _, err := writeSpool(path, "g.example", spoolSpec{n: 20, size: 4 << 10, rcpts: 3}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	r := bsmtp.NewReader(f)
	n := 0
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil || e.Msg == nil {
			t.Fatalf("entry %d: %v %q", n, err, e.Damage)
		}
		if len(e.Msg.To) != 3 || e.Msg.Size < 4000 || e.Msg.Size > 4<<10 {
			t.Errorf("entry %d: %d recipients, size %d", n, len(e.Msg.To), e.Msg.Size)
		}
		n++
	}
	if n != 20 {
		t.Errorf("%d messages, want 20", n)
	}
}

// TestTranscript: the rendered session holds, for every message of the
// spool, MAIL, its RCPTs and one BDAT LAST whose count is exactly the
// generated content with CRLF line ends and no stuffing (as a client must
// send it); a spool written with CRLF line ends renders the same; and
// replayed into the sink, every message and octet arrives.
func TestTranscript(t *testing.T) {
	dir := t.TempDir()
	const host = "tr.example"
	spec := spoolSpec{n: 4, size: 1500, rcpts: 2}
	lfPath := filepath.Join(dir, "lf")
	if _, err := writeSpool(lfPath, host, spec); err != nil {
		t.Fatal(err)
	}
	// The same messages, written with Exim's use_crlf.
	crlfPath := filepath.Join(dir, "crlf")
	var crlf strings.Builder
	w := bsmtp.NewWriter(&crlf)
	for i := range spec.n {
		env := bsmtp.Envelope{From: fmt.Sprintf("sender%d@isp.example", i%7)}
		for r := range spec.rcpts {
			env.To = append(env.To, fmt.Sprintf("user%d-%d@%s", i, r, host))
		}
		b, err := io.ReadAll(newBody(i, spec.size))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(env, strings.NewReader(strings.ReplaceAll(string(b), "\n", "\r\n")), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(crlfPath, []byte(crlf.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	var want strings.Builder
	want.WriteString("EHLO t.example\r\n")
	var content int64
	for i := range spec.n {
		b, err := io.ReadAll(newBody(i, spec.size))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\n.") {
			t.Fatalf("message %d has no line starting with a dot: stuffing is not exercised", i)
		}
		body := strings.ReplaceAll(string(b), "\n", "\r\n")
		fmt.Fprintf(&want, "MAIL FROM:<sender%d@isp.example>\r\nRCPT TO:<user%d-0@%s>\r\nRCPT TO:<user%d-1@%s>\r\nBDAT %d LAST\r\n%s",
			i%7, i, host, i, host, len(body), body)
		content += int64(len(body))
	}
	want.WriteString("QUIT\r\n")

	for _, path := range []string{lfPath, crlfPath} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		tf, err := os.Create(path + ".transcript")
		if err != nil {
			t.Fatal(err)
		}
		st, err := renderTranscript(tf, f, fi.Size(), "t.example")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(tf.Name())
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want.String() {
			t.Errorf("%s: transcript differs from the expected session at octet %d", path, firstDiffAt(string(got), want.String()))
		}
		if st.msgs != spec.n || st.rcpts != spec.n*spec.rcpts || st.content != content || st.octets != int64(len(got)) {
			t.Errorf("%s: stats %+v; want %d messages, %d recipients, %d content octets, %d in all", path, st, spec.n, spec.n*spec.rcpts, content, len(got))
		}

		s, err := startSink(sinkOptions{pipelining: true, chunking: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := replayTranscript(s.addr, tf, st); err != nil {
			t.Errorf("%s: replay: %v", path, err)
		}
		if m, r, b := s.msgs(), s.rcpts(), s.bytes(); m != int64(st.msgs) || r != int64(st.rcpts) || b != st.content {
			t.Errorf("%s: sink took %d messages, %d recipients, %d octets; want %d, %d, %d", path, m, r, b, st.msgs, st.rcpts, st.content)
		}
		if err := s.close(); err != nil {
			t.Error(err)
		}
		if err := tf.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func firstDiffAt(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
