// Package sevenbit turns a message with 8-bit content into an equivalent
// one made of 7-bit octets only, for an SMTP server that does not offer
// 8BITMIME (RFC 6152 forbids sending it 8-bit data). It follows Postfix's
// smtp client "8BITMIME to 7BIT conversion" (src/global/mime_state.c with
// MIME_OPT_DOWNGRADE): leaf bodies become quoted-printable, multipart and
// message/rfc822 entities are relabelled 7bit and recursed into, and the
// multipart nesting depth is capped as by mime_nesting_limit.
//
// Conversion is one pass over the content with memory bounded by one
// entity's header block and one line, never by the body. Two modes exist:
//
//   - NewWriter(w, nil) decides from the labels alone, as Postfix does: an
//     entity labelled 8bit or binary is converted, whatever its octets.
//     8-bit octets in an entity labelled 7bit, or not labelled at all, are
//     an error (ErrUnlabeled8Bit) met in the middle of the stream.
//   - Scan(r) first reads the content once and records which entities
//     really hold 8-bit octets; NewWriter(w, plan) then converts exactly
//     those (and those labelled binary), labels or not, and leaves every
//     other octet alone. Every error
//     the conversion can meet is met by Scan, before anything was sent.
//
// A sender that can reopen its content (etrnflush's spool can) should use
// Scan: it learns that a message cannot be converted before MAIL FROM, and
// 7-bit entities that merely claim 8bit stay byte-identical. The converted
// message is longer, so a SIZE= taken from the original understates it;
// Postfix sends no SIZE= when it downgrades (smtp_proto.c), and the exact
// size is what a Writer writes into a counter.
//
// Where this package departs from Postfix, and why:
//
//   - Postfix converts only what is labelled 8bit or binary and sends
//     unlabelled 8-bit octets raw; with a Plan they are converted too, and
//     without one they are refused, because a 7-bit server must not get
//     them (RFC 6152).
//   - Postfix sends 8-bit header text raw; here it is ErrHeader8Bit.
//   - Postfix sends 8-bit preamble and epilogue text raw. MIME readers
//     ignore both, so no label can apply there; here each 8-bit octet
//     becomes "=XX" in place: 7-bit, still legible, and decoded by no one.
//   - Postfix drops the Content-Transfer-Encoding field and writes a new
//     one at the end of the header block; here it is replaced where it
//     stands, so every other header octet stays as it was, and a converted
//     message header without MIME-Version gets "MIME-Version: 1.0" (RFC
//     2045 4), which Postfix does not add.
//   - Postfix labels message/partial and message/external-body 7bit yet
//     encodes their 8-bit body; RFC 2046 5.2.2 and 5.2.3 allow no encoding
//     there, so here that is ErrUnconvertible.
//   - Postfix takes any line that starts with "--boundary" as a delimiter;
//     here, as in RFC 2046 5.1.1 and Go's mime/multipart, only white space
//     may follow "--boundary" or "--boundary--".
//   - Postfix counts nesting for multipart only; here message/rfc822
//     levels count too, since each holds an open entity in memory.
//
// Line ends are kept: a line ending in CR LF or LF is written with the
// same end, and lines the Writer makes (soft breaks, added fields) take
// the end of the last line read.
package sevenbit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
)

