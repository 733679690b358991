package sender

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// DefaultMaxInflight is the message window when Options.MaxInflight is 0,
// and max_inflight when neither the file nor the command line sets one
// (config uses this one): enough to keep a 600 ms satellite link busy with
// small messages (32 already bring a CHUNKING batch at 100 ms round trips
// well under 0.1 round trip per message), small enough that a SIGKILL
// duplicates at most a few dozen.
const DefaultMaxInflight = 32

const (
	// maxInflightBytes bounds the content written and not yet answered.
	// A new message or chunk waits while more is outstanding (one message
	// or chunk always goes). It keeps a failure from being found out only
	// after megabytes more were sent, and caps what sits in socket
	// buffers, where the reply timeout cannot see it: 2 MiB per round trip
	// is 20 MB/s at 100 ms, more than the links this tool is for.
	maxInflightBytes = 2 << 20
	// drainGrace bounds how long replies already due are still read once
	// the session cannot go on (a write failed) or must stop (the context
	// was cancelled): each one read is a message not sent twice.
	drainGrace = 2 * time.Second
	// chunkSize is the largest BDAT chunk. A chunk is assembled in memory
	// because BDAT states its size first; 64 KiB keeps memory flat and
	// the per-chunk reply overhead under 0.1%.
	chunkSize = 64 << 10
)

// mode is how a session sends: chosen once from the EHLO reply.
type mode int

const (
	lockStep mode = iota
	pipelined
	chunked
)

func (s *Session) mode() mode {
	if _, ok := s.ext["PIPELINING"]; !ok || s.o.NoPipelining {
		return lockStep
	}
	if _, ok := s.ext["CHUNKING"]; ok && !s.o.NoChunking {
		return chunked
	}
	return pipelined
}

// ekind is the command a reply answers.
type ekind uint8

const (
	eRset ekind = iota
	eMail
	eRcpt
	eData
	eDot // the final dot, or a lone dot after a 354 nobody wanted
	eBdat
)

func (k ekind) op() string {
	return [...]string{"rset", "mail", "rcpt", "data", "dot", "bdat"}[k]
}

// expect is a command written and not yet answered.
type expect struct {
	kind ekind
	last bool  // BDAT ... LAST
	i    int   // recipient index for RCPT
	n    int64 // content octets the reply acknowledges (BDAT)
	end  int64 // wire offset just past the command (and its chunk)
	t    *ptx  // nil for RSET
}

func (x expect) wait(o Options) time.Duration {
	if x.kind == eDot || (x.kind == eBdat && x.last) {
		return o.DataTimeout
	}
	return o.Timeout
}

// ptx is one message in a pipelined session.
type ptx struct {
	txn
	open        bool // the writer may still send commands for it
	outstanding int  // commands written and not yet answered
	rcptsRead   int
	dataRead    bool  // DATA answered
	data354     bool  // DATA answered 354
	lone        bool  // a lone dot ended an unwanted 354: nothing delivered
	finalRead   bool  // the dot or BDAT LAST was answered
	clean       bool  // the transaction is known closed: no RSET needed
	dotEnd      int64 // wire offset just past the final dot or LAST chunk
	abort       string
	sealed      bool
	// A transaction for the recipients over the server's limit (see
	// txn.rest) is a child: it reports into its parent, through pidx.
	parent  *ptx
	pidx    []int
	kids    int  // children not yet merged
	spawned bool // rest was looked at
}

func (t *ptx) final() bool { return !t.open && t.outstanding == 0 && t.kids == 0 }

// envelopeRead: the replies to MAIL and every RCPT are in, so whether any
// recipient was taken is known.
func (t *ptx) envelopeRead() bool { return t.mail < 0 || t.rcptsRead == len(t.m.To) }

// doomed: nothing more this transaction could deliver.
func (t *ptx) doomed() bool {
	return t.mail < 0 || t.failed || (t.rcptsRead == len(t.m.To) && len(t.accepted) == 0)
}

// mayDeliver: with what was read, the server could have taken the message
// had it seen the end of the content.
func (t *ptx) mayDeliver() bool {
	return t.mail >= 0 && !t.failed && !t.lone && (t.rcptsRead < len(t.m.To) || len(t.accepted) > 0)
}

// seal fills in the reason once every reply is in.
func (t *ptx) seal() {
	if t.sealed {
		return
	}
	t.sealed = true
	switch {
	case t.mail < 0:
	case t.mail > 0 && t.rcptsRead == len(t.m.To) && len(t.accepted) == 0:
		t.res.Reply = t.lastRefusal.Reply()
	case t.abort != "" && !t.failed:
		t.res.Reply = Reply{Text: Sanitize(t.abort)}
	}
}

