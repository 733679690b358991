//go:build e2e

package e2e

import (
	"errors"
	"io"
	"net"
	"sync/atomic"

	"github.com/emersion/go-smtp"
)

// go-smtp 0.25.1's server copies a BDAT chunk with io.Copy from a
// LimitReader, which stops quietly at EOF: a client killed inside a
// "BDAT n LAST" chunk leaves a truncated message that the server hands
// to the backend as complete. Exim and Postfix read the stated size or
// discard the message. The test servers wrap their listener in eofListener
// and drop a message whose connection ended before it was answered, so
// that they judge a killed client as a real receiver does.

type eofListener struct{ net.Listener }

func (l eofListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &eofConn{Conn: c}, nil
}

// eofConn remembers that a read hit the end of the stream or failed.
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

// errTruncated: the client went away while its message was being read.
var errTruncated = errors.New("connection ended inside the message; discarded as a real receiver would")

// readWhole reads a message's content and fails if the connection ended
// while it was read (see eofConn). c is the session's connection.
func readWhole(c *smtp.Conn, r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if ec, ok := c.Conn().(*eofConn); ok && ec.ended.Load() {
		return nil, errTruncated
	}
	return b, nil
}