// Errors from Scan, Writer.Write and Writer.Close, possibly wrapped with
// detail: test them with errors.Is.
var (
	// ErrHeader8Bit: a header field (of the message or of any part or
	// enclosed message) holds an octet >= 0x80. MIME has no way to turn
	// raw 8-bit header text into 7-bit without guessing its charset for
	// RFC 2047, so the message cannot go to a 7-bit server.
	ErrHeader8Bit = errors.New("sevenbit: 8-bit octets in a header field")
	// ErrUnconvertible: 8-bit octets in a body that may not be given a
	// quoted-printable encoding: one already labelled quoted-printable,
	// base64 or another encoding, message/partial or message/external-body
	// (RFC 2046 5.2), or a multipart without a usable boundary.
	ErrUnconvertible = errors.New("sevenbit: 8-bit octets in a body that cannot be re-encoded")
	// ErrUnlabeled8Bit: 8-bit octets in an entity the Writer had decided
	// to pass unchanged, because its label says 7bit (or says nothing) and
	// no Plan said otherwise, or the content changed after Scan.
	ErrUnlabeled8Bit = errors.New("sevenbit: 8-bit octets in an entity labelled 7bit (Scan first)")
	// ErrNesting: more than MaxNesting multipart or message/rfc822 levels.
	ErrNesting = errors.New("sevenbit: MIME nesting exceeds the limit")
	// ErrHeaderTooLong: one entity's header block exceeds MaxHeader octets.
	ErrHeaderTooLong = errors.New("sevenbit: header block too long")
)

const (
	// MaxNesting is Postfix's default mime_nesting_limit.
	MaxNesting = 100
	// MaxHeader bounds the one header block held in memory at a time:
	// about ten times Postfix's header_size_limit, which is per field.
	MaxHeader = 1 << 20
	// lineCap bounds the part of a body line held to look for a boundary
	// delimiter: "--", the boundary, an optional "--" and white space.
	// RFC 2046 5.1.1 allows 70 characters of boundary; up to lineCap/2 is
	// taken, as Postfix's mime_boundary_length_limit (2048) does. Longer
	// lines go through in pieces and are never taken for a delimiter.
	lineCap = 4096
	// qpMax is the longest quoted-printable line before the soft break's
	// "=", so that no encoded line exceeds the 76 characters of RFC 2045
	// 6.7 rule 5.
	qpMax = 75
)

// Plan says which entities of one message must be converted, by their
// order of appearance: those holding 8-bit octets or labelled binary, and
// every entity around them. It is made by Scan and read by NewWriter.
type Plan struct {
	bits []uint64
}

func (p *Plan) has(i int) bool {
	return i/64 < len(p.bits) && p.bits[i/64]&(1<<(i%64)) != 0
}

func (p *Plan) set(i int) {
	for i/64 >= len(p.bits) {
		p.bits = append(p.bits, 0)
	}
	p.bits[i/64] |= 1 << (i % 64)
}

// Converts reports whether the Writer will change anything. When it is
// false the content is already 7-bit and may be sent as it is.
func (p *Plan) Converts() bool { return p.has(0) }

// Scan reads r to its end and returns the Plan that converts it, or the
// first reason it cannot be converted (see the error values), or r's
// read error.
func Scan(r io.Reader) (*Plan, error) {
	p := &Plan{}
	w := newWriter(io.Discard, p, true)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil, werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return p, nil
}

type kind int

const (
	kindLeaf      kind = iota // body may become quoted-printable
	kindEncoded               // already encoded, or may not be encoded
	kindMultipart             // parts between boundary delimiters
	kindMessage               // another header block follows
)

// frame is one open composite entity.
type frame struct {
	kind   kind
	index  int    // entity number, for the Plan
	delim  []byte // "--" + boundary, for multipart
	digest bool   // parts default to message/rfc822 (RFC 2046 5.1.5)
	closed bool   // its close delimiter was seen: the rest is epilogue
}

type mode int

const (
	modeRaw    mode = iota // pass; 8-bit octets are ErrUnlabeled8Bit
	modeScan               // pass; record 8-bit octets in the Plan
	modeStrict             // pass; 8-bit octets are ErrUnconvertible
	modeQP                 // encode as quoted-printable
	modeAround             // preamble or epilogue: see around()
)

type field struct {
	start, end int // in hdr, with the line end of its last line
	name       string
}

