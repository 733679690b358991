package spool

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/mail"
	"net/textproto"
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
	seen map[string]int
}

func (k *keyed) Next() (*Message, error) {
	m, err := k.Spool.Next()
	if err != nil || m == nil {
		return m, err
	}
	key, h, err := contentKey(m)
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

// contentKey digests m's sender, size and first KeyPrefix octets, and
// reads its header from those octets.
func contentKey(m *Message) (string, head, error) {
	rc, err := m.Open()
	if err != nil {
		return "", head{}, err
	}
	buf, err := io.ReadAll(io.LimitReader(rc, KeyPrefix))
	if cerr := rc.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return "", head{}, err
	}
	d := sha256.New()
	fmt.Fprintf(d, "%s\x00%d\x00", m.From, m.Size)
	d.Write(bytes.ReplaceAll(buf, []byte("\r\n"), []byte("\n")))
	return hex.EncodeToString(d.Sum(nil)[:8]), parseHead(buf), nil
}

// eximIDRe finds Exim's message id in a Received: field ("id 1xXKke-000173-05");
// both the 4.97+ form and the older 6-6-2 one.
var eximIDRe = regexp.MustCompile(`\bid ([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\b`)

// parseHead reads what it can of the header in buf: a damaged or cut
// header gives the fields before the damage.
func parseHead(buf []byte) head {
	var h head
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(buf)))
	mh, _ := tp.ReadMIMEHeader() // partial on damage: use what there is
	if rs := mh["Received"]; len(rs) > 0 {
		top := rs[0]
		if i := strings.LastIndexByte(top, ';'); i >= 0 {
			if t, err := mail.ParseDate(strings.TrimSpace(top[i+1:])); err == nil {
				h.received = t
			}
		}
		if sm := eximIDRe.FindStringSubmatch(top); sm != nil {
			h.eximID = sm[1]
		}
	}
	h.messageID = strings.TrimSpace(mh.Get("Message-Id"))
	return h
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
