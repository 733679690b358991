package sender

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Reply lines are short by RFC 5321 (512 octets); the caps only bound what a
// hostile or broken server can make us hold.
const (
	maxReplyLine  = 4096
	maxReplyLines = 128
)

// deadlineConn gives every Write its own deadline, because a peer that stops
// reading would otherwise block a body write forever. Reads get theirs from
// readReply, which knows whether it waits for a command or the final dot.
//
// A cancelled context is turned into a deadline in the past; the mutex makes
// sure a later per-operation deadline cannot undo it.
type deadlineConn struct {
	c       net.Conn
	timeout time.Duration

	mu      sync.Mutex
	cause   error // non-nil once the context was cancelled
	written int64 // octets accepted by c.Write, to tell whether the dot left
}

func (d *deadlineConn) Read(p []byte) (int, error) { return d.c.Read(p) }

func (d *deadlineConn) Write(p []byte) (int, error) {
	d.mu.Lock()
	if d.cause != nil {
		d.mu.Unlock()
		return 0, d.cause
	}
	if err := d.c.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		d.mu.Unlock()
		return 0, fmt.Errorf("set write deadline: %w", err)
	}
	d.mu.Unlock()
	n, err := d.c.Write(p)
	d.mu.Lock()
	d.written += int64(n)
	d.mu.Unlock()
	return n, err
}

func (d *deadlineConn) setReadDeadline(t time.Duration) error {
	return d.setReadDeadlineAt(time.Now().Add(t))
}

func (d *deadlineConn) setReadDeadlineAt(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cause != nil {
		return d.cause
	}
	if err := d.c.SetReadDeadline(t); err != nil {
		return fmt.Errorf("set read deadline: %w", err)
	}
	return nil
}

func (d *deadlineConn) cancel(cause error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cause == nil {
		d.cause = cause
	}
	// Unblocks whatever is in flight now; the error it returns is then
	// replaced by cause in failure().
	_ = d.c.SetDeadline(time.Unix(1, 0))
}

func (d *deadlineConn) cancelled() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cause
}

func (d *deadlineConn) total() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.written
}

// reply is one parsed server reply. lines keeps the text of each line
// unsanitised (EHLO keywords, SASL challenges); Reply() is for reports.
type reply struct {
	code  int
	lines []string
}

func (r reply) Reply() Reply {
	return Reply{Code: r.code, Text: Sanitize(strings.Join(r.lines, " "))}
}

func (r reply) class() int { return r.code / 100 }

// readReply reads one possibly multi-line reply. Every line must carry the
// same code; anything else means the stream is out of step and the session
// cannot continue.
func readReply(br *bufio.Reader) (reply, error) {
	var r reply
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return r, errors.New("reply line too long")
		}
		if err != nil {
			return r, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		code, more, text, perr := parseReplyLine(line)
		if perr != nil {
			return r, perr
		}
		if r.code != 0 && code != r.code {
			return r, fmt.Errorf("reply code changed from %d to %d within one reply", r.code, code)
		}
		r.code = code
		if len(r.lines) == maxReplyLines {
			return r, errors.New("reply has too many lines")
		}
		r.lines = append(r.lines, text)
		if !more {
			return r, nil
		}
	}
}

func parseReplyLine(line []byte) (code int, more bool, text string, err error) {
	if len(line) < 3 {
		return 0, false, "", fmt.Errorf("malformed reply line %q", Sanitize(string(line)))
	}
	n, err := strconv.Atoi(string(line[:3]))
	if err != nil || n < 200 || n > 599 || line[0] < '0' || line[0] > '9' {
		return 0, false, "", fmt.Errorf("malformed reply line %q", Sanitize(string(line)))
	}
	if len(line) == 3 {
		return n, false, "", nil
	}
	switch line[3] {
	case ' ':
		return n, false, string(line[4:]), nil
	case '-':
		return n, true, string(line[4:]), nil
	}
	return 0, false, "", fmt.Errorf("malformed reply line %q", Sanitize(string(line)))
}

// Sanitize makes remote text safe for one log line: octets outside printable
// ASCII become '?', and the result is at most 300 octets.
func Sanitize(s string) string {
	const limit = 300
	if len(s) > limit {
		s = s[:limit]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// checkLine refuses anything that would let data end a command early or
// smuggle a second one.
func checkLine(s string) error {
	if strings.ContainsAny(s, "\r\n\x00") {
		return fmt.Errorf("command contains CR, LF or NUL: %q", Sanitize(s))
	}
	return nil
}

// checkAddr is the caller's validation done again: no controls, no angle
// brackets, nothing that could break out of the MAIL/RCPT syntax.
func checkAddr(a string) error {
	for i := 0; i < len(a); i++ {
		c := a[i]
		if c < 0x20 || c == 0x7f || c == '<' || c == '>' {
			return fmt.Errorf("address %q contains a forbidden octet", Sanitize(a))
		}
	}
	return nil
}

func nonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}
