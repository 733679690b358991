// Package sender replays messages over one SMTP connection and reports a
// final outcome per message and per recipient. It never touches files: the
// caller hands it messages whose content it can open, and acts on the
// outcomes it gets back.
//
// How a session sends depends on what the server offers after EHLO:
//
//   - PIPELINING and CHUNKING (RFC 2920, RFC 3030): MAIL and RCPT stream
//     without waiting for any reply, and a second goroutine reads the
//     replies. A message that fits one chunk goes as one BDAT n LAST
//     behind its envelope, which a server may refuse once without counting
//     a protocol error; the later chunks of a bigger message (64 KiB each)
//     wait for its RCPT replies and are never sent when no recipient was
//     accepted. A batch costs about one round trip per window of messages.
//   - PIPELINING alone: a message's content and dot travel in one write
//     with the next message's MAIL, RCPT and DATA; only the 354 is waited
//     for, so a message costs one round trip.
//   - Neither (or Options.NoPipelining): lock-step, one command and its
//     reply at a time, with a check that no reply comes unasked.
//
// In the pipelined modes at most Options.MaxInflight messages (default
// DefaultMaxInflight) and about 2 MiB of content are written and not yet
// answered; that is also what a SIGKILL can at worst cause to be sent
// twice. Memory stays flat whatever the message size or batch length.
package sender

import (
	"crypto/tls"
	"io"
	"net"
	"time"
)

// TLSLevel follows Postfix's smtp_tls_security_level names.
type TLSLevel int

const (
	// TLSMay uses STARTTLS when offered and does not check the certificate.
	TLSMay TLSLevel = iota
	// TLSNone never uses TLS.
	TLSNone
	// TLSEncrypt requires STARTTLS but does not check the certificate.
	TLSEncrypt
	// TLSVerify requires STARTTLS and a certificate valid for the TLS name.
	TLSVerify
)

// Options configures a Session. Zero values take the documented defaults.
type Options struct {
	// Addr is the host:port to dial. Its host part is also the TLS name
	// when TLSName is empty.
	Addr string
	// Helo is the name sent with EHLO/HELO; it must not be empty and must
	// not contain spaces or line breaks.
	Helo string
	// TLS says whether STARTTLS is used and how the certificate is checked
	// (see TLSLevel). The zero value is TLSMay.
	TLS TLSLevel
	// TLSName is the name the certificate must match under TLSVerify, and
	// the SNI name; empty means the host part of Addr.
	TLSName string
	// TLSConf is an optional base TLS configuration (RootCAs for tests, a
	// client certificate). It is cloned; ServerName, InsecureSkipVerify and
	// a minimum of TLS 1.2 are set on the clone from the fields above.
	TLSConf *tls.Config
	// Timeout bounds the connect, the TLS handshake, each command's reply
	// and each single write (a peer that stops reading fails the write
	// after Timeout). Default 5 minutes.
	Timeout time.Duration
	// DataTimeout bounds the wait for the reply to the final dot or BDAT
	// LAST (RFC 5321 4.5.3.2.6 suggests 10 minutes, the default). In a
	// pipelined session each reply's wait starts when the one before it
	// arrived (or when its command left, if later).
	DataTimeout time.Duration
	// AuthUser and AuthPass, when AuthUser is set, are sent with AUTH PLAIN
	// (or LOGIN when PLAIN is not offered), and only over TLS: without TLS
	// Dial fails rather than expose them.
	AuthUser string
	AuthPass string
	// Dial, when set, replaces net.Dialer (tests, and later ATRN). It is
	// called with network "tcp", Addr and Timeout.
	Dial func(network, addr string, timeout time.Duration) (net.Conn, error)
	// MaxInflight bounds the messages taken from next and not yet
	// reported when the server offers PIPELINING (RFC 2920): with CHUNKING
	// the writer waits once that many are unanswered, and next is never
	// called more than that far ahead of report. 0 (or less) means
	// DefaultMaxInflight, 32; 1 waits for each message's outcome before
	// taking the next. It is also what a SIGKILL can at worst cause to be
	// sent twice. Lock-step sessions always have one message in flight.
	MaxInflight int
	// NoPipelining refuses PIPELINING (RFC 2920) even when the server
	// offers it: the session is lock-step, and CHUNKING goes unused too.
	// NoChunking refuses CHUNKING (RFC 3030): a pipelining session then
	// sends DATA. Both are for servers that advertise an extension and
	// then misbehave.
	NoPipelining bool
	NoChunking   bool
	// EightBit says what happens to 8-bit content (Message.EightBit) when
	// the server does not offer 8BITMIME (RFC 6152): converted to 7-bit
	// MIME (the zero value), or refused as a permanent failure.
	EightBit EightBitPolicy
	// Trace, when set, gets the transcript: each command line written
	// (dir "C": MAIL, RCPT, BDAT with its size, the final dot; never
	// content, nor AUTH's credentials) and each reply line read (dir "S"),
	// sanitised. A pipelined session calls it from two goroutines.
	Trace func(dir, line string)
}