// engine runs one Send over a pipelining server.
type engine struct {
	ctx    context.Context
	s      *Session
	chunk  bool
	window int
	rd     *replyReader
	report func(*Message, Result) error

	q        []*ptx   // taken from next, not yet reported, in order
	cont     []*ptx   // children to write before the next message
	sub      []*ptx   // children written, not yet merged, oldest first
	outq     []expect // registered with the reader, in order
	pend     []expect // written (perhaps only buffered), not registered
	prev     *ptx     // the last transaction put on the wire
	bytes    int64    // content octets written and not yet answered
	spare    []reply
	waitedAt int64 // octets written when the writer last waited

	ended    bool   // end has judged every message left
	rerr     error  // report failed: take nothing more, report nothing more
	werr     *Error // a write failed; replies are still read for a moment
	dead     *Error // the session is over
	answered bool   // dead by a 421: later commands were not processed

	// chunk assembly, reused across messages
	cbuf chunkBuf
	src  *bufio.Reader
}

func (e *engine) dying() bool { return e.dead != nil || e.werr != nil }

// stopping: no new content may go, the session being over or the caller
// having stopped (report failed, context cancelled).
func (e *engine) stopping() bool { return e.dying() || e.rerr != nil || e.ctx.Err() != nil }

// sendPipelined is Send for servers that offer PIPELINING. The calling
// goroutine writes commands, and calls next and report; a second one reads
// replies. Both stay bounded: at most window messages and about
// maxInflightBytes of content are unanswered at any time.
func (s *Session) sendPipelined(ctx context.Context, next func() (*Message, error), report func(*Message, Result) error) error {
	window := s.o.MaxInflight
	if window <= 0 {
		window = DefaultMaxInflight
	}
	e := &engine{ctx: ctx, s: s, chunk: s.mode() == chunked, window: window, report: report}
	// A reply already waiting answers nothing this Send will write.
	if err := s.inStep("mail"); err != nil {
		return err
	}
	e.rd = newReplyReader(s)
	// A cancelled context (SIGTERM) takes no new message and sends no more
	// content, but reads, for a moment, the replies to what already left.
	grace := min(s.o.Timeout, drainGrace)
	stop := context.AfterFunc(ctx, func() { e.rd.limit(grace, context.Cause(ctx)) })
	defer stop()
	var stopErr error // why no more messages were taken
	eof := false
	for !e.dying() && e.rerr == nil {
		if err := ctx.Err(); err != nil {
			stopErr = err
			break
		}
		if len(e.cont) > 0 {
			// A message's recipients over the server's limit go before
			// any new message.
			c := e.cont[0]
			e.cont = e.cont[1:]
			e.sub = append(e.sub, c)
			e.start(c)
			continue
		}
		if eof || len(e.q) >= e.window {
			if len(e.q) == 0 || !e.wait() {
				break
			}
			continue
		}
		m, err := next()
		if errors.Is(err, io.EOF) {
			eof = true
			continue
		}
		if err != nil {
			stopErr = fmt.Errorf("next message: %w", err)
			break
		}
		if m == nil {
			stopErr = errors.New("next message: nil message without error")
			break
		}
		t := &ptx{txn: *s.newTxn(m)}
		e.q = append(e.q, t)
		e.start(t)
	}
	return e.end(ctx, stopErr)
}

// start sends one transaction: checks, then the commands and content.
func (e *engine) start(t *ptx) {
	rc, p, ok := t.prepare()
	if !ok {
		t.sealed = true
		e.settle()
		return
	}
	t.open = true
	if e.chunk {
		e.sendChunked(t, rc, p)
	} else {
		e.sendData(t, rc, p)
	}
	e.settle()
}

