// Package bounce builds delivery status notifications (RFC 3464) for mail
// that could not be delivered, and hands them to the local MTA. It reads no
// spool and talks no SMTP: the caller gives it the envelope, the reasons and
// the original content, and a command to run.
package bounce

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"regexp"
	"strings"
	"time"
)

// Recipient is one recipient the DSN reports on.
type Recipient struct {
	Addr string
	// Reply is the reason as recorded: a server's reply ("550 5.1.1 no
	// such user") or a local refusal that starts with its enhanced code
	// ("5.3.4 not sent: ...").
	Reply string
}

// Report is what one DSN says about one message.
type Report struct {
	ReportingMTA string    // this machine's name (the HELO name)
	Host         string    // the host the mail was held for
	RemoteMTA    string    // the server that refused, "" when not known
	Sender       string    // the original envelope sender: the DSN's recipient
	Arrival      time.Time // zero when not known
	Date         time.Time // the DSN's Date; zero: now
	Rcpts        []Recipient
	// Delayed makes a delay warning (Action: delayed, Status 4.0.0)
	// instead of a failure report; RetryUntil, when set, is when the
	// message will be given up.
	Delayed    bool
	RetryUntil time.Time
}

// MaxHeaders caps the original header block returned in the DSN: the
// sender needs enough to recognise the message, not a copy of a huge or
// hostile header.
const MaxHeaders = 64 << 10

// maxDiag caps a diagnostic so that its header line stays within RFC
// 5322's 998 octets.
const maxDiag = 900

var enhanced = regexp.MustCompile(`^([245])\.(\d{1,3})\.(\d{1,3})$`)

// Status is the RFC 3463 status for a failed recipient: the enhanced code
// in reply, if it has one of class 5, else 5.0.0. A server's 5xx reply
// with a 4.x.x code is reported as 5.0.0 so that Action and Status agree.
// A local reason keeps its own code: expiry is 4.4.7 with Action failed,
// as Postfix reports it (the last trouble was temporary, giving up is not).
func Status(reply string) string {
	f := strings.Fields(reply)
	for i := 0; i < len(f) && i < 2; i++ {
		if m := enhanced.FindStringSubmatch(f[i]); m != nil {
			if m[1] == "5" || (m[1] == "4" && !fromServer(reply)) {
				return f[i]
			}
			break
		}
	}
	return "5.0.0"
}

// fromServer tells a server's reply ("550 ...") from a local reason.
func fromServer(reply string) bool {
	return len(reply) >= 4 && reply[0] >= '2' && reply[0] <= '5' &&
		isDigit(reply[1]) && isDigit(reply[2]) && (reply[3] == ' ' || reply[3] == '-')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Sanitize makes s safe for one header line of a DSN: no control
// characters (a line break would forge fields), only ASCII, and at most
// maxDiag octets.
func Sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		case r >= 0x80:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
		if b.Len() >= maxDiag {
			b.WriteString("...")
			break
		}
	}
	return strings.TrimSpace(b.String())
}

// addrField is an address for Final-Recipient: "rfc822; a@b", or for an
// address that is not ASCII, "utf-8; " with RFC 6533's \x{HEX} escapes,
// because a message/delivery-status part must stay ASCII.
func addrField(a string) string {
	ascii := true
	for i := 0; i < len(a); i++ {
		if a[i] >= 0x80 || a[i] < 0x20 || a[i] == 0x7f {
			ascii = false
			break
		}
	}
	if ascii {
		return "rfc822; " + a
	}
	var b strings.Builder
	for _, r := range a {
		if r < 0x21 || r >= 0x7f || r == '\\' || r == '+' || r == '=' {
			fmt.Fprintf(&b, `\x{%X}`, r)
			continue
		}
		b.WriteRune(r)
	}
	return "utf-8; " + b.String()
}

