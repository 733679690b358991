package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is a discarding SMTP server on loopback, built on go-smtp's server.
// go-smtp always advertises PIPELINING and CHUNKING; the sink hides either
// by rewriting its own EHLO reply (capFilter), so that the client under
// test sees a server without them.
type sink struct {
	addr string
	srv  *smtp.Server
	l    net.Listener

	refuse string

	msgs, rcpts atomic.Int64
	bytes       atomic.Int64
	refused     atomic.Int64
}

type sinkOptions struct {
	pipelining, chunking bool
	// refuse, when set, makes RCPT answer 450 for any recipient whose
	// address contains it: greylisting, the refusal an ETRN flush meets
	// most, and one that leaves the message at the head of the spool.
	refuse string
}

func startSink(o sinkOptions) (*sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{addr: l.Addr().String(), refuse: o.refuse}
	var hide []string
	if !o.pipelining {
		hide = append(hide, "PIPELINING")
	}
	if !o.chunking {
		hide = append(hide, "CHUNKING")
	}
	s.l = &filterListener{Listener: l, hide: hide}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "sink.bench"
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.MaxLineLength = 0 // a discard sink: take any body
	s.srv.ReadTimeout = 10 * time.Minute
	s.srv.WriteTimeout = 10 * time.Minute
	go func() { _ = s.srv.Serve(s.l) }() // ends when close closes the listener
	return s, nil
}

func (s *sink) close() error { return s.srv.Close() }

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

type sinkSession struct {
	s     *sink
	rcpts int64
}

func (ss *sinkSession) Reset()                               { ss.rcpts = 0 }
func (ss *sinkSession) Logout() error                        { return nil }
func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.s.refuse != "" && strings.Contains(to, ss.s.refuse) {
		ss.s.refused.Add(1)
		return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "greylisted, try again later (bench)"}
	}
	ss.rcpts++
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error { return ss.take(r) }
func (ss *sinkSession) take(r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	ss.s.msgs.Add(1)
	ss.s.rcpts.Add(ss.rcpts)
	ss.s.bytes.Add(n)
	return nil
}

// filterListener hands out connections whose EHLO reply lacks the hidden
// keywords.
type filterListener struct {
	net.Listener
	hide []string
}

func (l *filterListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || len(l.hide) == 0 {
		return c, err
	}
	return &capFilter{Conn: c, hide: l.hide}, nil
}

// capFilter rewrites what the server writes: the lines of a multi-line
// reply are held until its last line, then written without the hidden
// keywords, the last remaining line made the final one ("250 ").
// go-smtp writes each reply line with its own flush, so holding is what
// makes the rewrite possible; single-line replies pass at once.
type capFilter struct {
	net.Conn
	hide []string

	mu      sync.Mutex
	partial []byte   // an incomplete line
	held    [][]byte // continuation lines of the reply in progress
}

func (c *capFilter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	var out []byte
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := append([]byte(nil), c.partial[:i+1]...)
		c.partial = c.partial[i+1:]
		if len(line) >= 4 && line[3] == '-' {
			c.held = append(c.held, line)
			continue
		}
		if len(c.held) == 0 {
			out = append(out, line...)
			continue
		}
		out = append(out, c.rewrite(append(c.held, line))...)
		c.held = nil
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *capFilter) rewrite(lines [][]byte) []byte {
	var keep [][]byte
	for _, l := range lines {
		kw := strings.ToUpper(strings.TrimSpace(string(l[4:])))
		if f := strings.Fields(kw); len(f) > 0 && c.hidden(f[0]) {
			continue
		}
		keep = append(keep, append([]byte(nil), l...))
	}
	var out []byte
	for i, l := range keep {
		if i == len(keep)-1 {
			l[3] = ' '
		} else {
			l[3] = '-'
		}
		out = append(out, l...)
	}
	return out
}

func (c *capFilter) hidden(kw string) bool {
	for _, h := range c.hide {
		if kw == h {
			return true
		}
	}
	return false
}

// ehloKeywords dials addr, reads the greeting, sends EHLO and returns the
// keywords of the reply, for the harness's self-test.
func ehloKeywords(addr string) ([]string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }() // a probe: nothing to lose
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "EHLO probe.bench\r\n"); err != nil {
		return nil, err
	}
	var kws []string
	for first := true; ; first = false {
		l, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if len(l) < 4 || !strings.HasPrefix(l, "250") {
			return nil, errors.New("bad EHLO reply line " + l)
		}
		if !first {
			kws = append(kws, strings.Fields(l[4:])[0])
		}
		if l[3] == ' ' {
			return kws, nil
		}
	}
}
