package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// KeyPrefix is how much of a message's content its Key covers. Enough
// to tell messages apart (their header blocks differ in Message-ID,
// Date and Received:), little enough that computing it costs nothing
// next to sending.
const KeyPrefix = 32 << 10

// keyed gives every message its Key while it is read. The key is a
// digest of the sender, the size and the first KeyPrefix octets of the
// content, none of which a partial delivery changes (the recipients do,
// the file and its offsets do), so a dry run, the flush and every later
// run of a message that was partly delivered name it alike. Messages
// alike in all of that (Exim's one-per-recipient copies of one message)
// get ~1, ~2, ... in spool order.
type keyed struct {
	Spool
	seen   map[string]int
	buf    []byte // KeyPrefix octets, reused for each message
	digest hash.Hash
	pre    []byte // the digested sender and size, reused
	sum    []byte // the digest, reused
}

func (k *keyed) Next() (*Message, error) {
	m, err := k.Spool.Next()
	if err != nil || m == nil {
		return m, err
	}
	key, h, err := k.contentKey(m)
	if err != nil {
		// Content that cannot be read now is the sender's to report (it
		// keeps the message); the id then comes from where it is.
		sum := sha256.Sum256([]byte(m.ID))
		key = "x" + hex.EncodeToString(sum[:8])[1:] // not all hex: not a content id
	}
	if n := k.seen[key]; n > 0 {
		k.seen[key] = n + 1
		key += "~" + strconv.Itoa(n)
	} else {
		k.seen[key] = 1
	}
	m.Key = key
	m.MessageID, m.EximID, m.Received = h.messageID, h.eximID, h.received
	if sm := eximNameRe.FindStringSubmatch(m.ID); m.EximID == "" && sm != nil {
		// Exim names mailstore files MSGID-PID.env: a header without
		// our Received: field still has its id.
		m.EximID = sm[1]
	}
	return m, nil
}

// eximNameRe finds Exim's message id at the start of a mailstore name.
var eximNameRe = regexp.MustCompile(`^([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})-[0-9A-Za-z]+\.`)

// head is what a message's header says of its identity and age.
type head struct {
	received  time.Time
	eximID    string
	messageID string
}

// contentKey digests m's sender, size and first KeyPrefix octets (line
// ends as LF), and reads its header from those octets. It runs once per
// message on the flush's hot path, so it reuses one buffer and one
// digest: a fresh growing buffer, a CRLF-replaced copy and a parsed
// header map per message were a quarter of a flush's CPU.
func (k *keyed) contentKey(m *Message) (string, head, error) {
	rc, err := m.Open()
	if err != nil {
		return "", head{}, err
	}
	if k.buf == nil {
		k.buf, k.digest = make([]byte, KeyPrefix), sha256.New()
	}
	n, err := io.ReadFull(rc, k.buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	if cerr := rc.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return "", head{}, err
	}
	buf := crlfToLF(k.buf[:n])
	d := k.digest
	d.Reset()
	k.pre = append(strconv.AppendInt(append(append(k.pre[:0], m.From...), 0), m.Size, 10), 0)
	d.Write(k.pre)
	d.Write(buf)
	k.sum = d.Sum(k.sum[:0])
	return hex.EncodeToString(k.sum[:8]), parseHead(buf), nil
}

// crlfToLF turns every CRLF in b into LF, in place.
func crlfToLF(b []byte) []byte {
	i := bytes.Index(b, crlf)
	if i < 0 {
		return b
	}
	w := i
	for i < len(b) {
		j := bytes.Index(b[i+2:], crlf)
		if j < 0 {
			// The \r of the last CRLF goes; what follows it stays.
			w += copy(b[w:], b[i+1:])
			break
		}
		w += copy(b[w:], b[i+1:i+2+j])
		i += 2 + j
	}
	return b[:w]
}

var crlf = []byte("\r\n")

// eximIDRe finds Exim's message id in a Received: field ("id 1xXKke-000173-05");
// both the 4.97+ form and the older 6-6-2 one.
var eximIDRe = regexp.MustCompile(`\bid ([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\b`)

// parseHead reads what it can of the header in buf (line ends already
// LF): the top Received: field's date and Exim id, and the Message-ID.
// It follows net/textproto's ReadMIMEHeader to the octet, so a damaged or
// cut header gives the fields before the damage as it did, but builds
// no map of every field.
func parseHead(buf []byte) head {
	var h head
	var rcv, mid bool
	for len(buf) > 0 && !(rcv && mid) {
		line, rest := cutLF(buf)
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			break // the end of the header, or a header that starts folded
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !fieldName(line[:colon]) {
			break // not a field: damage
		}
		name := line[:colon]
		want := (!rcv && bytes.EqualFold(name, []byte("Received"))) ||
			(!mid && bytes.EqualFold(name, []byte("Message-Id")))
		ok := fieldValue(line[colon+1:])
		var value []byte
		if want {
			value = append(value, textTrim(line[colon+1:])...)
		}
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			var cont []byte
			cont, rest = cutLF(rest)
			ok = ok && fieldValue(cont)
			if want {
				value = append(append(value, ' '), textTrim(cont)...)
			}
		}
		if !ok {
			break // a control octet in the value: damage
		}
		buf = rest
		switch {
		case !want:
		case name[0] == 'R' || name[0] == 'r':
			rcv = true
			top := string(value)
			if i := strings.LastIndexByte(top, ';'); i >= 0 {
				if t, err := mail.ParseDate(strings.TrimSpace(top[i+1:])); err == nil {
					h.received = t
				}
			}
			if sm := eximIDRe.FindStringSubmatch(top); sm != nil {
				h.eximID = sm[1]
			}
		default:
			mid = true
			h.messageID = strings.TrimSpace(string(value))
		}
	}
	return h
}

// cutLF splits b after its first line, which loses its LF. A CR before
// it is kept: with line ends already LF, it was a stray CR of "\r\r\n",
// which damages the field as it did for net/textproto.
func cutLF(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+1:]
}

// fieldName: the octets net/textproto takes in a field name, a token's
// and the space (a space-padded name is kept, and matches no name we
// look for).
func fieldName(b []byte) bool {
	for _, c := range b {
		if c != ' ' && !tokenOctet(c) {
			return false
		}
	}
	return true
}

func tokenOctet(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// fieldValue: no control octet but the tab (obs-text is fine).
func fieldValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// textTrim trims spaces and tabs at both ends, as net/textproto does.
func textTrim(b []byte) []byte {
	return bytes.Trim(b, " \t")
}

// copyName is the stem a failed copy of m is named after: its Key, so
// that the failed listing names it as the log did; its file-based ID for
// a message that did not come through Open.
func (m *Message) copyName() string {
	if m.Key != "" {
		return m.Key
	}
	return m.ID
}