// Writer converts the message written to it and writes the result to the
// underlying writer. Close must be called at the end of the message; it
// flushes, and does not close the underlying writer.
type Writer struct {
	out  *bufio.Writer
	plan *Plan
	scan bool
	err  error

	inHeader bool
	hdr      []byte  // the current header block
	hl       int     // start of the current line in hdr
	fields   []field // of hdr
	entity   int     // number of the entity whose header or body this is
	next     int     // number of the next entity
	msgHead  bool    // hdr starts a message, not a body part
	inDigest bool    // hdr is a part of a multipart/digest
	closed   bool

	stack []frame
	mode  mode
	leaf  int // entity number of the body in modeScan

	line    []byte // start of a body line held to look for a delimiter
	atStart bool   // line (or the next octet) starts a body line
	eol     string // line end used for lines the Writer makes

	col  int  // quoted-printable: octets on the current output line
	pend byte // quoted-printable: white space not known to be trailing
}

// NewWriter returns a Writer writing to w. With a nil plan it converts
// entities by their labels, as Postfix does; with a plan from Scan of the
// same content, by their octets.
func NewWriter(w io.Writer, plan *Plan) *Writer {
	return newWriter(w, plan, false)
}

func newWriter(w io.Writer, plan *Plan, scan bool) *Writer {
	return &Writer{
		out:      bufio.NewWriterSize(w, 8<<10),
		plan:     plan,
		scan:     scan,
		inHeader: true,
		msgHead:  true,
		atStart:  true,
		eol:      "\n",
		next:     1,
	}
}

// Write converts p. Content is taken as it comes: lines may be split
// anywhere across calls.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	for len(p) > 0 && w.err == nil {
		if w.inHeader {
			p = w.header(p)
		} else {
			p = w.body(p)
		}
	}
	if w.err != nil {
		return 0, w.err
	}
	return n, nil
}

// Close ends the message: an unterminated last line is converted as it
// is (no line end is added) and everything is flushed.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	for w.inHeader && w.err == nil {
		if len(w.line) > 0 {
			// A message/rfc822 header ended in an unterminated non-field
			// line: that line is where the enclosed message begins.
			w.hdr = append(w.hdr, w.line...)
			w.line = w.line[:0]
		}
		if w.hl < len(w.hdr) {
			w.headerLine(false)
			continue
		}
		w.endHeader(len(w.hdr), nil)
	}
	if w.err == nil && len(w.line) > 0 {
		w.seg(w.line, w.atStart, false)
		w.line = w.line[:0]
	}
	if w.err == nil && w.mode == modeQP && w.pend != 0 {
		w.qpToken(w.pend, true)
		w.pend = 0
	}
	if w.err == nil {
		if err := w.out.Flush(); err != nil {
			w.err = err
		}
	}
	if w.err == nil {
		w.err, w.closed = errClosed, true
		return nil
	}
	return w.err
}

var errClosed = errors.New("sevenbit: write after Close")

func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// header adds p's octets to the header block up to the end of a line.
func (w *Writer) header(p []byte) []byte {
	i := bytes.IndexByte(p, '\n')
	take := p
	if i >= 0 {
		take = p[:i+1]
	}
	if len(w.hdr)+len(take) > MaxHeader {
		w.fail(ErrHeaderTooLong)
		return nil
	}
	w.hdr = append(w.hdr, take...)
	if i >= 0 {
		w.eol = eolOf(w.hdr, w.eol)
		w.headerLine(true)
	}
	return p[len(take):]
}

// headerLine classifies the line at hdr[hl:]; complete says it ends in LF.
func (w *Writer) headerLine(complete bool) {
	line := w.hdr[w.hl:]
	switch {
	case complete && (len(line) == 1 || len(line) == 2 && line[0] == '\r'):
		w.endHeader(w.hl, nil)
		return
	case (line[0] == ' ' || line[0] == '\t') && len(w.fields) > 0:
		w.fields[len(w.fields)-1].end = len(w.hdr)
	case fieldName(line) != "":
		w.fields = append(w.fields, field{start: w.hl, end: len(w.hdr), name: fieldName(line)})
	default:
		// Not a header field: the block ended without an empty line and
		// this is the first body line, as Postfix's mime_state takes it.
		first := append([]byte(nil), line...)
		w.hdr = w.hdr[:w.hl]
		if !complete {
			// At Close: the unterminated line is all the body there is.
			w.endHeader(w.hl, nil)
			w.line = append(w.line, first...)
			return
		}
		w.endHeader(w.hl, first)
		return
	}
	for _, c := range line {
		if c >= 0x80 {
			w.fail(fmt.Errorf("%w: %q", ErrHeader8Bit, firstLine(line)))
			return
		}
	}
	w.hl = len(w.hdr)
}

