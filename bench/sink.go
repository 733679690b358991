package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

// sink is a discarding SMTP server on loopback: the fake server of the
// tests (internal/fakesmtp). go-smtp always advertises PIPELINING and
// CHUNKING; the sink hides either from its EHLO reply (fakesmtp's Hide),
// so that the client under test sees a server without them.
type sink struct {
	addr    string
	srv     *fakesmtp.Server
	refused atomic.Int64
}

type sinkOptions struct {
	pipelining, chunking bool
	// refuse, when set, makes RCPT answer 450 for any recipient whose
	// address contains it: greylisting, the refusal an ETRN flush meets
	// most, and one that leaves the message at the head of the spool.
	refuse string
}

func startSink(o sinkOptions) (*sink, error) {
	s := &sink{}
	var hide []string
	if !o.pipelining {
		hide = append(hide, "PIPELINING")
	}
	if !o.chunking {
		hide = append(hide, "CHUNKING")
	}
	s.srv = &fakesmtp.Server{
		Domain:  "sink.bench",
		Timeout: 10 * time.Minute,
		Tune:    func(srv *smtp.Server) { srv.MaxLineLength = 0 }, // a discard sink: take any body
		Discard: true,
		Hide:    hide,
	}
	if o.refuse != "" {
		s.srv.OnRcpt = func(_ *fakesmtp.Txn, to string, _ int) error {
			if strings.Contains(to, o.refuse) {
				s.refused.Add(1)
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "greylisted, try again later (bench)"}
			}
			return nil
		}
	}
	addr, err := s.srv.Start()
	if err != nil {
		return nil, err
	}
	s.addr = addr
	return s, nil
}

func (s *sink) close() error { return s.srv.Close() }

// msgs, rcpts and bytes are what the sink accepted so far: messages,
// their recipients and content octets.
func (s *sink) msgs() int64 {
	m, _, _ := s.srv.Counts()
	return int64(m)
}

func (s *sink) rcpts() int64 {
	_, r, _ := s.srv.Counts()
	return int64(r)
}

func (s *sink) bytes() int64 {
	_, _, b := s.srv.Counts()
	return b
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
