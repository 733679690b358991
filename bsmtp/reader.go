// Package bsmtp reads and writes the batched SMTP format Exim's appendfile
// transport writes with use_bsmtp: per message a "MAIL FROM:<...>" line, one
// "RCPT TO:<...>" line per recipient, "DATA", the dot-stuffed message and a
// line holding only ".".
//
// The reader is strict and fails closed: anything it cannot read with
// certainty becomes a damaged region that is reported, never guessed at, and
// a region that runs off the end of the input is marked incomplete because
// it may be a write still in progress. It streams: memory does not grow with
// the size of a message or of a batch, so it never holds message data; the
// caller reads a message's data section by offset and passes it to Unstuff.
//
// The package does no file or network I/O of its own.
package bsmtp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// Envelope is one transaction's envelope. Addresses are stored without the
// angle brackets; From "" is the null reverse-path.
type Envelope struct {
	From string
	To   []string
}

// Entry is one region of the input: a complete message, or damage. The
// entries Next returns are contiguous: each Start is the previous End, the
// first Start is the reader's base offset, and after io.EOF the last End is
// the end of the input, so every input octet belongs to exactly one entry.
type Entry struct {
	Start, End int64    // byte range [Start,End) in the input; End is just past the "." line's EOL
	Line       int      // 1-based line number where the entry starts
	Msg        *Message // nil for damage
	Damage     string   // why the region is not a valid message (Msg == nil)
	// Incomplete marks damage that runs to the end of the input without a
	// terminating "." line, or ends in a line without a line end: a partial
	// write or a truncated tail, which may still be completed by its writer.
	Incomplete bool
}

// Message is a well-formed transaction.
type Message struct {
	Envelope
	// Skipped holds the lines (without line end) before MAIL that were
	// skipped as harmless session commands: HELO, EHLO, RSET, NOOP or QUIT.
	// Exim writes them only from a message_prefix. They lie inside
	// [Start, DataStart) of the entry.
	Skipped            []string
	DataStart, DataEnd int64 // the stuffed data section: first byte after "DATA"EOL, up to (not incl.) the "." line
	CRLF               bool  // the transaction's line ends are CRLF (Exim use_crlf)
	Size               int64 // octets after unstuffing, line ends as in the file (what Unstuff yields)
	Lines              int64 // data lines, all ending as the transaction's lines do
	EightBit           bool  // data holds an octet >= 0x80
}

// WireSize is the message's size on the wire with CRLF line ends and no
// dot-stuffing (RFC 1870's SIZE, and what BDAT carries): every line of an
// LF transaction gains a CR.
func (m *Message) WireSize() int64 {
	if m.CRLF {
		return m.Size
	}
	return m.Size + m.Lines
}

// Limits. They bound memory, and everything beyond them is damage, so an
// entry the reader accepts can always be written back by the Writer.
const (
	// MaxAddress is the longest address accepted, in octets. RFC 5321
	// 4.5.3.1.3 limits a path to 256 octets and a command line to 512, so
	// no conforming software produces more, and Exim copies addresses as
	// received; 1000 leaves room for anything a lax peer got accepted while
	// still bounding what a garbage line can make us hold.
	MaxAddress = 1000
	// MaxRecipients is the most RCPT lines accepted in one transaction.
	// Exim's batch_max is rarely above a few hundred; this keeps a
	// transaction's envelope below about 10 MB.
	MaxRecipients = 10000
	// maxSkipped is how many session command lines may precede one MAIL.
	// Exim writes at most what message_prefix holds.
	maxSkipped = 100
	// maxCommand is the longest command line kept, without its line end:
	// "RCPT TO:<" + MaxAddress + ">" fits with room to spare.
	maxCommand = MaxAddress + 32
	bufSize    = 64 << 10
)

type eolKind int

const (
	eolNone eolKind = iota
	eolLF
	eolCRLF
)

func (e eolKind) String() string {
	switch e {
	case eolLF:
		return "LF"
	case eolCRLF:
		return "CRLF"
	}
	return "none"
}

// Reader reads entries from BSMTP input. It tracks byte offsets and line
// numbers so that a caller can address each message's data section in the
// underlying file.
type Reader struct {
	br   *bufio.Reader
	off  int64 // offset of the next unread octet
	line int   // number of the line that starts at off
	err  error // sticky: io.EOF or the read error that stopped the reader
	cmd  []byte
}

// NewReader returns a Reader for input that starts at offset 0, line 1.
func NewReader(r io.Reader) *Reader {
	return NewReaderAt(r, 0, 1)
}

