package main

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
)

// proxy forwards TCP connections to target, holding every chunk for half
// the round-trip time in each direction (latency without a bandwidth
// limit: chunks are timed as they are read, not queued behind each other's
// delay), and counts the client's round trips.
//
// A round trip is counted when the client, after being quiet for at least
// a quarter of the RTT, sends again after a server reply reached it: it
// was waiting for that reply. A client that streams does not go quiet
// while replies come back, so only the waits it really makes count (a full
// window, the greeting, QUIT). Lock-step SMTP counts one per command.
type proxy struct {
	addr   string
	target string
	rtt    time.Duration
	l      net.Listener

	mu    sync.Mutex
	stats proxyStats
	wg    sync.WaitGroup
}

type proxyStats struct {
	conns      int
	roundTrips int   // waits of the client for the server, see proxy
	flips      int   // direction changes server->client then client->server, whatever the timing
	c2s, s2c   int64 // octets each way
	mails      int   // MAIL FROM commands seen from the client
	bdats      int   // BDAT commands
	datas      int   // DATA commands
	// badSeq counts 502 and 503 replies: commands the server had to
	// refuse as out of sequence (a BDAT after every RCPT was refused).
	// go-smtp forgives them; Exim counts them and drops the session.
	badSeq int
}

func startProxy(target string, rtt time.Duration) (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: l.Addr().String(), target: target, rtt: rtt, l: l}
	go p.serve()
	return p, nil
}

func (p *proxy) close() error {
	err := p.l.Close()
	p.wg.Wait()
	return err
}

func (p *proxy) snapshot() proxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close() // the client sees the refusal as a closed connection
			continue
		}
		p.mu.Lock()
		p.stats.conns++
		p.mu.Unlock()
		cs := &connState{p: p, lastC2S: time.Now()}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.pump(c, s, cs, true) }()
		go func() { defer p.wg.Done(); p.pump(s, c, cs, false) }()
	}
}

// connState is one proxied connection's timeline.
type connState struct {
	p          *proxy
	mu         sync.Mutex
	lastC2S    time.Time // when the client's last chunk was read
	tail       []byte    // end of the previous client chunk, for commands split across reads
	replyTail  []byte    // the same for the server's chunks
	sawS2C     bool      // a server chunk was delivered since the client's last chunk
	closedOnce sync.Once
}

type chunk struct {
	b  []byte
	at time.Time
}

// pump copies src to dst with the delay. c2s tells the direction.
func (p *proxy) pump(src, dst net.Conn, cs *connState, c2s bool) {
	q := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range q {
			if d := time.Until(ch.at.Add(p.rtt / 2)); d > 0 {
				time.Sleep(d)
			}
			// Marked before the write: once written, the client may
			// answer before this goroutine runs again.
			if !c2s {
				cs.mu.Lock()
				cs.sawS2C = true
				cs.mu.Unlock()
			}
			if _, err := dst.Write(ch.b); err != nil {
				// Drain, so that the reader is never blocked.
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			b := append([]byte(nil), buf[:n]...)
			p.account(cs, b, now, c2s)
			q <- chunk{b, now}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
	// Pass the end of the stream on: half-close where possible.
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite() // the other side may be gone already
	} else {
		_ = dst.Close()
	}
	if c2s {
		return
	}
	cs.closedOnce.Do(func() {
		_ = src.Close()
		_ = dst.Close()
	})
}

var (
	cmdMail = []byte("\nMAIL FROM:")
	cmdBdat = []byte("\nBDAT ")
	cmdData = []byte("\nDATA\r")
)

func (p *proxy) account(cs *connState, b []byte, now time.Time, c2s bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c2s {
		p.stats.s2c += int64(len(b))
		cs.mu.Lock()
		p.stats.badSeq += countSplit(cs.replyTail, b, replyBadSeq...)
		cs.replyTail = nextTail(cs.replyTail, b)
		cs.mu.Unlock()
		return
	}
	p.stats.c2s += int64(len(b))
	cs.mu.Lock()
	if cs.sawS2C {
		p.stats.flips++
		if now.Sub(cs.lastC2S) >= p.rtt/4 {
			p.stats.roundTrips++
		}
	}
	cs.sawS2C = false
	cs.lastC2S = now
	p.stats.mails += countSplit(cs.tail, b, cmdMail)
	p.stats.bdats += countSplit(cs.tail, b, cmdBdat)
	p.stats.datas += countSplit(cs.tail, b, cmdData)
	cs.tail = nextTail(cs.tail, b)
	cs.mu.Unlock()
}

var replyBadSeq = [][]byte{[]byte("\n502 "), []byte("\n503 ")}

// countSplit counts the patterns in b, a chunk of a stream whose previous
// chunk ended in tail (nil at the start). Commands and replies start a
// line, and the stream starts with one too. The tail catches a pattern
// split across reads; what lies wholly inside it was counted then.
func countSplit(tail, b []byte, pats ...[]byte) int {
	prev := tail
	if prev == nil {
		prev = []byte("\n")
	}
	scan := append(append([]byte(nil), prev...), b...)
	n := 0
	for _, pat := range pats {
		n += bytes.Count(scan, pat) - bytes.Count(prev, pat)
	}
	return n
}

// nextTail is the tail to keep after chunk b: longer than any pattern.
func nextTail(tail, b []byte) []byte {
	if tail == nil {
		tail = []byte("\n")
	}
	scan := append(append([]byte(nil), tail...), b...)
	keep := min(len(scan), 16)
	return append([]byte(nil), scan[len(scan)-keep:]...)
}

// rawCopy sends size octets from r over one loopback TCP connection to a
// reader that discards them, and returns how long it took: the yardstick
// for the loopback throughput.
func rawCopy(r io.Reader) (time.Duration, int64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = l.Close() }() // one connection served; nothing buffered
	got := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err
			return
		}
		_, err = io.Copy(io.Discard, c)
		if cerr := c.Close(); err == nil {
			err = cerr
		}
		got <- err
	}()
	start := time.Now()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(c, r)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, n, err
	}
	if err := <-got; err != nil {
		return 0, n, err
	}
	return time.Since(start), n, nil
}
