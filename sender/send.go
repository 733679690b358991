package sender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Send replays the messages next yields (io.EOF: no more), in order. report
// is called once per message taken from next, in the same order, with its
// final Result. next and report are called on the caller's goroutine, never
// at the same time; next may run ahead of report by up to the window
// (Options.MaxInflight) in a pipelined session.
//
// An error from report stops Send: nothing more is taken, the messages
// taken and not yet reported are not reported (those already written may
// have been delivered), the replies still due are read so the session stays
// usable, and the error is returned wrapped. An error from next is returned
// wrapped once every message taken before it is reported. When the session
// fails (a 421, a lost connection, a timeout, a reply out of place) every
// message in flight is reported with its unanswered recipients Deferred
// (and Uncertain when its final dot or BDAT LAST had left) and Send returns
// an *Error; only Close is useful afterwards. A cancelled ctx ends the
// session the same way at once, Send returning the context's error.
//
// Open may be called twice per message when the server offers SIZE: once
// to count the exact size, once to send.
func (s *Session) Send(ctx context.Context, next func() (*Message, error), report func(*Message, Result) error) error {
	if s.done {
		return localError("send", errors.New("session closed"))
	}
	if s.dead != nil {
		return localError("send", fmt.Errorf("session unusable: %w", s.dead))
	}
	if s.mode() != lockStep {
		return s.sendPipelined(ctx, next, report)
	}
	stop := context.AfterFunc(ctx, func() { s.dc.cancel(context.Cause(ctx)) })
	defer stop()
	for {
		if err := ctx.Err(); err != nil {
			s.dead = err
			return localError("send", err)
		}
		m, err := next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("next message: %w", err)
		}
		if m == nil {
			return errors.New("next message: nil message without error")
		}
		res, serr := s.transact(m)
		if err := report(m, res); err != nil {
			if serr != nil {
				return fmt.Errorf("report (session also failed: %v): %w", serr, err)
			}
			return fmt.Errorf("report: %w", err)
		}
		if serr != nil {
			return serr
		}
	}
}

// txn is one transaction in progress. Its Result starts with every
// recipient Deferred: only a server reply can change that.
type txn struct {
	s        *Session
	m        *Message
	res      Result
	accepted []int
	judged   bool  // the server refused something of it (4xx or 5xx, not 421)
	over     []int // recipients left out by the server's recipient limit

	mail        int8  // 0 no reply yet, 1 accepted, -1 refused
	lastRefusal reply // the last 4xx/5xx to a RCPT
	failed      bool  // the server refused the content (DATA, a chunk)
}

// judge applies the reply to a command of the transaction (kind; for a
// RCPT, recipient i; for a BDAT, whether it was the LAST) to the outcome.
// It is the one place where a reply decides anything about a message, in
// all three modes; the modes differ only in what they send next. It
// reports false for a reply that has no meaning where it came (the
// session is then out of step, and the caller ends it); a 421 never
// reaches it.
func (t *txn) judge(kind ekind, i int, last bool, r reply) bool {
	fourOrFive := r.class() == 4 || r.class() == 5
	switch kind {
	case eMail:
		switch {
		case r.code == 250:
			t.mail = 1
		case fourOrFive:
			t.mail = -1
			t.res.MailRefused = true
			t.refuse(r, t.all())
		default:
			return false
		}
	case eRcpt:
		if t.mail < 0 {
			// Answers to RCPTs pipelined after a refused MAIL are about
			// the order of commands, not the recipients; only an
			// acceptance is absurd.
			return fourOrFive
		}
		t.res.RcptReplies[i] = r.Reply()
		switch {
		case r.code == 250 || r.code == 251:
			t.accepted = append(t.accepted, i)
		case fourOrFive:
			t.lastRefusal = r
			t.judged = true
			if tooMany(r) {
				// The server's recipient limit, not this mailbox: the
				// recipient goes in a new transaction (see rest).
				t.over = append(t.over, i)
			} else if r.class() == 5 {
				t.res.Rcpts[i] = Failed
			}
		default:
			return false
		}
	case eData:
		switch {
		case r.code == 354:
		case fourOrFive:
			if t.mail > 0 && len(t.accepted) > 0 {
				t.failed = true
				t.refuse(r, t.accepted)
			}
		default:
			return false
		}
	case eDot:
		switch {
		case r.code == 250:
			for _, i := range t.accepted {
				t.res.Rcpts[i] = Sent
			}
		case fourOrFive:
			t.refuse(r, t.accepted)
		default:
			// Not even another 2xx: only 250 says the message was taken.
			t.res.Uncertain = true
			return false
		}
		t.res.Reply = r.Reply()
	case eBdat:
		switch {
		case fourOrFive:
			// Expected after a refused MAIL or every RCPT refused; the
			// first refusal of a chunk decides the transaction.
			if t.mail > 0 && len(t.accepted) > 0 && !t.failed {
				t.failed = true
				t.refuse(r, t.accepted)
			}
		case r.code == 250:
			if t.mail < 0 || len(t.accepted) == 0 {
				break // a chunk with no recipient delivers nothing
			}
			if t.failed {
				if last {
					// A refused chunk, then an accepted end: which part
					// of the message was taken cannot be known.
					t.res.Uncertain = true
					return false
				}
				break
			}
			if last {
				for _, i := range t.accepted {
					t.res.Rcpts[i] = Sent
				}
				t.res.Reply = r.Reply()
			}
		default:
			t.res.Uncertain = t.res.Uncertain || last
			return false
		}
	}
	return true
}

