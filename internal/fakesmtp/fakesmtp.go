// Package fakesmtp is the one scriptable SMTP server of the tests, the
// demo and the benchmark: go-smtp's server with a backend that answers
// each MAIL, RCPT and DATA (or BDAT) with a scripted fault or accepts it,
// and records what it accepted (envelope and content).
//
// It never decides what a client should do about a reply; the tests that
// use it do. Byte-level dialogues that go-smtp's server cannot produce
// (no PIPELINING, hanging mid-reply, strict command checks) stay with the
// strict peer in sender's tests.
package fakesmtp

import (
	"context"
	"errors"
	"io"
	"log"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Close says what a fault does to the connection.
type Close int

const (
	// Keep sends the fault's reply and goes on.
	Keep Close = iota
	// Drop closes the connection instead of replying; at DATA, after the
	// whole content was read (the reply to the final dot never comes).
	Drop
	// DropMid, at DATA only, closes the connection halfway through the
	// content (after 64 octets).
	DropMid
	// Reject replies 421 and closes, as go-smtp's Conn.Reject does.
	Reject
	// Exim421 replies 421, reads on what the client pipelined and then
	// closes, as Exim does past smtp_accept_max_per_connection (a close
	// with unread input would reset the connection and lose the 421).
	Exim421
)

// Fault is the scripted answer to one command.
type Fault struct {
	// Code, Enhanced and Text are the reply; Code 0 accepts the command
	// (after Delay). Enhanced defaults to Code's class with x.0.0.
	Code     int
	Enhanced smtp.EnhancedCode
	Text     string
	// Delay comes before the reply, e.g. to outlast a client's timeout.
	Delay time.Duration
	Close Close
}

func (f Fault) err() error {
	if f.Code == 0 {
		return nil
	}
	esc := f.Enhanced
	if esc == (smtp.EnhancedCode{}) {
		esc = smtp.EnhancedCode{f.Code / 100, 0, 0}
	}
	return &smtp.SMTPError{Code: f.Code, EnhancedCode: esc, Message: f.Text}
}

// Script turns the short fault notation of the table tests into faults.
// Keys are as Server.Faults; values:
//
//	"451", "550", ...  that reply: a 4xx is "4.3.0 scripted deferral for KEY",
//	                   a 5xx "5.7.1 scripted refusal for KEY"
//	"drop"             Drop ("drop-dot" is the same, named for DATA)
//	"drop-mid"         DropMid
//	"421"              Reject
//	"slow"             "250 2.0.0 too late" after slow, the command not
//	                   accepted: what matters is that the client gave up
func Script(m map[string]string, slow time.Duration) map[string]Fault {
	out := make(map[string]Fault, len(m))
	for key, v := range m {
		var f Fault
		switch v {
		case "drop", "drop-dot":
			f.Close = Drop
		case "drop-mid":
			f.Close = DropMid
		case "421":
			f.Close = Reject
		case "slow":
			f = Fault{Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Text: "too late", Delay: slow}
		default:
			code, err := strconv.Atoi(v)
			if err != nil || code < 400 || code > 599 {
				panic("fakesmtp: unknown fault " + strconv.Quote(v))
			}
			f.Code = code
			if code < 500 {
				f.Enhanced, f.Text = smtp.EnhancedCode{4, 3, 0}, "scripted deferral for "+key
			} else {
				f.Enhanced, f.Text = smtp.EnhancedCode{5, 7, 1}, "scripted refusal for "+key
			}
		}
		out[key] = f
	}
	return out
}

// Msg is a message the server accepted.
type Msg struct {
	From string
	Opts smtp.MailOptions
	To   []string // the recipients it accepted, in order
	Data []byte   // as received: CRLF line ends, dot-stuffing undone
}

// Envelope is "from>to1,to2".
func (m Msg) Envelope() string { return m.From + ">" + strings.Join(m.To, ",") }

// Txn is the transaction in progress, as the hooks see it.
type Txn struct {
	From     string
	Opts     smtp.MailOptions
	To       []string // accepted so far
	Deferred int      // RCPTs of this transaction answered with a 4xx
	Conn     *smtp.Conn
}

// Server is a scripted SMTP server. Set its fields, then Start (or Serve);
// they must not change afterwards.
type Server struct {
	Domain string
	// Timeout is the server's read and write timeout (0: none).
	Timeout time.Duration
	// Tune, when set, adjusts go-smtp's server before it serves (limits,
	// TLS, error log; the error log is discarded unless Tune sets one).
	Tune func(*smtp.Server)

	// Faults by command and argument: "MAIL <from>", "RCPT <to>",
	// "DATA <from>" (the reply to the end of the content: go-smtp sends
	// 354 itself; BDAT is the same), or by sequence over the server's life,
	// counting from 1: "MAIL #n", "RCPT #n", "DATA #n". The argument wins.
	Faults map[string]Fault
	// MaxRcpts answers the RCPTs past it in a transaction with 452 4.5.3
	// (Exim's recipients_max); MaxMails answers the MAIL past it in a
	// session with Exim421 (smtp_accept_max_per_connection). 0: no limit.
	MaxRcpts, MaxMails int

	// OnMail runs for a MAIL that no fault answered; an error is the reply.
	OnMail func(from string) error
	// OnRcpt runs for a RCPT that no fault or limit answered; attempt
	// counts the RCPTs for that address over the server's life, from 1.
	// An error is the reply (a *smtp.SMTPError with a 4xx counts in
	// Txn.Deferred).
	OnRcpt func(tx *Txn, to string, attempt int) error
	// OnData runs before the content is read, after the DropMid fault.
	// It may read part or all of r; an error is the reply and nothing is
	// recorded. after, if not nil, runs once the message is recorded,
	// before the reply to it goes out.
	OnData func(tx *Txn, r io.Reader) (after func(), err error)

	// Gate, when set, holds the reply to each message's content, once
	// GateAfter messages were recorded, until it is closed; Blocked, when
	// set, is closed when the first message is held.
	Gate      <-chan struct{}
	GateAfter int
	Blocked   chan struct{}

	// Discard keeps no content and no message list, only the counts
	// (benchmarks and memory tests, where a record would be what grows).
	Discard bool
	// DiscardTruncated refuses a message whose connection ended while its
	// content was read, as Exim and Postfix do: go-smtp 0.25.1 copies a
	// BDAT chunk with io.Copy from a LimitReader, which stops quietly at
	// EOF, and would hand a killed client's half message on as complete.
	DiscardTruncated bool
	// Hide lists EHLO keywords to take out of the server's EHLO reply:
	// go-smtp always offers PIPELINING and CHUNKING.
	Hide []string

	srv     *smtp.Server
	l       net.Listener  // what Serve serves
	serving bool          // Serve was called: Close waits for it
	served  chan struct{} // closed when Serve returns
	outOnce sync.Once
	out     chan struct{} // closed at the first Logout

	mu      sync.Mutex
	msgs    []Msg
	nMsgs   int
	nRcpts  int
	nBytes  int64
	offers  map[string]int
	seq     map[string]int // "MAIL", "RCPT", "DATA" commands seen
	blocked sync.Once
}

// ErrTruncated is the reply to a message cut short by the end of its
// connection (DiscardTruncated).
var ErrTruncated = errors.New("connection ended inside the message; discarded as a real receiver would")

func (s *Server) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	s.offers, s.seq = map[string]int{}, map[string]int{}
	s.out, s.served = make(chan struct{}), make(chan struct{})
	srv := smtp.NewServer(s)
	srv.Domain = s.Domain
	srv.ReadTimeout, srv.WriteTimeout = s.Timeout, s.Timeout
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if s.Tune != nil {
		s.Tune(srv)
	}
	s.srv = srv
}

