package sender

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"

	"golang.org/x/sys/unix"
)

// Defaults applied when the Options field is zero.
const (
	DefaultTimeout     = 5 * time.Minute
	DefaultDataTimeout = 10 * time.Minute
)

// Error describes why a session could not be set up or could not go on.
// After Send returns an *Error the session is dead: only Close is useful.
type Error struct {
	// Op is the step that failed: "dial", "greeting", "ehlo", "helo",
	// "starttls", "tls", "auth", "mail", "rcpt", "data", "body", "dot",
	// "bdat", "rset", "quit" or "send" (context cancelled between
	// messages, or a write in a pipelined group).
	Op string
	// Reply is the server's reply, or Code 0 and a local reason.
	Reply Reply
	// Err is the local cause (I/O error, timeout), nil for a server reply.
	Err error
	// Temporary is false only when a 5xx reply caused the error.
	Temporary bool
}

func (e *Error) Error() string {
	if e.Reply.Code != 0 {
		return fmt.Sprintf("smtp %s: %d %s", e.Op, e.Reply.Code, e.Reply.Text)
	}
	if e.Err != nil {
		return fmt.Sprintf("smtp %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("smtp %s: %s", e.Op, e.Reply.Text)
}

func (e *Error) Unwrap() error { return e.Err }

func replyError(op string, r reply) *Error {
	return &Error{Op: op, Reply: r.Reply(), Temporary: r.class() != 5}
}

func localError(op string, err error) *Error {
	return &Error{Op: op, Reply: Reply{Text: Sanitize(err.Error())}, Err: err, Temporary: true}
}

// Session is one SMTP connection, ready for transactions. It is not safe for
// concurrent use.
type Session struct {
	o   Options
	raw net.Conn // the TCP (or caller's) connection, closed by Close
	dc  *deadlineConn
	br  *bufio.Reader
	bw  *bufio.Writer
	ext map[string]string
	tls bool
	// tlsFailed is the failed handshake that made a TLSMay session fall
	// back to clear text, for the log.
	tlsFailed error
	peek      *peeker // made on first use, for the plain-TCP in-step check
	buf       []byte  // content copy buffer, made on first use
	dead      error   // set once the stream can no longer be trusted
	done      bool    // Close was called
	// needRset: the last pipelined transaction may still be open, so the
	// next one starts with RSET.
	needRset bool
	stats    stats
}

// stats counts what tests and benchmarks check about the dialogue.
type stats struct {
	waits    int   // turnarounds: a pipelined writer wrote, then had to wait for a reply
	maxBytes int64 // the most chunk content written and not yet answered
}

// Dial connects to o.Addr, waits for the greeting, says EHLO (HELO if EHLO
// is not understood), runs STARTTLS as o.TLS asks and authenticates when
// o.AuthUser is set. The returned session is ready for Send.
//
// Under TLSMay a failed handshake (a server that offers STARTTLS but can
// only do TLS below 1.2, say) costs one more connection in clear text, as
// with Postfix's "may": opportunistic TLS must not stop the mail. Not with
// AuthUser set, since credentials go over TLS only.
func Dial(ctx context.Context, o Options) (*Session, error) {
	s, err := dial(ctx, o)
	var e *Error
	if err == nil || o.TLS != TLSMay || o.AuthUser != "" || !errors.As(err, &e) || e.Op != "tls" {
		return s, err
	}
	o.TLS = TLSNone
	s, err2 := dial(ctx, o)
	if err2 != nil {
		return nil, err2
	}
	s.tlsFailed = err
	return s, nil
}

// TLSFailed says why a TLSMay session runs in clear text (no STARTTLS
// offered, STARTTLS refused, a failed handshake), else nil.
func (s *Session) TLSFailed() error { return s.tlsFailed }

func dial(ctx context.Context, o Options) (*Session, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = DefaultDataTimeout
	}
	if o.Helo == "" || checkLine(o.Helo) != nil || strings.ContainsAny(o.Helo, " \t") {
		return nil, localError("ehlo", fmt.Errorf("invalid HELO name %q", Sanitize(o.Helo)))
	}
	if err := ctx.Err(); err != nil {
		return nil, localError("dial", err)
	}
	var raw net.Conn
	var err error
	if o.Dial != nil {
		raw, err = o.Dial("tcp", o.Addr, o.Timeout)
	} else {
		d := net.Dialer{Timeout: o.Timeout}
		raw, err = d.DialContext(ctx, "tcp", o.Addr)
	}
	if err != nil {
		return nil, localError("dial", fmt.Errorf("connect to %s: %w", o.Addr, err))
	}
	s := &Session{o: o, raw: raw}
	s.attach(raw)
	stop := context.AfterFunc(ctx, func() { s.dc.cancel(context.Cause(ctx)) })
	err = s.setup(ctx)
	stop()
	if err != nil {
		// The setup error is what matters; the close error adds nothing.
		_ = s.raw.Close()
		s.done = true
		return nil, err
	}
	return s, nil
}

func (s *Session) attach(c net.Conn) {
	if s.dc == nil {
		s.dc = &deadlineConn{c: c, timeout: s.o.Timeout}
	} else {
		// Same deadlineConn, so a cancellation already armed keeps
		// reaching whatever connection is current.
		s.dc.mu.Lock()
		s.dc.c = c
		s.dc.mu.Unlock()
	}
	s.br = bufio.NewReaderSize(s.dc, maxReplyLine)
	s.bw = bufio.NewWriterSize(s.dc, 32<<10)
}

func (s *Session) setup(ctx context.Context) error {
	r, err := s.read("greeting", s.o.Timeout)
	if err != nil {
		return err
	}
	if r.code != 220 {
		return replyError("greeting", r)
	}
	if err := s.hello(); err != nil {
		return err
	}
	_, offered := s.ext["STARTTLS"]
	switch {
	case s.o.TLS == TLSNone:
	case !offered && s.o.TLS == TLSMay:
		s.tlsFailed = errors.New("the server does not offer STARTTLS")
	case offered:
		if err := s.startTLS(ctx); err != nil {
			return err
		}
	case s.o.TLS == TLSEncrypt || s.o.TLS == TLSVerify:
		return &Error{Op: "starttls", Reply: Reply{Text: "server does not offer STARTTLS and TLS is required"}, Temporary: true}
	}
	if s.o.AuthUser != "" {
		return s.auth()
	}
	return nil
}

// hello sends EHLO, or HELO when the server does not know EHLO, and records
// the extensions.
func (s *Session) hello() error {
	r, err := s.cmd("ehlo", s.o.Timeout, "EHLO "+s.o.Helo)
	if err != nil {
		return err
	}
	s.ext = map[string]string{}
	if r.code == 500 || r.code == 502 {
		r, err = s.cmd("helo", s.o.Timeout, "HELO "+s.o.Helo)
		if err != nil {
			return err
		}
		if r.class() != 2 {
			return replyError("helo", r)
		}
		return nil
	}
	if r.class() != 2 {
		return replyError("ehlo", r)
	}
	for _, l := range r.lines[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		if k != "" {
			s.ext[strings.ToUpper(k)] = strings.TrimSpace(v)
		}
	}
	return nil
}

func (s *Session) tlsConfig() (*tls.Config, error) {
	var c *tls.Config
	if s.o.TLSConf != nil {
		c = s.o.TLSConf.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	name := s.o.TLSName
	if name == "" {
		host, _, err := net.SplitHostPort(s.o.Addr)
		if err != nil {
			host = s.o.Addr
		}
		name = host
	}
	c.ServerName = name
	if s.o.TLS == TLSVerify {
		if name == "" {
			return nil, errors.New("no name to verify the certificate against")
		}
		c.InsecureSkipVerify = false
	} else {
		// Without verification, encryption still defeats passive listeners;
		// that is all "may" and "encrypt" promise.
		c.InsecureSkipVerify = true
	}
	return c, nil
}

func (s *Session) startTLS(ctx context.Context) error {
	conf, err := s.tlsConfig()
	if err != nil {
		return localError("starttls", err)
	}
	r, err := s.cmd("starttls", s.o.Timeout, "STARTTLS")
	if err != nil {
		return err
	}
	if r.code != 220 {
		if s.o.TLS == TLSMay && r.code != 421 {
			// Opportunistic: a refusal leaves a usable clear session,
			// but the admin is told.
			s.tlsFailed = fmt.Errorf("STARTTLS refused: %d %s", r.code, r.Reply().Text)
			return nil
		}
		return replyError("starttls", r)
	}
	if s.br.Buffered() > 0 {
		// Anything sent before the handshake would be taken as if it had
		// come over TLS (CVE-2011-0411 class); refuse the session.
		return &Error{Op: "starttls", Reply: Reply{Text: "server sent data before the TLS handshake"}, Temporary: true}
	}
	tc := tls.Client(s.raw, conf)
	if err := s.raw.SetDeadline(time.Now().Add(s.o.Timeout)); err != nil {
		return localError("tls", fmt.Errorf("set deadline: %w", err))
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return s.failure("tls", fmt.Errorf("handshake: %w", err))
	}
	if err := s.raw.SetDeadline(time.Time{}); err != nil {
		return localError("tls", fmt.Errorf("clear deadline: %w", err))
	}
	s.attach(tc)
	s.tls = true
	return s.hello()
}

func (s *Session) auth() error {
	if !s.tls {
		return &Error{Op: "auth", Reply: Reply{Text: "refusing to send credentials without TLS"}, Temporary: true}
	}
	mechs, ok := s.ext["AUTH"]
	if !ok {
		return &Error{Op: "auth", Reply: Reply{Text: "server does not offer AUTH"}, Temporary: true}
	}
	var c sasl.Client
	for _, m := range strings.Fields(strings.ToUpper(mechs)) {
		if m == sasl.Plain {
			c = sasl.NewPlainClient("", s.o.AuthUser, s.o.AuthPass)
			break
		}
		if m == sasl.Login {
			c = sasl.NewLoginClient(s.o.AuthUser, s.o.AuthPass)
		}
	}
	if c == nil {
		return &Error{Op: "auth", Reply: Reply{Text: "server offers neither PLAIN nor LOGIN: " + Sanitize(mechs)}, Temporary: true}
	}
	mech, ir, err := c.Start()
	if err != nil {
		return localError("auth", err)
	}
	line := "AUTH " + mech
	if ir != nil {
		enc := base64.StdEncoding.EncodeToString(ir)
		if enc == "" {
			enc = "=" // RFC 4954: an empty initial response
		}
		line += " " + enc
	}
	r, err := s.cmd("auth", s.o.Timeout, line)
	// A bounded number of rounds: PLAIN needs none, LOGIN one.
	for i := 0; err == nil && r.code == 334 && i < 8; i++ {
		var ch, resp []byte
		ch, err = base64.StdEncoding.DecodeString(strings.TrimSpace(strings.Join(r.lines, "")))
		if err == nil {
			resp, err = c.Next(ch)
		}
		if err != nil {
			// Abort the exchange; the server answers 501.
			r, err2 := s.cmd("auth", s.o.Timeout, "*")
			if err2 != nil {
				return err2
			}
			return &Error{Op: "auth", Reply: r.Reply(), Err: err, Temporary: true}
		}
		r, err = s.cmd("auth", s.o.Timeout, base64.StdEncoding.EncodeToString(resp))
	}
	if err != nil {
		return err
	}
	if r.code != 235 {
		return replyError("auth", r)
	}
	return nil
}

// failure turns an I/O error into an *Error and marks the session dead: after
// a timeout or a short write the reply stream is out of step for good.
func (s *Session) failure(op string, err error) *Error {
	if cause := s.dc.cancelled(); cause != nil {
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	if s.dead == nil {
		s.dead = err
	}
	return localError(op, err)
}

// trace hands one transcript line to Options.Trace.
func (s *Session) trace(dir, line string) {
	if s.o.Trace != nil {
		s.o.Trace(dir, Sanitize(line))
	}
}

// traceReply traces each line of r as the server wrote it.
func (s *Session) traceReply(r reply) {
	if s.o.Trace == nil {
		return
	}
	for i, l := range r.lines {
		sep := "-"
		if i == len(r.lines)-1 {
			sep = " "
		}
		s.trace("S", strconv.Itoa(r.code)+sep+l)
	}
}

// write sends one command line; the caller flushes via cmd or itself.
func (s *Session) cmd(op string, wait time.Duration, line string) (reply, error) {
	if err := checkLine(line); err != nil {
		return reply{}, localError(op, err)
	}
	if s.dead != nil {
		return reply{}, localError(op, fmt.Errorf("session unusable: %w", s.dead))
	}
	// Traced once it is sure to be sent: a transcript never shows a
	// command a dead session did not send.
	if op == "auth" {
		// The mechanism may be shown, the credentials never.
		shown := "<credentials elided>"
		if rest, ok := strings.CutPrefix(line, "AUTH "); ok {
			mech, _, _ := strings.Cut(rest, " ")
			shown = "AUTH " + mech + " " + shown
		}
		s.trace("C", shown)
	} else {
		s.trace("C", line)
	}
	if err := s.inStep(op); err != nil {
		return reply{}, err
	}
	if _, err := s.bw.WriteString(line + "\r\n"); err != nil {
		return reply{}, s.failure(op, fmt.Errorf("send: %w", err))
	}
	if err := s.bw.Flush(); err != nil {
		return reply{}, s.failure(op, fmt.Errorf("send: %w", err))
	}
	return s.read(op, wait)
}

// read waits at most wait for one reply. A 421 is the server closing the
// session: it is returned as an *Error after marking the session dead.
func (s *Session) read(op string, wait time.Duration) (reply, error) {
	if err := s.dc.setReadDeadline(wait); err != nil {
		return reply{}, s.failure(op, err)
	}
	r, err := readReply(s.br)
	if err != nil {
		return r, s.failure(op, fmt.Errorf("read reply: %w", err))
	}
	s.traceReply(r)
	if r.code == 421 {
		s.dead = errors.New("server closed the session (421)")
		return r, replyError(op, r)
	}
	if n := s.br.Buffered(); n > 0 {
		// More than one reply to one command: which of them answers it
		// cannot be known, so none is trusted (see inStep).
		return reply{}, s.failure(op, fmt.Errorf("%w: %d more octets after the reply %d", errOutOfStep, n, r.code))
	}
	return r, nil
}

// errOutOfStep: the server sent a reply nobody asked for.
var errOutOfStep = errors.New("server is out of step: a reply came that no command asked for")

// inStep makes sure no reply is waiting before a command (or the final
// dot) is sent. This client never pipelines, so a reply that is already
// there answers nothing it sent: a buggy server, or bytes injected on a
// clear-text path. Going on would match every later reply to the wrong
// command, a stale 250 taken as the verdict on a message, so the session
// is given up and everything not yet answered stays in the spool. Over
// plain TCP the socket is peeked without blocking; under TLS the kernel
// may hold records that are not replies (session tickets), so only what
// was already read counts, and injection is not possible there.
func (s *Session) inStep(op string) error {
	if n := s.br.Buffered(); n > 0 {
		return s.failure(op, fmt.Errorf("%w: %d octets waiting", errOutOfStep, n))
	}
	if s.tls {
		return nil
	}
	if s.peek == nil {
		s.peek = newPeeker(s.raw)
	}
	if s.peek.rc == nil {
		return nil // not a socket we can peek at; the reply checks remain
	}
	// The last read's deadline may have passed while a long body was
	// written, and an expired deadline fails the peek before it looks.
	// Between commands it is fresh: renewing it there costs a call per
	// command for nothing.
	if op == "dot" {
		if err := s.dc.setReadDeadline(s.o.Timeout); err != nil {
			return s.failure(op, err)
		}
	}
	if s.peek.waiting() {
		return s.failure(op, fmt.Errorf("%w: data waiting on the connection", errOutOfStep))
	}
	return nil
}

// copyBuf is the buffer message content is read through: one per session,
// not one per message.
func (s *Session) copyBuf() []byte {
	if s.buf == nil {
		s.buf = make([]byte, copyBufSize)
	}
	return s.buf
}

// peeker looks for input on a socket without reading or blocking. It is
// built once per session, so that the check before every command costs
// one system call and no allocation.
type peeker struct {
	rc  syscall.RawConn // nil when the connection is not a socket
	fn  func(fd uintptr) bool
	buf [1]byte
	n   int
	err error
}

func newPeeker(c net.Conn) *peeker {
	p := &peeker{}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			p.rc = rc
		}
	}
	p.fn = func(fd uintptr) bool {
		p.n, _, p.err = unix.Recvfrom(int(fd), p.buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true
	}
	return p
}

func (p *peeker) waiting() bool {
	if err := p.rc.Read(p.fn); err != nil {
		return false
	}
	return p.err == nil && p.n > 0
}

// TLS reports whether the session runs over STARTTLS.
func (s *Session) TLS() bool { return s.tls }

// Extensions returns the EHLO keywords (upper case) and their parameters.
// It is empty after a HELO fallback.
func (s *Session) Extensions() map[string]string {
	m := make(map[string]string, len(s.ext))
	for k, v := range s.ext {
		m[k] = v
	}
	return m
}

// sizeLimit is the server's SIZE limit, 0 when none is announced.
func (s *Session) sizeLimit() (limit int64, offered bool) {
	v, ok := s.ext["SIZE"]
	if !ok {
		return 0, false
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, true // SIZE without a limit; asked per message, so no error made
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, true
	}
	return n, true
}

// Close says QUIT, waiting at most Timeout for the reply, then closes the
// connection. It always closes; a QUIT failure is not a delivery failure
// and is only returned for the log.
func (s *Session) Close() error {
	if s.done {
		return nil
	}
	s.done = true
	var qerr error
	if s.dead == nil {
		r, err := s.cmd("quit", s.o.Timeout, "QUIT")
		switch {
		case err != nil:
			qerr = err
		case r.class() != 2:
			qerr = replyError("quit", r)
		}
	}
	// Closing the raw conn without a TLS close_notify: the QUIT exchange
	// already ended the session, and a close_notify write could block.
	if err := s.raw.Close(); err != nil {
		return errors.Join(qerr, fmt.Errorf("close connection: %w", err))
	}
	return qerr
}