func (s *Session) newTxn(m *Message) *txn {
	return &txn{s: s, m: m, res: Result{
		Rcpts:       make([]Status, len(m.To)),
		RcptReplies: make([]Reply, len(m.To)),
	}}
}

// rest is the transaction for the recipients the server's recipient limit
// left out (RFC 5321 4.5.3.1.10: 452, sent on in a new transaction), with
// their indices in t's message; nil when there are none, or when this
// transaction delivered to nobody, so that a server taking no recipient
// at all is not asked again and again.
func (t *txn) rest() (*Message, []int) {
	if len(t.over) == 0 {
		return nil, nil
	}
	sent := false
	for _, st := range t.res.Rcpts {
		sent = sent || st == Sent
	}
	if !sent {
		return nil, nil
	}
	to := make([]string, len(t.over))
	for j, i := range t.over {
		to[j] = t.m.To[i]
	}
	m := *t.m
	m.To = to
	return &m, t.over
}

// merge takes in the outcome of the transaction rest made, idx mapping its
// recipients to t's.
func (t *txn) merge(c Result, idx []int) {
	whole := true
	for j, i := range idx {
		t.res.Rcpts[i] = c.Rcpts[j]
		t.res.RcptReplies[i] = c.RcptReplies[j]
		whole = whole && c.Rcpts[j] == Sent
		if c.Unsent || (c.RcptUnsent != nil && c.RcptUnsent[j]) {
			t.res.unsentRcpt(i)
		}
	}
	if !whole {
		// The reply that explains the recipients not delivered.
		t.res.Reply = c.Reply
	}
	t.res.Uncertain = t.res.Uncertain || c.Uncertain
}

// asError recovers the *Error the session helpers return.
func asError(op string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return localError(op, err)
}

// transact runs one message. A nil *Error means the session can take the
// next message.
func (s *Session) transact(m *Message) (Result, *Error) {
	t := s.newTxn(m)
	err := t.run()
	// Each further round sends the recipients the one before left out;
	// idx maps the current round's recipients to m's.
	cur, idx := t, []int(nil)
	for err == nil {
		sub, sidx := cur.rest()
		if sub == nil {
			break
		}
		top := sidx
		if idx != nil {
			top = make([]int, len(sidx))
			for j, i := range sidx {
				top[j] = idx[i]
			}
		}
		next := s.newTxn(sub)
		err = next.run()
		t.merge(next.res, top)
		cur, idx = next, top
	}
	if err != nil {
		// The session ended before cur's leftovers got their own
		// transaction.
		for _, i := range cur.overUnsent() {
			if idx != nil {
				i = idx[i]
			}
			t.res.unsentRcpt(i)
		}
	}
	return t.res, err
}

