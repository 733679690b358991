package sender

import (
	"bufio"
	"bytes"
	"sync"
	"time"
)

// replyReader reads replies on its own goroutine, one per registered
// command, so that a server writing replies never waits for the writer:
// without it a long group (many RCPTs, chunks in flight) can fill both
// directions' buffers and deadlock (RFC 2920 section 3.1). It reads only
// replies that a written command asks for, each under that command's
// timeout counted from when the reader starts waiting for it.
type replyReader struct {
	s     *Session
	mu    sync.Mutex
	cond  *sync.Cond
	waits []time.Duration // one per registered command not yet answered
	got   []reply         // read, not yet taken by the writer
	err   error           // the read that ended the reader
	stop  bool
	grace time.Time // when non-zero, no read waits beyond it
	ready chan struct{}
	done  chan struct{}
}

func newReplyReader(s *Session) *replyReader {
	r := &replyReader{s: s, ready: make(chan struct{}, 1), done: make(chan struct{})}
	r.cond = sync.NewCond(&r.mu)
	go r.run()
	return r
}

func (r *replyReader) run() {
	defer close(r.done)
	for {
		r.mu.Lock()
		for len(r.waits) == 0 && !r.stop {
			r.cond.Wait()
		}
		if len(r.waits) == 0 {
			r.mu.Unlock()
			return
		}
		var err error
		if replyBuffered(r.s.br) {
			// The reply is here already: no read waits for it, so no
			// deadline is due. Resetting the connection's timer for
			// each of the replies that arrive together was a tenth of
			// the reader's time. A connection stopped meanwhile stops
			// here as it would at the deadline.
			err = r.s.dc.cancelled()
		} else {
			until := time.Now().Add(r.waits[0])
			if !r.grace.IsZero() && r.grace.Before(until) {
				until = r.grace
			}
			// Under the lock, so that shutdown's shorter deadline is
			// never overwritten by a longer one.
			err = r.s.dc.setReadDeadlineAt(until)
		}
		r.mu.Unlock()
		var rep reply
		if err == nil {
			rep, err = readReply(r.s.br)
		}
		if err == nil {
			r.s.traceReply(rep)
		}
		r.mu.Lock()
		if err != nil {
			r.err = err
		} else {
			r.waits = r.waits[1:]
			r.got = append(r.got, rep)
		}
		r.mu.Unlock()
		select {
		case r.ready <- struct{}{}:
		default:
		}
		if err != nil || rep.code == 421 {
			return
		}
	}
}

func (r *replyReader) add(x []expect, o Options) {
	r.mu.Lock()
	for _, e := range x {
		r.waits = append(r.waits, e.wait(o))
	}
	r.cond.Signal()
	r.mu.Unlock()
}

// limit makes every read end by the grace, and the connection stop
// altogether then (a writer stuck in a write included): after a cancelled
// context the replies already due are read, but not for long.
func (r *replyReader) limit(grace time.Duration, cause error) {
	at := time.Now().Add(grace)
	r.mu.Lock()
	if r.grace.IsZero() || at.Before(r.grace) {
		r.grace = at
	}
	// An error only means the connection is gone, which the read sees.
	_ = r.s.dc.setReadDeadlineAt(r.grace)
	r.mu.Unlock()
	time.AfterFunc(grace, func() { r.s.dc.cancel(cause) })
}

// shutdown ends the reader once the registered replies are read; with a
// grace, a reader still waiting gives up by then.
func (r *replyReader) shutdown(grace time.Duration) {
	r.mu.Lock()
	r.stop = true
	if len(r.waits) > 0 {
		// A read may be waiting under a longer deadline: cut it, now or
		// after the grace. An error here only means the connection is
		// gone, which the read sees too.
		r.grace = time.Unix(1, 0)
		if grace > 0 {
			r.grace = time.Now().Add(grace)
		}
		_ = r.s.dc.setReadDeadlineAt(r.grace)
	}
	r.cond.Signal()
	r.mu.Unlock()
	<-r.done
}

// replyBuffered reports whether br holds a whole reply (its last line
// included), which the next readReply takes without waiting for input.
func replyBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered()) // never more than is buffered: no error
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return false
		}
		if i < 4 || b[3] != '-' {
			return true // a last line, or one readReply rejects at once
		}
		b = b[i+1:]
	}
}
