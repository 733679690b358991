package bsmtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Unstuff turns a data section (Message.DataStart to DataEnd) into the
// message content: it drops exactly one leading '.' from each line and
// keeps every other octet, line ends included. It does not look for a
// terminator; the section must not contain one.
func Unstuff(stuffed io.Reader) io.Reader {
	n := bufSize
	if sz, ok := stuffed.(interface{ Size() int64 }); ok && sz.Size() < int64(n) {
		// A small message (the common case) gets a buffer its size: a
		// 64 KiB buffer made and cleared for every 4 KiB message was a
		// third of a flush's CPU time.
		n = max(int(sz.Size())+1, 16)
	}
	return &unstuffer{r: bufio.NewReaderSize(stuffed, n), bol: true}
}

// UnstuffBytes is Unstuff for a data section held in memory: the content,
// in a new slice.
func UnstuffBytes(stuffed []byte) []byte {
	return AppendUnstuffed(make([]byte, 0, len(stuffed)), stuffed)
}

// AppendUnstuffed appends the content of a data section held in memory to
// dst, as Unstuff would give it.
func AppendUnstuffed(dst, stuffed []byte) []byte {
	if len(stuffed) > 0 && stuffed[0] == '.' {
		stuffed = stuffed[1:]
	}
	// From one stuffed line start to the next, not line by line: most
	// lines have no dot to drop.
	for {
		i := bytes.Index(stuffed, lfDot)
		if i < 0 {
			return append(dst, stuffed...)
		}
		dst = append(dst, stuffed[:i+1]...)
		stuffed = stuffed[i+2:]
	}
}

var lfDot = []byte("\n.")

type unstuffer struct {
	r   *bufio.Reader
	bol bool // the next octet starts a line
}

func (u *unstuffer) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		// Block for more input only while nothing has been produced.
		if u.r.Buffered() == 0 && n > 0 {
			break
		}
		if u.bol {
			c, err := u.r.ReadByte()
			if err != nil {
				return n, err
			}
			u.bol = false
			if c != '.' {
				p[n] = c
				n++
				u.bol = c == '\n'
			}
			continue
		}
		view, err := u.r.Peek(u.r.Buffered())
		if err != nil {
			return n, err
		}
		if len(view) == 0 {
			// Nothing buffered and nothing produced: fill.
			if _, err := u.r.Peek(1); err != nil {
				return n, err
			}
			continue
		}
		k := min(len(view), len(p)-n)
		if i := bytes.IndexByte(view[:k], '\n'); i >= 0 {
			k = i + 1
			u.bol = true
		}
		copy(p[n:], view[:k])
		if _, err := u.r.Discard(k); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// Stuff writes content as a data section for a transaction whose line ends
// are CRLF if crlf is set and LF otherwise: it adds one '.' before every line
// that starts with '.'. Every line of content, the last one included, must
// end in that line end, with no CR before an LF line end; otherwise Stuff
// fails, having written an unknown part of the section.
func Stuff(w io.Writer, content io.Reader, crlf bool) error {
	bw := bufio.NewWriterSize(w, bufSize)
	if err := copyData(bw, content, crlf, true); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("bsmtp: write: %w", err)
	}
	return nil
}

// errData marks content that cannot be framed as one transaction.
var errData = errors.New("bsmtp: data cannot be written as a BSMTP message")