// overUnsent lists the recipients the server's limit left out of t when
// no further transaction will carry them in this session: they were never
// offered in a transaction that could have delivered. Like rest, it
// lists none when t delivered to nobody, so that a server that takes no
// recipient is not given them again and again.
func (t *txn) overUnsent() []int {
	if len(t.over) == 0 {
		return nil
	}
	for _, st := range t.res.Rcpts {
		if st == Sent {
			return t.over
		}
	}
	return nil
}

// local ends the message before anything is sent: every recipient stays
// Deferred, and the session is untouched.
func (t *txn) local(format string, args ...any) *Error {
	t.res.Reply = Reply{Text: Sanitize(fmt.Sprintf(format, args...))}
	return nil
}

// refuseLocally ends the message before anything is sent, for good: the
// server could never take it as it is (too big for its SIZE, an address
// that needs SMTPUTF8 it lacks, 8-bit content it cannot carry). Every
// recipient is Failed, as after a 5xx, so that the message is set aside
// and its sender told instead of being deferred on every run forever.
// The reason starts with the enhanced status code a server would give.
func (t *txn) refuseLocally(format string, args ...any) {
	for i := range t.res.Rcpts {
		t.res.Rcpts[i] = Failed
	}
	t.res.Reply = Reply{Text: Sanitize(fmt.Sprintf(format, args...))}
	t.res.Local = true
}

// ended records why the session died under this message. Recipients that
// already got a 5xx keep it: it was the server's final word for them.
func (t *txn) ended(err error) *Error {
	e := asError("send", err)
	t.res.Reply = e.Reply
	t.markUnsent()
	return e
}

// markUnsent sets Result.Unsent when the session ended with nothing said
// about this message and nothing of it possibly delivered.
func (t *txn) markUnsent() {
	if t.res.Uncertain || t.judged {
		return
	}
	for _, st := range t.res.Rcpts {
		if st != Deferred {
			return
		}
	}
	t.res.Unsent = true
}

// unexpected handles a reply that has no meaning at this step: the
// dialogue is out of step, so the session ends.
func (t *txn) unexpected(op string, r reply) *Error {
	t.s.dead = fmt.Errorf("unexpected reply %d to %s", r.code, op)
	e := &Error{Op: op, Reply: r.Reply(), Err: t.s.dead, Temporary: true}
	t.res.Reply = e.Reply
	return e
}

// refuse applies a 4xx or 5xx to the recipients in idx.
func (t *txn) refuse(r reply, idx []int) {
	t.judged = true
	st := Deferred
	if r.class() == 5 {
		st = Failed
	}
	for _, i := range idx {
		t.res.Rcpts[i] = st
	}
	t.res.Reply = r.Reply()
}

func (t *txn) rset() *Error {
	r, err := t.s.cmd("rset", t.s.o.Timeout, "RSET")
	if err != nil {
		return asError("rset", err)
	}
	if r.class() != 2 {
		// The transaction may still be open; nothing more can be trusted.
		t.s.dead = fmt.Errorf("RSET refused: %d", r.code)
		return &Error{Op: "rset", Reply: r.Reply(), Err: t.s.dead, Temporary: r.class() != 5}
	}
	return nil
}