// Write writes the DSN for r to w, CRLF line ends throughout (sendmail
// and Exim take CRLF as the line end of a local submission). original
// is the undelivered message's content; only its header block is read,
// up to MaxHeaders octets.
func Write(w io.Writer, r Report, original io.Reader) error {
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	mw := multipart.NewWriter(w)
	var hdr strings.Builder
	h := func(k, v string) { fmt.Fprintf(&hdr, "%s: %s\r\n", k, v) }
	mta := Sanitize(r.ReportingMTA)
	h("From", "Mail Delivery System <MAILER-DAEMON@"+mta+">")
	h("To", "<"+Sanitize(r.Sender)+">")
	if r.Delayed {
		h("Subject", "Delayed Mail (still being retried)")
	} else {
		h("Subject", "Undelivered Mail Returned to Sender")
	}
	h("Date", date.Format(time.RFC1123Z))
	h("Message-ID", "<"+randomID()+".etrnflush@"+mta+">")
	// RFC 3834: an automatic reply; vacation programs must not answer it.
	h("Auto-Submitted", "auto-replied")
	h("MIME-Version", "1.0")
	h("Content-Type", `multipart/report; report-type=delivery-status; boundary="`+mw.Boundary()+`"`)
	hdr.WriteString("\r\n")
	if _, err := io.WriteString(w, hdr.String()); err != nil {
		return err
	}

	// The human-readable part.
	p, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":        {"text/plain; charset=us-ascii"},
		"Content-Description": {"Notification"},
	})
	if err != nil {
		return err
	}
	var t strings.Builder
	fmt.Fprintf(&t, "This is the mail system at %s.\r\n\r\n", mta)
	if r.Delayed {
		fmt.Fprintf(&t, "Your message held for %s has not yet been delivered to the\r\n", Sanitize(r.Host))
		t.WriteString("recipients below. Delivery is still being tried; you need not resend it.\r\n")
		if !r.RetryUntil.IsZero() {
			fmt.Fprintf(&t, "It will be given up after %s.\r\n", r.RetryUntil.Format(time.RFC1123Z))
		}
		t.WriteString("\r\n")
		for _, rc := range r.Rcpts {
			fmt.Fprintf(&t, "<%s>\r\n", Sanitize(rc.Addr))
		}
	} else {
		fmt.Fprintf(&t, "Your message held for %s could not be delivered to the\r\n", Sanitize(r.Host))
		t.WriteString("recipients below. The failure is permanent: it will not be tried again.\r\n\r\n")
		for _, rc := range r.Rcpts {
			who := "our mail system said"
			if fromServer(rc.Reply) {
				who = "the server said"
				if r.RemoteMTA != "" {
					who = Sanitize(r.RemoteMTA) + " said"
				}
			}
			fmt.Fprintf(&t, "<%s>: %s: %s\r\n", Sanitize(rc.Addr), who, Sanitize(rc.Reply))
		}
	}
	if _, err := io.WriteString(p, t.String()); err != nil {
		return err
	}

	// The machine-readable part (RFC 3464 section 2).
	p, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"message/delivery-status"}})
	if err != nil {
		return err
	}
	var d strings.Builder
	fmt.Fprintf(&d, "Reporting-MTA: dns; %s\r\n", mta)
	if !r.Arrival.IsZero() {
		fmt.Fprintf(&d, "Arrival-Date: %s\r\n", r.Arrival.Format(time.RFC1123Z))
	}
	for _, rc := range r.Rcpts {
		d.WriteString("\r\n")
		fmt.Fprintf(&d, "Final-Recipient: %s\r\n", addrField(rc.Addr))
		if r.Delayed {
			d.WriteString("Action: delayed\r\nStatus: 4.0.0\r\n")
			if !r.RetryUntil.IsZero() {
				fmt.Fprintf(&d, "Will-Retry-Until: %s\r\n", r.RetryUntil.Format(time.RFC1123Z))
			}
			continue
		}
		d.WriteString("Action: failed\r\n")
		fmt.Fprintf(&d, "Status: %s\r\n", Status(rc.Reply))
		if fromServer(rc.Reply) {
			if r.RemoteMTA != "" {
				fmt.Fprintf(&d, "Remote-MTA: dns; %s\r\n", Sanitize(r.RemoteMTA))
			}
			fmt.Fprintf(&d, "Diagnostic-Code: smtp; %s\r\n", Sanitize(rc.Reply))
		}
	}
	if _, err := io.WriteString(p, d.String()); err != nil {
		return err
	}

	// The original header block (RFC 6522's text/rfc822-headers).
	p, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/rfc822-headers"}})
	if err != nil {
		return err
	}
	if err := copyHeaders(p, original); err != nil {
		return err
	}
	return mw.Close()
}

// copyHeaders streams the header block of content to w, each line ended
// with CRLF, stopping at the empty line, at the end, or at MaxHeaders
// octets (at a line boundary, so that no field is cut in two).
func copyHeaders(w io.Writer, content io.Reader) error {
	br := bufio.NewReaderSize(content, 4096)
	bw := bufio.NewWriter(w)
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer is no header line a sender
			// needs; the block stops here.
			break
		}
		if err != nil && err != io.EOF {
			return err
		}
		body := strings.TrimRight(string(line), "\r\n")
		if body == "" || n+len(body)+2 > MaxHeaders {
			break
		}
		n += len(body) + 2
		if _, werr := bw.WriteString(body + "\r\n"); werr != nil {
			return werr
		}
		if err == io.EOF {
			break
		}
	}
	return bw.Flush()
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return hex.EncodeToString(b[:])
}
