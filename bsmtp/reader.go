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
	// Inner, when set, is where a whole BSMTP envelope (a "MAIL FROM:"
	// command, one or more "RCPT TO:" lines and a "DATA" line) begins
	// inside the entry: in a message's data section, or in the lines a
	// damaged entry runs over. That is what a torn append looks like (a
	// writer killed mid-message, and the next delivery appended after the
	// fragment), but also what a message quoting an envelope looks like;
	// the reader cannot tell them apart and leaves the decision to the
	// caller, who may read on from Inner.Off with NewReaderAt.
	Inner *Inner
}

// Inner locates an envelope found inside an entry.
type Inner struct {
	Off  int64 // offset of the "MAIL FROM:" text; inside a line if the fragment before it ended without a line end
	Line int   // number of the line it is on
	// MidLine: the "MAIL FROM:" does not start its line: the text before
	// it ended without a line end, as a killed writer's fragment does and
	// a quotation does not.
	MidLine bool
	// InData: found in a message body, where a message may quote an
	// envelope; one in the command lines or a header block cannot be a
	// quote.
	InData bool
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
	// HeaderProblem is "" when the data begins with RFC 5322 header
	// lines (a field name of printable ASCII without spaces, optional
	// blanks and a colon, or a folded continuation of such a field) up to
	// the first empty line or the end of the data; else it names the
	// first line that is not one. Exim always writes such a header block,
	// so anything else was not written as one message by Exim.
	HeaderProblem string
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
	tail []byte // the last tailSize octets of the data line just read, line end included
	head []byte // the first headSize octets of it
	// Where the command line in cmd starts, so that a damaged one can be
	// scanned for an envelope.
	cmdStart int64
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
		tail: make([]byte, 0, tailSize),
		head: make([]byte, 0, headSize),
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
			return r.damage(e, lineNo, c.isDot, why, nil)
		}
		if isSessionCommand(c.text) {
			if len(m.Skipped) == maxSkipped {
				return r.damage(e, lineNo, false, fmt.Sprintf("more than %d session commands before MAIL", maxSkipped), nil)
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
			return r.damage(e, lineNo, c.isDot, why, nil)
		}
		if why != "" {
			return r.damage(e, lineNo, c.isDot, why, nil)
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
			return r.damage(e, lineNo, c.isDot, fmt.Sprintf("%s line end in a transaction whose MAIL line ends in %s", c.eol, style), nil)
		}
		if why := c.problem(); why != "" {
			return r.damage(e, lineNo, c.isDot, why, nil)
		}
		if bytes.EqualFold(c.text, []byte("DATA")) {
			if len(m.To) == 0 {
				return r.damage(e, lineNo, false, "DATA without RCPT", nil)
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
			return r.damage(e, lineNo, c.isDot, why, nil)
		}
		if why != "" {
			return r.damage(e, lineNo, c.isDot, why, nil)
		}
		if len(m.To) == MaxRecipients {
			return r.damage(e, lineNo, false, fmt.Sprintf("more than %d recipients", MaxRecipients), nil)
		}
		m.To = append(m.To, addr)
	}

	// The data section, one line at a time; nothing of it is kept but
	// what the envelope scan and the header check need of each line.
	m.DataStart = r.off
	var sc envScan
	var hdr headerCheck
	for {
		lineStart, lineNo := r.off, r.line
		l, err := r.readDataLine()
		if err != nil {
			return Entry{}, err
		}
		if !l.isDot && l.n > 0 && l.eol != eolNone {
			// Only a body can quote an envelope: in the header block an
			// envelope line is no header field, so it is a torn write.
			sc.data = hdr.body
			sc.line(r.tail, l.n, lineStart, lineNo)
			if e.Inner == nil {
				e.Inner = sc.found
			}
			if p := hdr.line(r.head, lineNo); p != "" {
				m.HeaderProblem = p
			}
		}
		switch {
		case l.n == 0:
			return r.incomplete(e, lineNo, "end of input inside DATA, no \".\" line"), nil
		case l.eol == eolNone:
			return r.incomplete(e, lineNo, "last line has no line end"), nil
		case l.eol != style && l.isDot:
			return r.damage(e, lineNo, true, fmt.Sprintf("ambiguous terminator: \".\" line ending in %s in a transaction whose MAIL line ends in %s", l.eol, style), &sc)
		case l.eol != style:
			// Exim never writes a CR into an LF file, nor a bare LF
			// into a CRLF one, so this is not Exim's output and reading
			// it either way would be a guess.
			return r.damage(e, lineNo, false, fmt.Sprintf("data line ending in %s in a transaction whose MAIL line ends in %s", l.eol, style), &sc)
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
//
// The lines skipped are scanned for an envelope (see Entry.Inner), the
// offending command line included: a torn append may end inside an
// envelope line, and the next delivery's MAIL command then continues that
// very line.
//
// sc is the scan of the data lines so far when the damage is in the data
// section; nil when it is in a command line, which r.cmd then holds.
func (r *Reader) damage(e Entry, lineNo int, atDot bool, why string, sc *envScan) (Entry, error) {
	e.Damage = "line " + strconv.Itoa(lineNo) + ": " + why
	if !atDot {
		if sc == nil {
			sc = &envScan{}
			if n := r.off - r.cmdStart; int64(len(r.cmd)) == n {
				// The whole line is in r.cmd (a longer one holds no
				// command this scan could use).
				sc.line(r.cmd, n, r.cmdStart, lineNo)
			}
		}
		found, inner, err := r.skipToDot(sc)
		if err != nil {
			return Entry{}, err
		}
		if e.Inner == nil {
			e.Inner = inner
		}
		if !found {
			e.Incomplete = true
			r.err = io.EOF
		}
	}
	e.End = r.off
	return e, nil
}

// trimEOL cuts a line end off b.
func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

var mailFrom = []byte("MAIL FROM:")

// lastIndex is bytes.LastIndex by way of bytes.Index, which searches
// with vector instructions; LastIndex does not, and it ran on every data
// line of every message (a tenth of a flush's CPU).
func lastIndex(s, sep []byte) int {
	i := bytes.Index(s, sep)
	if i < 0 {
		return -1
	}
	for {
		j := bytes.Index(s[i+1:], sep)
		if j < 0 {
			return i
		}
		i += 1 + j
	}
}

// envScan looks, line by line, for a whole envelope: a "MAIL FROM:"
// command at the end of a line (at its start, or after the fragment of a
// line a killed writer left), then one or more "RCPT TO:" lines and a
// "DATA" line, each a line of its own.
type envScan struct {
	cand  *Inner // where the MAIL command of the envelope being followed starts
	rcpts int
	found *Inner // the first whole envelope
	data  bool   // the lines fed are (now) those of a data section
}

// line feeds one line: tail is its last octets with the line end, n its
// full length, start its offset.
func (sc *envScan) line(tail []byte, n int64, start int64, lineNo int) {
	if sc.found != nil {
		return
	}
	whole := int64(len(tail)) == n
	text := trimEOL(tail)
	if sc.cand != nil {
		if whole {
			if _, ok, why := parsePath(text, "RCPT TO:", false); ok && why == "" {
				sc.rcpts++
				return
			}
			if bytes.EqualFold(text, []byte("DATA")) && sc.rcpts > 0 {
				sc.found = sc.cand
				return
			}
		}
		sc.cand = nil
	}
	if whole && bytes.EqualFold(text, []byte("DATA")) {
		// The damaged entry's own DATA line: what follows is its data.
		sc.data = true
		return
	}
	i := lastIndex(text, mailFrom)
	if i < 0 && whole && hasPrefixFold(text, "MAIL FROM:") {
		i = 0
	}
	if i < 0 {
		return
	}
	if _, ok, why := parsePath(text[i:], "MAIL FROM:", true); ok && why == "" {
		off := start + n - int64(len(tail)) + int64(i)
		sc.cand = &Inner{Off: off, Line: lineNo, MidLine: off > start, InData: sc.data}
		sc.rcpts = 0
	}
}

// headerCheck follows the header block of a data section.
type headerCheck struct {
	done   bool // past the empty line, or a problem was found
	body   bool // past the empty line: the body
	fields int
}

// line checks one data line (first octets in head) and returns a problem,
// once.
func (h *headerCheck) line(head []byte, lineNo int) string {
	if h.done {
		return ""
	}
	t := trimEOL(head)
	if len(t) > 0 && t[0] == '.' {
		t = t[1:] // dot-stuffed
	}
	switch {
	case len(t) == 0 && len(head) > 0 && (head[0] == '\n' || head[0] == '\r'):
		h.done, h.body = true, true // the empty line: the body follows
		return ""
	case len(t) > 0 && (t[0] == ' ' || t[0] == '\t'):
		if h.fields > 0 {
			return ""
		}
		h.done = true
		return "line " + strconv.Itoa(lineNo) + ": the data begins with a folded line, not a header field: " + quote(t)
	}
	i := 0
	for i < len(t) && t[i] > ' ' && t[i] < 0x7f && t[i] != ':' {
		i++
	}
	j := i
	for j < len(t) && (t[j] == ' ' || t[j] == '\t') {
		j++
	}
	if i > 0 && j < len(t) && t[j] == ':' {
		h.fields++
		return ""
	}
	h.done = true
	return "line " + strconv.Itoa(lineNo) + ": not a header line in the header block: " + quote(t)
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
// exactly "." with either line end. It reports false at the end of input,
// and the first envelope sc finds on the way.
func (r *Reader) skipToDot(sc *envScan) (bool, *Inner, error) {
	for {
		lineStart, lineNo := r.off, r.line
		l, err := r.readDataLine()
		switch {
		case err != nil:
			return false, sc.found, err
		case l.n == 0:
			return false, sc.found, nil
		case l.isDot:
			return true, sc.found, nil
		case l.eol == eolNone:
			return false, sc.found, nil
		}
		if sc.found == nil {
			sc.line(r.tail, l.n, lineStart, lineNo)
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
	r.cmdStart = r.off
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

// tailSize is how much of the end of each data line the reader keeps:
// enough for any command line it would accept, and its line end.
const tailSize = maxCommand + 2

// headSize is how much of the start of each data line the reader keeps
// for the header check: a field name longer than this is not one.
const headSize = 1024

// readDataLine reads one line of any length, keeping only its last
// tailSize octets in r.tail (with the line end).
func (r *Reader) readDataLine() (dataLine, error) {
	var l dataLine
	var last byte
	r.tail = r.tail[:0]
	r.head = r.head[:0]
	for {
		b, err := r.chunk()
		if l.n == 0 && len(b) > 0 {
			l.first = b[0]
			r.head = append(r.head, b[:min(len(b), headSize)]...)
		}
		r.keepTail(b)
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

// keepTail appends b to r.tail, keeping the last tailSize octets.
func (r *Reader) keepTail(b []byte) {
	if len(b) >= tailSize {
		r.tail = append(r.tail[:0], b[len(b)-tailSize:]...)
		return
	}
	if over := len(r.tail) + len(b) - tailSize; over > 0 {
		r.tail = append(r.tail[:0], r.tail[over:]...)
	}
	r.tail = append(r.tail, b...)
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