// fieldName returns the field name that starts line, lower-cased, or "".
// It allows white space before the colon (RFC 822's obsolete syntax).
func fieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return ""
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f {
			return ""
		}
	}
	return strings.ToLower(string(name))
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > 80 {
		b = b[:80]
	}
	return b
}

// unfold returns a field's value with its line breaks removed (RFC 5322
// 2.2.3).
func (w *Writer) unfold(f field) string {
	v := w.hdr[f.start:f.end]
	v = v[bytes.IndexByte(v, ':')+1:]
	s := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
	return strings.TrimSpace(s)
}

// entityType is what endHeader learns from one header block.
type entityType struct {
	kind     kind
	delim    []byte
	digest   bool
	cte      string // lower-case token, "" if absent
	hasCTE   bool
	hasMIMEV bool
}

func (w *Writer) classify() entityType {
	var t entityType
	ctype := ""
	ctField := -1
	var params map[string]string
	for fi, f := range w.fields {
		switch f.name {
		case "content-type":
			if ctype != "" {
				continue // the first one counts, as for net/textproto
			}
			v := w.unfold(f)
			mt, ps, err := mime.ParseMediaType(v)
			if mt == "" && err != nil {
				mt, _, _ = strings.Cut(v, ";")
				mt = strings.ToLower(strings.TrimSpace(mt))
			}
			ctype, params, ctField = mt, ps, fi
			if ctype == "" {
				ctype = "-" // present but empty: the default applies
			}
		case "content-transfer-encoding":
			if t.hasCTE {
				continue
			}
			t.hasCTE = true
			v := w.unfold(f)
			if i := strings.IndexAny(v, " \t;("); i >= 0 {
				v = v[:i]
			}
			t.cte = strings.ToLower(v)
		case "mime-version":
			t.hasMIMEV = true
		}
	}
	if ctype == "" || ctype == "-" {
		ctype = "text/plain"
		if w.inDigest {
			ctype = "message/rfc822"
		}
	}
	identity := t.cte == "" || t.cte == "7bit" || t.cte == "8bit" || t.cte == "binary"
	major, minor, _ := strings.Cut(ctype, "/")
	switch {
	case major == "multipart":
		b := params["boundary"]
		if b == "" {
			b = looseBoundary(w.unfold(w.fields[ctField]))
		}
		if b == "" || len(b) > lineCap/2 {
			t.kind = kindEncoded
			break
		}
		t.kind = kindMultipart
		t.delim = []byte("--" + b)
		t.digest = minor == "digest"
	case ctype == "message/rfc822" && identity:
		t.kind = kindMessage
	case ctype == "message/partial" || ctype == "message/external-body":
		t.kind = kindEncoded
	case identity:
		t.kind = kindLeaf
	default:
		t.kind = kindEncoded
	}
	return t
}

// looseBoundary finds a boundary parameter that mime.ParseMediaType
// refused, such as the unquoted boundary=----=_Part_1 some mailers write,
// or one followed by a stray word. MUAs read those, as does Postfix's
// tokenizer, and so a message that holds one can still be converted.
func looseBoundary(v string) string {
	lv := strings.ToLower(v)
	for i := 0; ; {
		j := strings.Index(lv[i:], "boundary")
		if j < 0 {
			return ""
		}
		i += j + len("boundary")
		if before := strings.TrimRight(v[:i-len("boundary")], " \t"); !strings.HasSuffix(before, ";") {
			continue
		}
		rest := strings.TrimLeft(v[i:], " \t")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		if strings.HasPrefix(rest, `"`) {
			if k := strings.IndexByte(rest[1:], '"'); k >= 0 {
				return rest[1 : 1+k]
			}
			return ""
		}
		if k := strings.IndexAny(rest, "; \t"); k >= 0 {
			rest = rest[:k]
		}
		return rest
	}
}