// copyData copies src to dst line by line, checking every line end against
// the transaction's style so that what is written reads back as exactly
// one message. With stuff set it adds the one leading '.'; without it src
// must already be stuffed and must not hold a "." line.
func copyData(dst *bufio.Writer, src io.Reader, crlf, stuff bool) error {
	br := bufio.NewReaderSize(src, bufSize)
	for line := 1; ; line++ {
		var n int
		var first, last byte
		for {
			b, err := br.ReadSlice('\n')
			if n == 0 && len(b) > 0 {
				first = b[0]
				if stuff && first == '.' {
					if err := dst.WriteByte('.'); err != nil {
						return fmt.Errorf("bsmtp: write: %w", err)
					}
				}
			}
			if _, werr := dst.Write(b); werr != nil {
				return fmt.Errorf("bsmtp: write: %w", werr)
			}
			switch {
			case err == nil:
				prev := last
				if len(b) >= 2 {
					prev = b[len(b)-2]
				}
				n += len(b)
				isCRLF := n >= 2 && prev == '\r'
				switch {
				case crlf && !isCRLF:
					return fmt.Errorf("%w: line %d ends in a bare LF, want CRLF", errData, line)
				case !crlf && isCRLF:
					return fmt.Errorf("%w: line %d ends in CRLF, want LF", errData, line)
				case !stuff && first == '.' && (n == 2 && !crlf || n == 3 && crlf):
					return fmt.Errorf("%w: line %d is a \".\" line inside the data", errData, line)
				}
			case err == io.EOF:
				if n+len(b) == 0 {
					return nil
				}
				return fmt.Errorf("%w: last line %d has no line end", errData, line)
			case errors.Is(err, bufio.ErrBufferFull):
				n += len(b)
				last = b[len(b)-1]
				continue
			default:
				return fmt.Errorf("bsmtp: read data: %w", err)
			}
			break
		}
	}
}

// Writer writes BSMTP transactions in exactly the form Exim writes them:
// "MAIL FROM:<...>", "RCPT TO:<...>" lines, "DATA", the stuffed data and
// ".". After a failed call the output holds a partial transaction, and every
// later call returns the same error.
type Writer struct {
	bw  *bufio.Writer
	err error
}

// NewWriter returns a Writer that writes to w. Each call writes one whole
// transaction through to w before it returns.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, bufSize)}
}

// WriteStuffed writes a transaction whose data section is copied verbatim
// from stuffed, such as a Message's DataStart..DataEnd, so that the octets
// of an Exim message are kept exactly. The section is checked as it is
// copied: its line ends must all be CRLF if crlf is set and LF otherwise,
// and it must hold no "." line.
func (w *Writer) WriteStuffed(env Envelope, stuffed io.Reader, crlf bool) error {
	return w.write(env, stuffed, crlf, false)
}

// Write writes a transaction whose data is content, not yet stuffed (what
// Unstuff returns); see Stuff for what content must look like.
func (w *Writer) Write(env Envelope, content io.Reader, crlf bool) error {
	return w.write(env, content, crlf, true)
}

func (w *Writer) write(env Envelope, data io.Reader, crlf, stuff bool) error {
	if w.err != nil {
		return w.err
	}
	if err := checkEnvelope(env); err != nil {
		// Nothing is written yet, so the Writer stays usable.
		return err
	}
	eol := "\n"
	if crlf {
		eol = "\r\n"
	}
	w.err = w.writeAll(env, data, eol, stuff)
	return w.err
}

func (w *Writer) writeAll(env Envelope, data io.Reader, eol string, stuff bool) error {
	// The bufio.Writer's errors are sticky, so checking the last write
	// and the flush covers every earlier WriteString.
	_, _ = w.bw.WriteString("MAIL FROM:<" + env.From + ">" + eol)
	for _, a := range env.To {
		_, _ = w.bw.WriteString("RCPT TO:<" + a + ">" + eol)
	}
	if _, err := w.bw.WriteString("DATA" + eol); err != nil {
		return fmt.Errorf("bsmtp: write: %w", err)
	}
	if err := copyData(w.bw, data, eol == "\r\n", stuff); err != nil {
		return err
	}
	if _, err := w.bw.WriteString("." + eol); err != nil {
		return fmt.Errorf("bsmtp: write: %w", err)
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("bsmtp: write: %w", err)
	}
	return nil
}

// checkEnvelope applies the reader's rules, so that whatever is written can
// be read back.
func checkEnvelope(env Envelope) error {
	if env.From != "" {
		if err := ValidAddress(env.From); err != nil {
			return fmt.Errorf("bsmtp: sender: %w", err)
		}
	}
	switch {
	case len(env.To) == 0:
		return errors.New("bsmtp: no recipients")
	case len(env.To) > MaxRecipients:
		return fmt.Errorf("bsmtp: %d recipients, at most %d allowed", len(env.To), MaxRecipients)
	}
	for i, a := range env.To {
		if err := ValidAddress(a); err != nil {
			return fmt.Errorf("bsmtp: recipient %d: %w", i+1, err)
		}
	}
	return nil
}