func (t *txn) all() []int {
	idx := make([]int, len(t.m.To))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

func (t *txn) run() *Error {
	rc, p, ok := t.prepare()
	if !ok {
		return nil
	}
	sent, serr := t.envelope(p)
	if !sent {
		// The content was never read: a close error cannot change the
		// outcome, which is already decided.
		_ = rc.Close()
		return serr
	}
	return t.data(rc)
}

// params is what MAIL needs to say about a message.
type params struct {
	utf8        bool  // SMTPUTF8: an address is not ASCII
	sizeOffered bool  // the server offers SIZE, so size is exact
	size        int64 // wire size (RFC 1870), when sizeOffered
}

// prepare does every check that needs no round trip and opens the
// content. When ok is false the message ended here with a local reason in
// t.res and nothing was sent.
func (t *txn) prepare() (rc io.ReadCloser, p params, ok bool) {
	s, m := t.s, t.m
	if err := checkAddr(m.From); err != nil {
		t.local("invalid sender: %v", err)
		return nil, p, false
	}
	if len(m.To) == 0 {
		t.local("message has no recipients")
		return nil, p, false
	}
	p.utf8 = nonASCII(m.From)
	for _, to := range m.To {
		if to == "" {
			t.local("empty recipient address")
			return nil, p, false
		}
		if err := checkAddr(to); err != nil {
			t.local("invalid recipient: %v", err)
			return nil, p, false
		}
		p.utf8 = p.utf8 || nonASCII(to)
	}
	if m.Open == nil {
		t.local("message has no content")
		return nil, p, false
	}
	if _, ok := s.ext["SMTPUTF8"]; p.utf8 && !ok {
		t.refuseLocally("5.6.7 not sent: an address is not ASCII and the server does not offer SMTPUTF8 (RFC 6531)")
		return nil, p, false
	}
	open := m.Open
	if _, ok := s.ext["8BITMIME"]; m.EightBit && !ok {
		if s.o.EightBit == EightBitRefuse {
			t.refuseLocally("5.6.3 not sent: the content is 8-bit, the server does not offer 8BITMIME and eight_bit is \"refuse\" (RFC 6152)")
			return nil, p, false
		}
		var err error
		open, t.res.Converted, err = sevenBit(m)
		switch {
		case err != nil && unconvertible(err):
			t.refuseLocally("5.6.3 not sent: the server does not offer 8BITMIME (RFC 6152) and the 8-bit content cannot be converted to 7-bit MIME: %v", err)
			return nil, p, false
		case err != nil:
			t.local("%v", err)
			return nil, p, false
		}
	}
	var limit int64
	limit, p.sizeOffered = s.sizeLimit()
	if p.sizeOffered {
		var err error
		p.size = m.WireSize
		if p.size == 0 || t.res.Converted {
			p.size, err = wireSize(open, s.copyBuf())
		}
		if err != nil {
			t.local("%v", err)
			return nil, p, false
		}
		if limit > 0 && p.size > limit {
			t.refuseLocally("5.3.4 not sent: message size %d exceeds the server's SIZE limit %d (RFC 1870)", p.size, limit)
			return nil, p, false
		}
	}
	// Opened before MAIL so that a missing file costs no round trip and
	// leaves no transaction to abort.
	rc, err := open()
	if err != nil {
		t.local("open content: %v", err)
		return nil, p, false
	}
	return rc, p, true
}

// mailLine is the MAIL command for the message, with the parameters the
// server understands.
func (t *txn) mailLine(p params) string {
	line := "MAIL FROM:<" + t.m.From + ">"
	if p.sizeOffered {
		line += " SIZE=" + strconv.FormatInt(p.size, 10)
	}
	if _, ok := t.s.ext["8BITMIME"]; ok && t.m.EightBit {
		line += " BODY=8BITMIME"
	}
	if p.utf8 {
		line += " SMTPUTF8"
	}
	return line
}

// envelope sends MAIL, RCPT and DATA. It reports true when the server
// answered 354 and waits for the content.
func (t *txn) envelope(p params) (bool, *Error) {
	s, m := t.s, t.m
	r, err := s.cmd("mail", s.o.Timeout, t.mailLine(p))
	if err != nil {
		return false, t.ended(err)
	}
	if !t.judge(eMail, 0, false, r) {
		return false, t.unexpected("mail", r)
	}
	if t.mail < 0 {
		return false, t.rset()
	}
	for i, to := range m.To {
		r, err := s.cmd("rcpt", s.o.Timeout, "RCPT TO:<"+to+">")
		if err != nil {
			if r.code != 0 {
				t.res.RcptReplies[i] = r.Reply()
			}
			return false, t.ended(err)
		}
		if !t.judge(eRcpt, i, false, r) {
			return false, t.unexpected("rcpt", r)
		}
		if tooMany(r) {
			// The server's limit: the accepted ones go now, the rest (not
			// offered yet) in a new transaction once this one is done.
			for j := i + 1; j < len(m.To); j++ {
				t.over = append(t.over, j)
			}
			break
		}
	}
	if len(t.accepted) == 0 {
		t.res.Reply = t.lastRefusal.Reply()
		return false, t.rset()
	}
	r, err = s.cmd("data", s.o.Timeout, "DATA")
	if err != nil {
		return false, t.ended(err)
	}
	if !t.judge(eData, 0, false, r) {
		return false, t.unexpected("data", r)
	}
	if r.code == 354 {
		return true, nil
	}
	return false, t.rset()
}

// tooMany tells the recipient-limit replies (RFC 5321 4.5.3.1.10: 452, or
// 552 "for historic reasons") from a 4xx or 5xx about one mailbox, so that
// a full mailbox early in the list does not starve the others.
func tooMany(r reply) bool {
	esc := enhanced(r)
	switch r.code {
	case 452:
		return esc == "" || esc == "4.5.3"
	case 552:
		return esc == "5.5.3"
	}
	return false
}

func enhanced(r reply) string {
	if len(r.lines) == 0 {
		return ""
	}
	f, _, _ := strings.Cut(r.lines[0], " ")
	parts := strings.Split(f, ".")
	if len(parts) != 3 {
		return ""
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil || p == "" {
			return ""
		}
	}
	return f
}

// trackReader remembers a read error so it can be told from a write error
// after io.CopyBuffer.
type trackReader struct {
	r   io.Reader
	err error
}

func (tr *trackReader) Read(p []byte) (int, error) {
	n, err := tr.r.Read(p)
	if err != nil && err != io.EOF {
		tr.err = err
	}
	return n, err
}

// writeContent puts rc's content, dot-stuffed with CRLF line ends and
// without the final dot, into the write buffer, and closes rc. bad is a
// failure to read or close the content (the dot must not follow), werr a
// failed write to the connection; at most one is set.
func (s *Session) writeContent(rc io.ReadCloser) (bad, werr error) {
	src := &trackReader{r: rc}
	enc := &encoder{w: s.bw, stuff: true}
	_, err := io.CopyBuffer(enc, src, s.copyBuf())
	cerr := rc.Close()
	switch {
	case src.err != nil:
		return fmt.Errorf("read content: %w", src.err), nil
	case err != nil:
		return nil, fmt.Errorf("send content: %w", err)
	case cerr != nil:
		return fmt.Errorf("close content: %w", cerr), nil
	}
	if err := enc.finish(); err != nil {
		return nil, fmt.Errorf("send content: %w", err)
	}
	return nil, nil
}

// data streams the content and the final dot and reads the verdict.
func (t *txn) data(rc io.ReadCloser) *Error {
	s := t.s
	if bad, werr := s.writeContent(rc); bad != nil {
		return t.abortBody(bad)
	} else if werr != nil {
		return t.ended(s.failure("body", werr))
	}
	// Everything up to and including the dot must reach the connection for
	// the server to see a complete message; fewer octets written means it
	// cannot have accepted it.
	// A reply that came while the body was written would be taken as the
	// verdict on the dot: give up before the dot, so the message stays.
	if err := s.inStep("dot"); err != nil {
		return t.ended(err)
	}
	target := s.dc.total() + int64(s.bw.Buffered()) + 3
	s.trace("C", ".")
	_, err := s.bw.WriteString(".\r\n")
	if err == nil {
		err = s.bw.Flush()
	}
	if err != nil {
		e := s.failure("dot", fmt.Errorf("send final dot: %w", err))
		t.res.Uncertain = s.dc.total() >= target
		return t.ended(e)
	}
	r, err := s.read("dot", s.o.DataTimeout)
	if err != nil {
		// A 421 is an answer; anything else leaves the outcome unknown.
		t.res.Uncertain = r.code != 421
		return t.ended(err)
	}
	if !t.judge(eDot, 0, false, r) {
		return t.unexpected("dot", r)
	}
	return nil
}

// abortBody gives up on content that could not be read in full. The dot
// must never follow partial content, and SMTP has no way to cancel DATA,
// so the connection is dropped: the server discards the message.
func (t *txn) abortBody(err error) *Error {
	e := t.s.failure("body", err)
	if cerr := t.s.raw.Close(); cerr != nil {
		e.Err = errors.Join(e.Err, fmt.Errorf("close connection: %w", cerr))
	}
	t.s.done = true
	return t.ended(e)
}