// end waits for every reply, reports what is left and says how Send ends.
func (e *engine) end(ctx context.Context, stopErr error) error {
	s := e.s
	if !e.dying() {
		for len(e.outq) > 0 || len(e.pend) > 0 {
			if !e.wait() {
				break
			}
		}
	}
	if e.werr != nil && e.dead == nil {
		// Replies to what did go out may still be there: each one read
		// is an outcome known instead of a message left uncertain.
		e.register()
		e.rd.shutdown(min(s.o.Timeout, drainGrace))
		e.take()
		if e.dead == nil {
			e.fail(e.werr, false)
		}
	} else {
		e.rd.shutdown(0)
	}
	if e.dead != nil {
		for _, t := range e.q {
			e.judgeDead(t)
		}
		// Children last, each judged on its own before it joins its
		// parent, newest first: a parent's confirmed recipients stay Sent
		// whatever became of the rest.
		kids := append(e.sub, e.cont...)
		for _, c := range kids {
			e.judgeDead(c)
		}
		for i := len(kids) - 1; i >= 0; i-- {
			c := kids[i]
			c.parent.merge(c.res, c.pidx)
			c.parent.kids--
		}
		e.sub, e.cont = nil, nil
	} else if e.prev != nil {
		s.needRset = !e.prev.clean
	}
	e.ended = true
	e.settle()
	switch {
	case e.rerr != nil && e.dead != nil:
		return fmt.Errorf("report (session also failed: %v): %w", e.dead, e.rerr)
	case e.rerr != nil:
		return fmt.Errorf("report: %w", e.rerr)
	case e.dead != nil:
		return e.dead
	case stopErr != nil && ctx.Err() != nil && errors.Is(stopErr, ctx.Err()):
		s.dead = stopErr
		return localError("send", stopErr)
	}
	return stopErr
}

// judgeDead fixes the outcome of a transaction the dead session left
// unfinished.
func (e *engine) judgeDead(t *ptx) {
	if t.sealed && t.final() {
		t.leftUnsent()
		return
	}
	if !e.answered && t.dotEnd > 0 && !t.finalRead && e.s.dc.total() >= t.dotEnd && t.mayDeliver() {
		t.res.Uncertain = true
	}
	if t.res.Uncertain {
		// Whatever the replies said, the message may now be delivered to
		// every recipient that was not refused.
		for i, st := range t.res.Rcpts {
			if st == Sent {
				t.res.Rcpts[i] = Deferred
			}
		}
	}
	t.res.Reply = e.dead.Reply
	t.markUnsent()
	t.leftUnsent()
	t.open, t.outstanding, t.sealed, t.spawned = false, 0, true, true
}

// leftUnsent marks the recipients the server's limit left out of t as
// RcptUnsent when the dead session never gave them their own transaction.
func (t *ptx) leftUnsent() {
	if t.spawned {
		return // a child carries them, and reports for itself
	}
	t.spawned = true
	for _, i := range t.overUnsent() {
		t.res.unsentRcpt(i)
	}
}

// settle reports, in order, every message whose outcome is final. Once
// the session died, only end knows which outcomes stand.
func (e *engine) settle() {
	if e.dead != nil && !e.ended {
		return
	}
	e.mergeSubs()
	for len(e.q) > 0 && e.rerr == nil {
		t := e.q[0]
		if !t.final() || e.spawn(t) {
			return
		}
		t.seal()
		e.q[0] = nil
		e.q = e.q[1:]
		if err := e.report(t.m, t.res); err != nil {
			e.rerr = err
		}
	}
}

// spawn queues a child for t's recipients over the server's limit, once
// t's own replies are all in. It reports whether it did.
func (e *engine) spawn(t *ptx) bool {
	if t.spawned || e.ended || e.stopping() {
		return false
	}
	t.spawned = true
	sub, idx := t.rest()
	if sub == nil {
		return false
	}
	t.kids++
	e.cont = append(e.cont, &ptx{txn: *e.s.newTxn(sub), parent: t, pidx: idx})
	return true
}

// mergeSubs hands every final child's outcome to its parent, newest
// first, so that a grandchild is in before its parent merges.
func (e *engine) mergeSubs() {
	for i := len(e.sub) - 1; i >= 0; i-- {
		c := e.sub[i]
		if !c.final() || e.spawn(c) {
			continue
		}
		c.seal()
		c.parent.merge(c.res, c.pidx)
		c.parent.kids--
		e.sub = append(e.sub[:i], e.sub[i+1:]...)
	}
}

// fail ends the session. answered says the server closed it with a 421,
// so nothing it was sent after that reply was processed.
func (e *engine) fail(err *Error, answered bool) {
	if e.dead != nil {
		return
	}
	e.dead = err
	e.answered = answered
	if e.s.dead == nil {
		e.s.dead = err
	}
}

// write puts a command into the buffer and notes the reply it expects.
func (e *engine) write(x expect, line string) {
	if e.dying() {
		return
	}
	if err := checkLine(line); err != nil {
		// Message fields were checked before anything was written.
		e.fail(localError(x.kind.op(), err), false)
		return
	}
	e.s.trace("C", line)
	_, err := e.s.bw.WriteString(line)
	if err == nil {
		_, err = e.s.bw.WriteString("\r\n")
	}
	if err != nil {
		e.writeFailed(x.kind.op(), err)
		return
	}
	e.expect(x)
}

