package sender

import (
	"bytes"
	"fmt"
	"io"
)

// byteWriter is what the body encoder needs; *bufio.Writer and counter
// both satisfy it.
type byteWriter interface {
	io.Writer
	WriteByte(c byte) error
}

// encoder turns content with LF or CRLF line ends into SMTP DATA form:
// every bare LF becomes CRLF and, when stuff is set, a line starting with
// "." gets a second one (RFC 5321 4.5.2). Every other octet passes through
// untouched, so NUL, 8-bit octets, bare CR and long lines survive.
// It keeps only two bits of state, so memory does not grow with the body.
type encoder struct {
	w      byteWriter
	stuff  bool
	midLn  bool // some octets of the current line were written
	prevCR bool // the last octet written was a CR
}

func (e *encoder) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if !e.midLn && e.stuff && p[0] == '.' {
			if err := e.w.WriteByte('.'); err != nil {
				return 0, err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := e.w.Write(p); err != nil {
				return 0, err
			}
			e.midLn = true
			e.prevCR = p[len(p)-1] == '\r'
			return n, nil
		}
		if _, err := e.w.Write(p[:i]); err != nil {
			return 0, err
		}
		cr := e.prevCR
		if i > 0 {
			cr = p[i-1] == '\r'
		}
		if !cr {
			if err := e.w.WriteByte('\r'); err != nil {
				return 0, err
			}
		}
		if err := e.w.WriteByte('\n'); err != nil {
			return 0, err
		}
		e.midLn, e.prevCR = false, false
		p = p[i+1:]
	}
	return n, nil
}

// finish ends an unterminated last line, so that the terminating "." is
// on a line of its own. A trailing bare CR is content and stays; the CRLF
// comes after it.
func (e *encoder) finish() error {
	if !e.midLn {
		return nil
	}
	if err := e.w.WriteByte('\r'); err != nil {
		return err
	}
	if err := e.w.WriteByte('\n'); err != nil {
		return err
	}
	e.midLn, e.prevCR = false, false
	return nil
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
func (c *counter) WriteByte(byte) error        { c.n++; return nil }

// wireSize opens the content once more and counts its octets as RFC 1870
// defines the message size: with CRLF line ends, without dot-stuffing and
// without the terminating dot. Counting exactly costs one extra read of the
// content but never over- or under-states the size.
// buf is the copy buffer, reused across messages (nil: one is made).
func wireSize(open func() (io.ReadCloser, error), buf []byte) (int64, error) {
	if buf == nil {
		buf = make([]byte, copyBufSize)
	}
	rc, err := open()
	if err != nil {
		return 0, fmt.Errorf("open content: %w", err)
	}
	c := &counter{}
	e := &encoder{w: c}
	_, err = io.CopyBuffer(e, onlyReader{rc}, buf)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("read content: %w", err)
	}
	if err := e.finish(); err != nil {
		return 0, err
	}
	return c.n, nil
}

// copyBufSize is the buffer content is read through, once per session.
const copyBufSize = 32 << 10

// onlyReader hides WriterTo so io.CopyBuffer uses its own bounded buffer
// and read errors stay apart from write errors.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
