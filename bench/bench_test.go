package main

import (
	"bufio"
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
		if m, r := s.msgs.Load(), s.rcpts.Load(); m != 1 || r != 2 {
			t.Errorf("%+v: sink counted %d messages, %d recipients; want 1, 2", tc.o, m, r)
		}
		if err := s.close(); err != nil {
			t.Error(err)
		}
	}
}

func TestCapFilterRewrite(t *testing.T) {
	c := &capFilter{hide: []string{"PIPELINING", "CHUNKING"}}
	in := [][]byte{[]byte("250-sink Hello\r\n"), []byte("250-8BITMIME\r\n"), []byte("250-PIPELINING\r\n"), []byte("250 CHUNKING\r\n")}
	if got, want := string(c.rewrite(in)), "250-sink Hello\r\n250 8BITMIME\r\n"; got != want {
		t.Errorf("rewrite: %q, want %q", got, want)
	}
}

// echoServer answers every line with one line, at once.
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
					if _, err := io.WriteString(c, "250 "+l); err != nil {
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

	// Streaming: 50 commands written without waiting, split mid-word,
	// then all replies read.
	c, br = dial()
	var all strings.Builder
	for range 50 {
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
	if d := st2.mails - st.mails; d != 50 {
		t.Errorf("streaming: %d MAIL counted, want 50", d)
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