// Start listens on 127.0.0.1 (any free port), serves in the background and
// returns the address.
func (s *Server) Start() (string, error) {
	return s.Listen("127.0.0.1:0")
}

// Listen is Start on a given address.
func (s *Server) Listen(addr string) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	s.starting(l)
	go func() { _ = s.serve() }() // ends when Close closes the listener
	return l.Addr().String(), nil
}

// Serve serves l until Close; it returns nil then.
func (s *Server) Serve(l net.Listener) error {
	s.starting(l)
	return s.serve()
}

func (s *Server) starting(l net.Listener) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		panic("fakesmtp: one Server serves one listener")
	}
	s.serving, s.l = true, &listener{Listener: l, s: s}
}

func (s *Server) serve() error {
	defer close(s.served)
	return s.srv.Serve(s.l)
}

// Close stops the server and the connections it serves, and waits for
// Serve to return if it was called.
func (s *Server) Close() error {
	s.init()
	err := s.srv.Close()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	s.mu.Lock()
	serving, l := s.serving, s.l
	s.mu.Unlock()
	if serving {
		// go-smtp closes only the listeners Serve has registered: a Close
		// right after Start could otherwise leave Serve accepting.
		_ = l.Close() // most likely closed already
		<-s.served
	}
	return err
}

// Shutdown stops accepting and waits for the sessions to end, as
// smtp.Server.Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	return s.srv.Shutdown(ctx)
}

// TB is the part of testing.TB that Run needs (the package does not
// import testing: the demo and the benchmark are programs).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// Run starts s for a test, closes it when the test ends, and returns its
// address.
func Run(t TB, s *Server) string {
	t.Helper()
	addr, err := s.Start()
	if err != nil {
		t.Fatalf("fake SMTP server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close fake SMTP server: %v", err)
		}
	})
	return addr
}

// Messages returns what was accepted, in order (nil with Discard).
func (s *Server) Messages() []Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Envelopes returns the Envelope of each accepted message, in order.
func (s *Server) Envelopes() []string {
	var out []string
	for _, m := range s.Messages() {
		out = append(out, m.Envelope())
	}
	return out
}

// Counts returns the messages, their recipients and content octets
// accepted so far (kept with Discard too).
func (s *Server) Counts() (msgs, rcpts int, octets int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nMsgs, s.nRcpts, s.nBytes
}