// NewReaderAt returns a Reader for input whose first octet is at offset base
// on line line of a larger whole, such as the part of a file that was
// appended since it was last read. base must be the start of a line.
func NewReaderAt(r io.Reader, base int64, line int) *Reader {
	return &Reader{
		br:   bufio.NewReaderSize(r, bufSize),
		off:  base,
		line: line,
		cmd:  make([]byte, 0, maxCommand+2),
	}
}

// Next returns the next entry. It returns io.EOF when the input ends
// cleanly after an entry (or is empty), and a wrapped read error if the
// underlying reader fails; both are returned again on every later call.
// After an Incomplete entry the next call returns io.EOF.
func (r *Reader) Next() (Entry, error) {
	if r.err != nil {
		return Entry{}, r.err
	}
	e := Entry{Start: r.off, Line: r.line}
	m := &Message{}

	// Between transactions: skip session commands until MAIL.
	for {
		lineNo := r.line
		c, err := r.readCommand()
		if err == io.EOF {
			if len(m.Skipped) == 0 {
				r.err = io.EOF
				return Entry{}, io.EOF
			}
			return r.incomplete(e, lineNo, "end of input after session commands, before MAIL"), nil
		}
		if err != nil {
			return Entry{}, err
		}
		if c.eol == eolNone {
			return r.incomplete(e, lineNo, "last line has no line end"), nil
		}
		if why := c.problem(); why != "" {
			return r.damage(e, lineNo, c.isDot, why)
		}
		if isSessionCommand(c.text) {
			if len(m.Skipped) == maxSkipped {
				return r.damage(e, lineNo, false, fmt.Sprintf("more than %d session commands before MAIL", maxSkipped))
			}
			m.Skipped = append(m.Skipped, string(c.text))
			continue
		}
		addr, ok, why := parsePath(c.text, "MAIL FROM:", true)
		if !ok {
			switch {
			case hasPrefixFold(c.text, "RCPT"):
				why = "RCPT before MAIL"
			case bytes.EqualFold(c.text, []byte("DATA")):
				why = "DATA before MAIL"
			case why == "":
				why = "unknown line between transactions: " + quote(c.text)
			}
			return r.damage(e, lineNo, c.isDot, why)
		}
		if why != "" {
			return r.damage(e, lineNo, c.isDot, why)
		}
		m.From = addr
		m.CRLF = c.eol == eolCRLF
		break
	}
	style := eolLF
	if m.CRLF {
		style = eolCRLF
	}

	// Inside the transaction: RCPT lines, then DATA.
	for {
		lineNo := r.line
		c, err := r.readCommand()
		if err == io.EOF {
			return r.incomplete(e, lineNo, "end of input inside the envelope"), nil
		}
		if err != nil {
			return Entry{}, err
		}
		if c.eol == eolNone {
			return r.incomplete(e, lineNo, "last line has no line end"), nil
		}
		if c.eol != style {
			return r.damage(e, lineNo, c.isDot, fmt.Sprintf("%s line end in a transaction whose MAIL line ends in %s", c.eol, style))
		}
		if why := c.problem(); why != "" {
			return r.damage(e, lineNo, c.isDot, why)
		}
		if bytes.EqualFold(c.text, []byte("DATA")) {
			if len(m.To) == 0 {
				return r.damage(e, lineNo, false, "DATA without RCPT")
			}
			break
		}
		addr, ok, why := parsePath(c.text, "RCPT TO:", false)
		if !ok {
			switch {
			case hasPrefixFold(c.text, "MAIL FROM:"):
				why = "second MAIL in one transaction"
			case isSessionCommand(c.text):
				why = "session command inside a transaction: " + quote(c.text)
			case why == "":
				why = "unknown line inside a transaction: " + quote(c.text)
			}
			return r.damage(e, lineNo, c.isDot, why)
		}
		if why != "" {
			return r.damage(e, lineNo, c.isDot, why)
		}
		if len(m.To) == MaxRecipients {
			return r.damage(e, lineNo, false, fmt.Sprintf("more than %d recipients", MaxRecipients))
		}
		m.To = append(m.To, addr)
	}

	// The data section, one line at a time; nothing of it is kept.
	m.DataStart = r.off
	for {
		lineStart, lineNo := r.off, r.line
		l, err := r.readDataLine()
		if err != nil {
			return Entry{}, err
		}
		switch {
		case l.n == 0:
			return r.incomplete(e, lineNo, "end of input inside DATA, no \".\" line"), nil
		case l.eol == eolNone:
			return r.incomplete(e, lineNo, "last line has no line end"), nil
		case l.eol != style && l.isDot:
			return r.damage(e, lineNo, true, fmt.Sprintf("ambiguous terminator: \".\" line ending in %s in a transaction whose MAIL line ends in %s", l.eol, style))
		case l.eol != style:
			// Exim never writes a CR into an LF file, nor a bare LF
			// into a CRLF one, so this is not Exim's output and reading
			// it either way would be a guess.
			return r.damage(e, lineNo, false, fmt.Sprintf("data line ending in %s in a transaction whose MAIL line ends in %s", l.eol, style))
		case l.isDot:
			m.DataEnd = lineStart
			e.End = r.off
			e.Msg = m
			return e, nil
		}
		m.Size += l.n
		m.Lines++
		if l.first == '.' {
			m.Size--
		}
		if l.eight {
			m.EightBit = true
		}
	}
}