// endHeader ends the header block at hdr[:end] (hdr[end:] is its empty
// line, if any); first is a body line that ended it instead.
func (w *Writer) endHeader(end int, first []byte) {
	if w.err != nil {
		return
	}
	t := w.classify()
	idx := w.entity
	eight := t.cte == "8bit" || t.cte == "binary"
	newCTE := ""
	switch {
	case w.scan:
	case t.kind == kindLeaf:
		if w.plan != nil && w.plan.has(idx) || w.plan == nil && eight {
			newCTE = "quoted-printable"
		}
	case t.kind == kindMultipart || t.kind == kindMessage:
		// RFC 2046 5.1.1 and 5.2.1 allow only identity labels here; once
		// everything inside is 7-bit, so is this entity.
		if eight && (w.plan == nil || w.plan.has(idx)) {
			newCTE = "7bit"
		}
	}
	if w.scan && t.cte == "binary" && t.kind != kindEncoded {
		// Binary content may break SMTP's line rules with 7-bit octets
		// alone (RFC 3030 gives it BODY=BINARYMIME, which a server
		// without 8BITMIME does not have), so it is converted whatever
		// its octets, as Postfix converts it.
		w.mark(idx)
	}
	changed := newCTE != "" || w.plan != nil && w.plan.has(idx)
	addMIMEV := !w.scan && w.msgHead && !t.hasMIMEV && changed
	if !w.scan {
		w.writeHeader(end, newCTE, !t.hasCTE && newCTE != "", addMIMEV, first != nil)
	}
	w.hdr, w.fields, w.hl = w.hdr[:0], w.fields[:0], 0
	w.inHeader = false
	w.atStart = true

	switch t.kind {
	case kindMultipart, kindMessage:
		if len(w.stack) >= MaxNesting {
			w.fail(ErrNesting)
			return
		}
		w.stack = append(w.stack, frame{kind: t.kind, index: idx, delim: t.delim, digest: t.digest})
		if t.kind == kindMessage {
			w.startEntity(true, false)
		} else {
			w.mode = modeAround
		}
	case kindLeaf:
		switch {
		case w.scan:
			w.mode, w.leaf = modeScan, idx
		case newCTE != "":
			w.mode, w.col, w.pend = modeQP, 0, 0
		default:
			w.mode = modeRaw
		}
	default:
		w.mode = modeStrict
	}
	if first != nil && w.err == nil {
		if w.inHeader {
			// A message/rfc822 whose header block ended in a non-field
			// line: that line starts the enclosed message's header.
			w.Write(first)
			return
		}
		w.seg(first, true, true)
	}
}

// startEntity begins the header block of a new entity.
func (w *Writer) startEntity(msgHead, inDigest bool) {
	w.inHeader = true
	w.msgHead, w.inDigest = msgHead, inDigest
	w.entity = w.next
	w.next++
	w.mode = modeRaw
}

// writeHeader writes hdr[:end] with Content-Transfer-Encoding fields set
// to cte (unless it is ""), the added fields, and the block's empty line.
func (w *Writer) writeHeader(end int, cte string, addCTE, addMIMEV, noBlank bool) {
	last := 0
	done := false
	if cte != "" {
		for _, f := range w.fields {
			if f.name != "content-transfer-encoding" {
				continue
			}
			w.out.Write(w.hdr[last:f.start])
			last = f.end
			if !done {
				// Only the first counts (classify); the others would
				// contradict the new label.
				w.out.WriteString("Content-Transfer-Encoding: " + cte + eolOf(w.hdr[f.start:f.end], w.eol))
				done = true
			}
		}
	}
	w.out.Write(w.hdr[last:end])
	if end > 0 && w.hdr[end-1] != '\n' && (addMIMEV || addCTE) {
		w.out.WriteString(w.eol) // the header ended at EOF mid-line
	}
	if addMIMEV {
		w.out.WriteString("MIME-Version: 1.0" + w.eol)
	}
	if addCTE {
		w.out.WriteString("Content-Transfer-Encoding: " + cte + w.eol)
	}
	if noBlank && (addMIMEV || cte != "") {
		w.out.WriteString(w.eol) // keep the body line out of the header
	}
	w.out.Write(w.hdr[end:])
}

