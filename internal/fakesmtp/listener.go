package fakesmtp

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// listener wraps each accepted connection as the Server's options ask.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if len(l.s.Hide) > 0 {
		c = &capFilter{Conn: c, hide: l.s.Hide}
	}
	if l.s.DiscardTruncated {
		c = &eofConn{Conn: c}
	}
	return c, nil
}

// unwrap returns the connection under the wrappers of this file.
func unwrap(c net.Conn) net.Conn {
	for {
		switch w := c.(type) {
		case *eofConn:
			c = w.Conn
		case *capFilter:
			c = w.Conn
		default:
			return c
		}
	}
}

// OneConn is a listener that hands out one existing connection, then
// blocks until closed: how go-smtp's server is made to serve a
// connection it did not accept (the customer's side after ATRN).
func OneConn(c net.Conn) net.Listener {
	return &oneConn{c: c, closed: make(chan struct{})}
}

type oneConn struct {
	once   sync.Once
	c      net.Conn
	closed chan struct{}
	close  sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.close.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

// eofConn remembers that a read hit the end of the stream or failed
// (DiscardTruncated).
type eofConn struct {
	net.Conn
	ended atomic.Bool
}

func (c *eofConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended.Store(true)
	}
	return n, err
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
		if f := strings.Fields(kw); len(f) > 0 && slices.Contains(c.hide, f[0]) {
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