// EightBitPolicy is what to do with 8-bit content for a server without
// 8BITMIME.
type EightBitPolicy int

const (
	// EightBitConvert re-encodes 8-bit parts as quoted-printable, as
	// Postfix does; a message whose header is 8-bit cannot be converted
	// and is refused.
	EightBitConvert EightBitPolicy = iota
	// EightBitRefuse sets such a message aside as failed.
	EightBitRefuse
)

// Message is one SMTP transaction to replay.
type Message struct {
	From string   // reverse path without brackets; "" is the null sender
	To   []string // forward paths without brackets
	Size int64    // content size in octets, as stored
	// WireSize, when not 0, is the exact size on the wire (CRLF line
	// ends, no dot-stuffing) for SIZE= (RFC 1870), known from the parse;
	// when 0 the sender reads the content once to count it.
	WireSize int64
	EightBit bool // content holds octets >= 0x80
	// Open returns the content, not dot-stuffed, with LF or CRLF line
	// ends. The sender converts bare LF to CRLF and dot-stuffs.
	Open func() (io.ReadCloser, error)
}

// Status is the final state of one recipient.
type Status int

const (
	// Deferred: no final answer; keep the message for this recipient.
	Deferred Status = iota
	// Sent: the server took responsibility (2xx after the final dot).
	Sent
	// Failed: the server refused permanently (5xx).
	Failed
)

func (s Status) String() string {
	switch s {
	case Sent:
		return "sent"
	case Failed:
		return "failed"
	}
	return "deferred"
}

// Reply is a server reply, or a local reason when Code is 0.
type Reply struct {
	Code int    // 0 when the reason is local (timeout, lost connection, ...)
	Text string // enhanced code and text, lines joined with " "; or the local reason
}

// Result is the outcome of one Message.
type Result struct {
	Rcpts []Status // one per Message.To, same order
	// Reply explains the outcome: the reply to the final dot, or the reply
	// or local error that ended the transaction early.
	Reply Reply
	// RcptReplies holds the reply to each RCPT (Code 0 if none was read).
	RcptReplies []Reply
	// Uncertain is set when the final dot (or BDAT LAST) was sent but no
	// reply to it was read: the server may have accepted the message.
	// Every recipient not refused at RCPT is then reported Deferred.
	Uncertain bool
	// Local is set when the message was refused here, without being
	// offered: the server could never take it as it is (see Reply).
	Local bool
	// MailRefused is set when the server refused MAIL FROM itself (Reply
	// is that refusal): the sender, not a recipient, was turned away.
	MailRefused bool
	// Converted is set when 8-bit content was re-encoded as 7-bit MIME
	// for a server without 8BITMIME.
	Converted bool
	// Unsent is set when the session ended (a 421, a lost connection)
	// before the server said anything about this message and before it
	// could have taken it: every recipient is Deferred, none was refused,
	// the end of the content never left or was answered 421. Offering it
	// again in a new session cannot deliver it twice.
	Unsent bool
	// RcptUnsent marks, per Message.To, a recipient the server's
	// recipient limit left for a further transaction (RFC 5321
	// 4.5.3.1.10) that the session ended before the server said anything
	// about: the recipient is Deferred, and was never part of a
	// transaction that may have delivered, so a new session may offer it
	// again. Nil when there is none.
	RcptUnsent []bool
}

// unsentRcpt marks recipient i of r as RcptUnsent.
func (r *Result) unsentRcpt(i int) {
	if r.RcptUnsent == nil {
		r.RcptUnsent = make([]bool, len(r.Rcpts))
	}
	r.RcptUnsent[i] = true
}