func eolOf(b []byte, def string) string {
	switch {
	case bytes.HasSuffix(b, []byte("\r\n")):
		return "\r\n"
	case bytes.HasSuffix(b, []byte("\n")):
		return "\n"
	}
	return def
}

// body feeds body octets to seg in pieces that are whole lines or, for
// long lines, at most lineCap octets, never splitting CR from LF.
func (w *Writer) body(p []byte) []byte {
	for len(p) > 0 && !w.inHeader && w.err == nil {
		room := lineCap - len(w.line)
		chunk := p
		if len(chunk) > room {
			chunk = chunk[:room]
		}
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			chunk = chunk[:i+1]
			p = p[i+1:]
			if len(w.line) == 0 {
				w.seg(chunk, w.atStart, true)
			} else {
				w.line = append(w.line, chunk...)
				w.seg(w.line, w.atStart, true)
				w.line = w.line[:0]
			}
			if !w.inHeader {
				w.atStart = true
			}
			continue
		}
		w.line = append(w.line, chunk...)
		p = p[len(chunk):]
		if len(w.line) == lineCap {
			keep := 0
			if w.line[lineCap-1] == '\r' {
				keep = 1
			}
			w.seg(w.line[:lineCap-keep], w.atStart, false)
			w.atStart = false
			w.line = append(w.line[:0], w.line[lineCap-keep:]...)
		}
	}
	return p
}

// seg handles a piece of a body line; start says it begins the line,
// end that it finishes it (with its LF).
func (w *Writer) seg(s []byte, start, end bool) {
	if end {
		w.eol = eolOf(s, w.eol)
	}
	if start && end && len(w.stack) > 0 && bytes.HasPrefix(s, []byte("--")) && w.delimiter(s) {
		return
	}
	switch w.mode {
	case modeQP:
		w.qp(s, start, end)
		return
	case modeAround:
		w.around(s, start)
		return
	}
	if i := index8(s); i >= 0 {
		switch w.mode {
		case modeScan:
			w.mark(w.leaf)
		case modeStrict:
			w.fail(ErrUnconvertible)
			return
		default:
			w.fail(fmt.Errorf("%w: entity %d", ErrUnlabeled8Bit, w.entity))
			return
		}
	}
	if !w.scan {
		w.out.Write(s)
	}
}

func index8(s []byte) int {
	for i, c := range s {
		if c >= 0x80 {
			return i
		}
	}
	return -1
}

// mark records 8-bit octets in entity i and so in every entity around it.
func (w *Writer) mark(i int) {
	if w.plan.has(i) {
		return
	}
	w.plan.set(i)
	for k := len(w.stack) - 1; k >= 0; k-- {
		j := w.stack[k].index
		if j == i {
			continue // a multipart's own preamble or epilogue
		}
		if w.plan.has(j) {
			return // and so are the ones around it
		}
		w.plan.set(j)
	}
	w.plan.set(0)
}