// incomplete ends e at the end of the input.
func (r *Reader) incomplete(e Entry, lineNo int, why string) Entry {
	e.End = r.off
	e.Damage = "line " + strconv.Itoa(lineNo) + ": " + why
	e.Incomplete = true
	r.err = io.EOF
	return e
}

// damage ends e after the offending line if that line is itself a "." line,
// or else at the next "." line, the only point where a reader can be sure to
// be back between transactions.
func (r *Reader) damage(e Entry, lineNo int, atDot bool, why string) (Entry, error) {
	e.Damage = "line " + strconv.Itoa(lineNo) + ": " + why
	if !atDot {
		found, err := r.skipToDot()
		if err != nil {
			return Entry{}, err
		}
		if !found {
			e.Incomplete = true
			r.err = io.EOF
		}
	}
	e.End = r.off
	return e, nil
}

// chunk is ReadSlice that keeps the offset and line count. A read error
// other than io.EOF and bufio.ErrBufferFull becomes sticky.
func (r *Reader) chunk() ([]byte, error) {
	b, err := r.br.ReadSlice('\n')
	r.off += int64(len(b))
	if err == nil {
		r.line++
		return b, nil
	}
	if err == io.EOF || errors.Is(err, bufio.ErrBufferFull) {
		return b, err
	}
	r.err = fmt.Errorf("bsmtp: read at offset %d: %w", r.off, err)
	return b, r.err
}

// skipToDot consumes lines up to and including the next line that is
// exactly "." with either line end. It reports false at the end of input.
func (r *Reader) skipToDot() (bool, error) {
	atStart := true
	for {
		b, err := r.chunk()
		switch {
		case err == nil:
			if atStart && (string(b) == ".\n" || string(b) == ".\r\n") {
				return true, nil
			}
			atStart = true
		case err == io.EOF:
			return false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			atStart = false
		default:
			return false, err
		}
	}
}

// command is one command line.
type command struct {
	text  []byte // without line end; valid until the next read
	eol   eolKind
	long  bool // longer than maxCommand; text is cut
	isDot bool // exactly "." and a line end
}

// problem reports what makes c unreadable as any command.
func (c command) problem() string {
	switch {
	case c.long:
		return fmt.Sprintf("command line longer than %d octets", maxCommand)
	case bytes.IndexByte(c.text, 0) >= 0:
		return "NUL in command line"
	}
	return ""
}

// readCommand reads one line, keeping at most maxCommand octets of it. It
// returns io.EOF only when no octet is left; a last line without line end
// comes back with eol == eolNone.
func (r *Reader) readCommand() (command, error) {
	r.cmd = r.cmd[:0]
	var c command
	var n int64
	var last byte // last octet of the previous chunk
	for {
		b, err := r.chunk()
		if room := maxCommand + 2 - len(r.cmd); room > 0 {
			r.cmd = append(r.cmd, b[:min(room, len(b))]...)
		}
		switch {
		case err == nil:
			prev := last
			if len(b) >= 2 {
				prev = b[len(b)-2]
			}
			n += int64(len(b))
			c.eol = eolLF
			if n >= 2 && prev == '\r' {
				c.eol = eolCRLF
			}
		case err == io.EOF:
			n += int64(len(b))
			if n == 0 {
				return c, io.EOF
			}
		case errors.Is(err, bufio.ErrBufferFull):
			n += int64(len(b))
			last = b[len(b)-1]
			continue
		default:
			return c, err
		}
		break
	}
	switch c.eol {
	case eolLF:
		n--
	case eolCRLF:
		n -= 2
	}
	// Whenever the content fits maxCommand, r.cmd holds all of it.
	if n > maxCommand {
		c.long = true
		n = maxCommand
	}
	c.text = r.cmd[:n]
	c.isDot = string(c.text) == "." && c.eol != eolNone
	return c, nil
}