func (e *engine) expect(x expect) {
	x.end = e.s.dc.total() + int64(e.s.bw.Buffered())
	if x.t != nil {
		x.t.outstanding++
	}
	e.pend = append(e.pend, x)
	e.sync()
}

// sync hands the reader the commands that reached the connection: a reply
// cannot come before its command left, and it must not be waited for
// while the command is still in our buffer.
func (e *engine) sync() {
	if len(e.pend) == 0 || e.pend[0].end > e.s.dc.total() {
		return
	}
	w := e.s.dc.total()
	n := 0
	for n < len(e.pend) && e.pend[n].end <= w {
		n++
	}
	e.rd.add(e.pend[:n], e.s.o)
	e.outq = append(e.outq, e.pend[:n]...)
	e.pend = append(e.pend[:0], e.pend[n:]...)
}

// register hands the reader everything written, sent or not (after a
// failed write, to read what answers there are).
func (e *engine) register() {
	if len(e.pend) == 0 {
		return
	}
	e.rd.add(e.pend, e.s.o)
	e.outq = append(e.outq, e.pend...)
	e.pend = e.pend[:0]
}

func (e *engine) writeFailed(op string, err error) {
	if e.werr == nil {
		e.werr = e.s.failure(op, fmt.Errorf("send: %w", err))
	}
}

func (e *engine) flush() bool {
	if e.dying() {
		return false
	}
	if e.s.bw.Buffered() > 0 {
		if err := e.s.bw.Flush(); err != nil {
			e.writeFailed("send", err)
			return false
		}
	}
	e.sync()
	return true
}

// wait flushes, then blocks until a reply (or the end of the reader)
// arrives and applies what came. false: nothing can come.
func (e *engine) wait() bool {
	if !e.flush() {
		return false
	}
	if len(e.outq) == 0 {
		return false
	}
	if w := e.s.dc.total(); w != e.waitedAt {
		// A turnaround: the writer wrote, and now has to read.
		e.s.stats.waits++
		e.waitedAt = w
	}
	for {
		if e.take() || e.dead != nil {
			break
		}
		<-e.rd.ready
	}
	e.settle()
	return e.dead == nil
}

// poll applies the replies already read, without blocking.
func (e *engine) poll() {
	e.take()
	e.settle()
}

// take applies the replies the reader has, in order, and the reader's
// error after them. It reports whether there was anything.
func (e *engine) take() bool {
	r := e.rd
	r.mu.Lock()
	got := r.got
	r.got = e.spare[:0]
	rerr := r.err
	r.mu.Unlock()
	for _, rep := range got {
		if e.dead != nil {
			break
		}
		e.apply(rep)
	}
	clear(got)
	e.spare = got[:0]
	if e.dead == nil && rerr != nil && len(e.outq) > 0 && e.werr == nil {
		err := fmt.Errorf("read reply: %w", rerr)
		if c := context.Cause(e.ctx); c != nil && e.s.dc.cancelled() == nil {
			err = fmt.Errorf("%w (%v)", c, err) // the grace ran out
		}
		e.fail(e.s.failure(e.outq[0].kind.op(), err), false)
		return true
	}
	return len(got) > 0
}

// apply matches one reply to the oldest unanswered command.
func (e *engine) apply(r reply) {
	x := e.outq[0]
	e.outq = e.outq[1:]
	t := x.t
	if t != nil {
		t.outstanding--
	}
	if x.kind == eBdat {
		e.bytes -= x.n
	}
	if r.code == 421 {
		if t != nil && (x.kind == eDot || (x.kind == eBdat && x.last)) {
			t.finalRead = true // an answer: the server did not take it
		}
		e.fail(replyError(x.kind.op(), r), true)
		return
	}
	switch x.kind {
	case eRset:
		if r.class() != 2 {
			// RFC 5321 4.1.1.5: RSET cannot be refused; a server that does
			// is ending the session (Exim's 554 "too many nonmail
			// commands" after smtp_accept_max_nonmail, then it closes),
			// like a 421: nothing after it was processed, and what was
			// written behind it can go in a new session.
			e.fail(&Error{Op: "rset", Reply: r.Reply(), Err: fmt.Errorf("RSET refused: %d", r.code), Temporary: r.class() != 5}, true)
		}
		return
	case eRcpt:
		t.rcptsRead++
	case eData:
		t.dataRead = true
		t.data354 = r.code == 354
	case eDot:
		t.finalRead = true
		if t.lone {
			// No content: whatever it says, nothing was delivered.
			if t.final() {
				t.seal()
			}
			return
		}
	case eBdat:
		t.finalRead = t.finalRead || x.last
	}
	if !t.judge(x.kind, x.i, x.last, r) {
		e.unexpected(x, r)
		return
	}
	if x.kind == eMail && t.mail < 0 {
		t.clean = true // no transaction was opened
	}
	if x.kind == eBdat && x.last && r.code == 250 && t.mail > 0 && len(t.accepted) > 0 {
		t.clean = true
	}
	if t.final() {
		t.seal()
	}
}