// RcptOffers returns how often each address was offered in RCPT.
func (s *Server) RcptOffers() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.offers)
}

// LoggedOut is closed when the first session ends (QUIT or a closed
// connection): how a test that turned a connection around knows the
// other side is done.
func (s *Server) LoggedOut() <-chan struct{} {
	s.init()
	return s.out
}

// fault returns the fault scripted for cmd with arg, counting cmd.
func (s *Server) fault(cmd, arg string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq[cmd]++
	if f, ok := s.Faults[cmd+" "+arg]; ok {
		return f, true
	}
	f, ok := s.Faults[cmd+" #"+strconv.Itoa(s.seq[cmd])]
	return f, ok
}

// apply carries out a fault: the reply to return, or the end of the
// connection.
func apply(c *smtp.Conn, f Fault) error {
	time.Sleep(f.Delay)
	switch f.Close {
	case Drop, DropMid:
		_ = c.Conn().Close() // the fault is the close
		return errors.New("dropped")
	case Reject:
		c.Reject()
		return errors.New("rejected")
	case Exim421:
		exim421(c.Conn())
		return errors.New("closed")
	}
	return f.err()
}

func exim421(conn net.Conn) {
	// Errors are moot: the connection is closed either way.
	_, _ = io.WriteString(conn, "421 4.7.0 too many messages in this connection\r\n")
	if tc, ok := unwrap(conn).(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		_, _ = io.Copy(io.Discard, conn)
	}
	_ = conn.Close()
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: s, tx: Txn{Conn: c}}, nil
}

type session struct {
	s     *Server
	tx    Txn
	mails int
}

func (ss *session) Reset() { ss.tx = Txn{Conn: ss.tx.Conn} }

func (ss *session) Logout() error {
	ss.s.outOnce.Do(func() { close(ss.s.out) })
	return nil
}

func (ss *session) Mail(from string, o *smtp.MailOptions) error {
	s := ss.s
	if ss.mails++; s.MaxMails > 0 && ss.mails > s.MaxMails {
		return apply(ss.tx.Conn, Fault{Close: Exim421})
	}
	if f, ok := s.fault("MAIL", from); ok {
		if err := apply(ss.tx.Conn, f); err != nil {
			return err
		}
	}
	if s.OnMail != nil {
		if err := s.OnMail(from); err != nil {
			return err
		}
	}
	ss.Reset()
	ss.tx.From = from
	if o != nil {
		ss.tx.Opts = *o
	}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.s
	s.mu.Lock()
	s.offers[to]++
	attempt := s.offers[to]
	s.mu.Unlock()
	err := ss.rcpt(to, attempt)
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code/100 == 4 {
		ss.tx.Deferred++
	}
	if err != nil {
		return err
	}
	ss.tx.To = append(ss.tx.To, to)
	return nil
}

func (ss *session) rcpt(to string, attempt int) error {
	s := ss.s
	if s.MaxRcpts > 0 && len(ss.tx.To) >= s.MaxRcpts {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "too many recipients"}
	}
	if f, ok := s.fault("RCPT", to); ok {
		if err := apply(ss.tx.Conn, f); err != nil {
			return err
		}
	}
	if s.OnRcpt != nil {
		return s.OnRcpt(&ss.tx, to, attempt)
	}
	return nil
}

func (ss *session) Data(r io.Reader) error {
	s := ss.s
	f, faulted := s.fault("DATA", ss.tx.From)
	if faulted && f.Close == DropMid {
		var half [64]byte
		_, _ = io.ReadFull(r, half[:])
		return apply(ss.tx.Conn, f)
	}
	var after func()
	if s.OnData != nil {
		var err error
		if after, err = s.OnData(&ss.tx, r); err != nil {
			return err
		}
	}
	var data []byte
	var n int64
	var err error
	if s.Discard {
		n, err = io.Copy(io.Discard, r)
	} else {
		data, err = io.ReadAll(r)
		n = int64(len(data))
	}
	if err != nil {
		return err
	}
	if s.DiscardTruncated {
		if ec, ok := ss.tx.Conn.Conn().(*eofConn); ok && ec.ended.Load() {
			return ErrTruncated
		}
	}
	s.hold()
	if faulted {
		if err := apply(ss.tx.Conn, f); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.nMsgs++
	s.nRcpts += len(ss.tx.To)
	s.nBytes += n
	if !s.Discard {
		s.msgs = append(s.msgs, Msg{From: ss.tx.From, Opts: ss.tx.Opts, To: slices.Clone(ss.tx.To), Data: data})
	}
	s.mu.Unlock()
	if after != nil {
		after()
	}
	return nil
}

// hold waits at the gate, if there is one and it is this message's turn.
func (s *Server) hold() {
	if s.Gate == nil {
		return
	}
	s.mu.Lock()
	held := s.nMsgs >= s.GateAfter
	s.mu.Unlock()
	if !held {
		return
	}
	if s.Blocked != nil {
		s.blocked.Do(func() { close(s.Blocked) })
	}
	<-s.Gate
}