// delimiter handles s if it is a boundary delimiter line of an open
// multipart. Like Go's mime/multipart and RFC 2046 5.1.1 (and unlike
// Postfix, which matches a prefix) it takes only "--boundary" with an
// optional "--" and white space.
func (w *Writer) delimiter(s []byte) bool {
	content := bytes.TrimRight(s, "\r\n")
	for k := len(w.stack) - 1; k >= 0; k-- {
		f := &w.stack[k]
		if f.kind != kindMultipart || f.closed || !bytes.HasPrefix(content, f.delim) {
			continue
		}
		rest := content[len(f.delim):]
		closing := bytes.HasPrefix(rest, []byte("--"))
		if closing {
			rest = rest[2:]
		}
		if len(bytes.Trim(rest, " \t")) != 0 {
			continue
		}
		// The line end before the delimiter belongs to it (RFC 2046
		// 5.1.1), so a quoted-printable body before it has been ended
		// with that hard line break already.
		w.stack = w.stack[:k+1]
		if !w.scan {
			w.out.Write(s)
		}
		if closing {
			f.closed = true
			w.mode = modeAround
		} else {
			w.startEntity(false, f.digest)
		}
		return true
	}
	return false
}

// around passes a preamble or epilogue line. MIME readers ignore both
// (RFC 2046 5.1.1), so nothing can be encoded there; Postfix passes their
// 8-bit octets raw. Those may not go to a 7-bit server (RFC 6152), so each
// becomes "=XX" here: the text stays legible and 7-bit, and only these
// ignored lines change.
func (w *Writer) around(s []byte, start bool) {
	i := index8(s)
	if i < 0 {
		if !w.scan {
			w.out.Write(s)
		}
		return
	}
	if w.scan {
		w.mark(w.stack[len(w.stack)-1].index)
		return
	}
	if start && bytes.HasPrefix(s, []byte("--")) {
		// Changed octets must not make the line a delimiter.
		w.out.WriteString("=2D")
		s = s[1:]
	}
	for _, c := range s {
		if c >= 0x80 {
			w.out.WriteByte('=')
			w.out.WriteByte(hex[c>>4])
			w.out.WriteByte(hex[c&0xf])
		} else {
			w.out.WriteByte(c)
		}
	}
}

const hex = "0123456789ABCDEF"

// qp encodes a piece of a line as quoted-printable (RFC 2045 6.7), its
// line end as a hard line break. Unlike Postfix, which escapes only
// controls, "=" and 8-bit octets, it also escapes "-" at the start of an
// encoded line: no encoded line can then be taken for a delimiter.
func (w *Writer) qp(s []byte, start, end bool) {
	content := s
	eol := ""
	if end {
		eol = eolOf(s, "\n")
		content = s[:len(s)-len(eol)]
	}
	for i := 0; i < len(content); {
		c := content[i]
		if w.pend != 0 {
			w.qpToken(w.pend, false)
			w.pend = 0
		}
		switch {
		case c == ' ' || c == '\t':
			// Encoded only if it ends the line (rule 3); that is not
			// known until the next octet.
			w.pend = c
			i++
		case literal(c) && !(w.col == 0 && c == '-') && w.col < qpMax:
			// Plain text goes in runs, not octet by octet.
			j, lim := i+1, i+qpMax-w.col
			if lim > len(content) {
				lim = len(content)
			}
			for j < lim && literal(content[j]) {
				j++
			}
			w.out.Write(content[i:j])
			w.col += j - i
			i = j
		default:
			w.qpToken(c, !literal(c))
			i++
		}
	}
	if end {
		if w.pend != 0 {
			w.qpToken(w.pend, true)
			w.pend = 0
		}
		w.out.WriteString(eol)
		w.col = 0
	}
}

// literal is true of the octets RFC 2045 6.7 rule 2 lets stand for
// themselves, but for white space, which the caller handles.
func literal(c byte) bool { return c > ' ' && c <= '~' && c != '=' }

func (w *Writer) qpToken(c byte, enc bool) {
	n := 1
	if enc {
		n = 3
	}
	if w.col+n > qpMax {
		w.out.WriteByte('=')
		w.out.WriteString(w.eol)
		w.col = 0
	}
	if w.col == 0 && c == '-' {
		enc, n = true, 3
	}
	if enc {
		w.out.WriteByte('=')
		w.out.WriteByte(hex[c>>4])
		w.out.WriteByte(hex[c&0xf])
	} else {
		w.out.WriteByte(c)
	}
	w.col += n
}