// unexpected handles a reply that has no meaning where it came: the
// dialogue is out of step, so the session ends. The message is not judged
// by replies that may not be its own.
func (e *engine) unexpected(x expect, r reply) {
	t := x.t
	if t != nil {
		for i, st := range t.res.Rcpts {
			if st != Deferred {
				t.res.Rcpts[i] = Deferred
			}
		}
	}
	err := fmt.Errorf("unexpected reply %d to %s", r.code, x.kind.op())
	e.fail(&Error{Op: x.kind.op(), Reply: r.Reply(), Err: err, Temporary: true}, false)
}

// beginTxn writes RSET when the previous transaction may still be open,
// then MAIL and every RCPT.
func (e *engine) beginTxn(t *ptx, p params) {
	s := e.s
	if (e.prev != nil && !e.prev.clean) || (e.prev == nil && s.needRset) {
		e.write(expect{kind: eRset}, "RSET")
	}
	e.prev = t
	e.write(expect{kind: eMail, t: t}, t.mailLine(p))
	for i, to := range t.m.To {
		e.write(expect{kind: eRcpt, t: t, i: i}, "RCPT TO:<"+to+">")
	}
}

// close marks that nothing more will be written for t.
func (e *engine) close(t *ptx) {
	t.open = false
	if t.final() {
		t.seal()
	}
}

// sendData runs one message over PIPELINING without CHUNKING: RSET,
// MAIL, RCPT and DATA go in one group with the previous message's content
// and dot, and the 354 is waited for: one round trip per message.
func (e *engine) sendData(t *ptx, rc io.ReadCloser, p params) {
	s := e.s
	e.beginTxn(t, p)
	e.write(expect{kind: eData, t: t}, "DATA")
	for !t.dataRead && !e.dying() {
		if !e.wait() {
			break
		}
	}
	if e.dying() || !t.data354 {
		// Refused (RSET before the next MAIL), or the session is over.
		_ = rc.Close()
		e.close(t)
		return
	}
	if t.mail < 0 || len(t.accepted) == 0 {
		// RFC 2920 section 3.1: DATA accepted with no valid recipient;
		// a lone dot ends it with no content.
		_ = rc.Close()
		t.lone = true
		e.write(expect{kind: eDot, t: t}, ".")
		t.clean = true
		e.close(t)
		return
	}
	if bad, werr := s.writeContent(rc); bad != nil {
		e.abortData(t, bad)
		return
	} else if werr != nil {
		e.close(t)
		e.writeFailed("body", werr)
		return
	}
	// Nothing is outstanding while the body goes: a reply now answers
	// nothing, and must not be taken as the verdict on the dot.
	if !e.quiet() {
		e.close(t)
		return
	}
	// Set before the write: a write that fails after the last octet left
	// still leaves the outcome open (judged by what reached the conn).
	t.dotEnd = s.dc.total() + int64(s.bw.Buffered()) + 3
	e.write(expect{kind: eDot, t: t}, ".")
	t.clean = true
	e.close(t)
}

// quiet runs the lock-step check for a reply nobody asked for. The reader
// is idle (nothing is registered), so the buffer is the writer's to look at.
func (e *engine) quiet() bool {
	if !e.flush() {
		return false
	}
	r := e.rd
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waits) != 0 || len(r.got) != 0 || r.err != nil {
		e.fail(localError("dot", errors.New("replies pending while the content was sent")), false)
		return false
	}
	if err := e.s.inStep("dot"); err != nil {
		e.fail(asError("dot", err), false)
		return false
	}
	return true
}

// abortData gives up on content that could not be read in full. The dot
// must never follow partial content and DATA cannot be cancelled, so the
// connection is dropped: the server discards the message. Nothing else is
// in flight while content is written without CHUNKING.
func (e *engine) abortData(t *ptx, err error) {
	s := e.s
	fe := s.failure("body", err)
	if cerr := s.raw.Close(); cerr != nil {
		fe.Err = errors.Join(fe.Err, fmt.Errorf("close connection: %w", cerr))
	}
	s.done = true
	e.close(t)
	e.fail(fe, false)
}