// dataLine is what the reader learns about one data line.
type dataLine struct {
	n     int64 // octets including the line end; 0 at end of input
	first byte
	eol   eolKind
	eight bool
	isDot bool // exactly "." and a line end
}

// readDataLine reads one line of any length without keeping it.
func (r *Reader) readDataLine() (dataLine, error) {
	var l dataLine
	var last byte
	for {
		b, err := r.chunk()
		if l.n == 0 && len(b) > 0 {
			l.first = b[0]
		}
		if !l.eight && has8(b) {
			l.eight = true
		}
		switch {
		case err == nil:
			prev := last
			if len(b) >= 2 {
				prev = b[len(b)-2]
			}
			l.n += int64(len(b))
			l.eol = eolLF
			eolLen := int64(1)
			if l.n >= 2 && prev == '\r' {
				l.eol = eolCRLF
				eolLen = 2
			}
			l.isDot = l.first == '.' && l.n == eolLen+1
			return l, nil
		case err == io.EOF:
			l.n += int64(len(b))
			return l, nil
		case errors.Is(err, bufio.ErrBufferFull):
			l.n += int64(len(b))
			last = b[len(b)-1]
		default:
			return l, err
		}
	}
}

// has8 reports whether b holds an octet >= 0x80, eight octets at a time.
func has8(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// parsePath parses "VERB:<address>" with at most one space after the colon,
// as exim -bS accepts. ok is false if the line is not this command at all;
// why is set if it is, but malformed.
func parsePath(text []byte, verb string, nullOK bool) (addr string, ok bool, why string) {
	if !hasPrefixFold(text, verb) {
		return "", false, ""
	}
	rest := text[len(verb):]
	if len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	if len(rest) == 0 || rest[0] != '<' {
		return "", true, "'<' missing at start of address: " + quote(text)
	}
	end := bytes.IndexByte(rest, '>')
	if end < 0 {
		return "", true, "'>' missing at end of address: " + quote(text)
	}
	a := rest[1:end]
	if after := rest[end+1:]; len(after) > 0 {
		if after[0] == ' ' {
			return "", true, "ESMTP parameters after the address (Exim never writes them): " + quote(text)
		}
		return "", true, "text after the address: " + quote(text)
	}
	if len(a) == 0 {
		if nullOK {
			return "", true, ""
		}
		return "", true, "empty recipient address"
	}
	if err := validAddress(a); err != nil {
		return "", true, err.Error()
	}
	return string(a), true, ""
}

// ValidAddress reports whether a can stand between the angle brackets of a
// MAIL or RCPT command in a BSMTP file, and be sent on in one over SMTP:
// non-empty, at most MaxAddress octets, valid UTF-8 (SMTPUTF8 addresses are
// written raw), with no C0 control character, no DEL and no '<' or '>'. The
// null reverse-path "" is not an address; callers allow it for MAIL.
func ValidAddress(a string) error {
	return validAddress([]byte(a))
}

func validAddress(a []byte) error {
	switch {
	case len(a) == 0:
		return errors.New("empty address")
	case len(a) > MaxAddress:
		return fmt.Errorf("address longer than %d octets", MaxAddress)
	}
	for _, c := range a {
		switch {
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("control character %#02x in address %s", c, quote(a))
		case c == '<' || c == '>':
			return fmt.Errorf("%q in address %s", c, quote(a))
		}
	}
	if !utf8.Valid(a) {
		return fmt.Errorf("address is not valid UTF-8: %s", quote(a))
	}
	return nil
}

// isSessionCommand reports whether a line between transactions is one that
// carries no mail and can be skipped: HELO or EHLO with a name, RSET, QUIT,
// NOOP with an optional argument.
func isSessionCommand(t []byte) bool {
	switch {
	case hasPrefixFold(t, "HELO ") || hasPrefixFold(t, "EHLO "):
		return printable(t[5:])
	case bytes.EqualFold(t, []byte("RSET")), bytes.EqualFold(t, []byte("QUIT")), bytes.EqualFold(t, []byte("NOOP")):
		return true
	case hasPrefixFold(t, "NOOP "):
		return printable(t[5:])
	}
	return false
}

// printable reports whether s is non-empty printable ASCII not starting with
// a space.
func printable(s []byte) bool {
	if len(s) == 0 || s[0] == ' ' {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

// quote makes a line fit to put into a log: Go-quoted and cut short.
func quote(b []byte) string {
	const maxQuote = 80
	if len(b) > maxQuote {
		return strconv.Quote(string(b[:maxQuote])) + "..."
	}
	return strconv.Quote(string(b))
}
