package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"etrnflush/flush"
	"etrnflush/logging"
	"etrnflush/plan"
	"etrnflush/sender"
	"etrnflush/spool"
)

// atrn answers ATRN (RFC 2645): 530 before AUTH, 501 syntax, 450 refused
// (a host the user does not own), 453 no mail, 451 unable now (every host
// with mail is being flushed already, or its spool cannot be read), and on
// 250 turns the connection around: etrnflush becomes the SMTP client on
// it, TLS kept, and flushes the hosts down it one after the other.
func (s *session) atrn(ctx context.Context, arg string) error {
	switch {
	case s.helo == "":
		return s.reply(503, "5.5.1 Send EHLO first")
	case s.user == "":
		return s.reply(530, "5.7.0 Authentication required")
	}
	asked, err := parseATRN(arg)
	if err != nil {
		return s.reply(501, "5.5.4 Syntax: ATRN [domain[,domain...]]")
	}
	owned := s.cfg.Conf.Users[s.user].Hosts
	if len(asked) == 0 {
		asked = owned
	}
	for _, h := range asked {
		if !slices.Contains(owned, h) {
			s.log.Warnf("event=atrn client=%s user=%s host=%s status=refused reason=%s", s.clientStr, logging.Quote(s.user), h, logging.Quote("not one of the user's hosts"))
			return s.reply(450, "4.7.1 ATRN request refused")
		}
	}
	var ready []string
	busy, broken := 0, 0
	for _, h := range asked {
		st := s.cfg.Conf.For(h)
		n, err := countMessages(st)
		if err != nil {
			s.log.Warnf("event=atrn client=%s host=%s status=error error=%s", s.clientStr, h, logging.Quote("cannot count messages: "+err.Error()))
			broken++
			continue
		}
		if n == 0 {
			continue
		}
		b, err := spool.HostBusy(filepath.Dir(st.Spool), h)
		if err != nil {
			s.log.Warnf("event=atrn client=%s host=%s status=error error=%s", s.clientStr, h, logging.Quote(err.Error()))
			broken++
			continue
		}
		if b {
			busy++
			continue
		}
		ready = append(ready, h)
	}
	if len(ready) == 0 {
		if busy > 0 || broken > 0 {
			s.log.Infof("event=atrn client=%s user=%s hosts=%s status=busy busy=%d unreadable=%d", s.clientStr, logging.Quote(s.user), strings.Join(asked, ","), busy, broken)
			return s.reply(451, "4.3.0 Unable to process ATRN request now")
		}
		s.log.Infof("event=atrn client=%s user=%s hosts=%s status=empty", s.clientStr, logging.Quote(s.user), strings.Join(asked, ","))
		return s.reply(453, "4.7.0 You have no mail")
	}
	if err := s.reply(250, "2.0.0 OK now reversing the connection"); err != nil {
		return err
	}
	if s.br.Buffered() > 0 {
		// The client must wait for the 250 before it speaks as a server;
		// anything already here was sent blind and cannot be trusted as
		// its greeting.
		s.log.Warnf("event=atrn client=%s status=error error=%s", s.clientStr, logging.Quote("sent data before the ATRN reply; closing"))
		return errors.New("data before the ATRN turnaround")
	}
	s.log.Infof("event=atrn client=%s user=%s hosts=%s status=turned tls=%v", s.clientStr, logging.Quote(s.user), strings.Join(ready, ","), s.tls)
	return s.deliver(ctx, ready)
}

// deliver is the provider's half after the turnaround: wait for the
// customer's 220, EHLO, then one flush per host on the same session (the
// usual engine: each message leaves the spool only after the customer's
// 2xx to its final dot), then QUIT.
func (s *session) deliver(ctx context.Context, hosts []string) error {
	st := s.cfg.Conf.For(hosts[0])
	if err := s.conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear deadline: %w", err)
	}
	conn := s.conn
	if s.cfg.ImplicitTLS && !noLineRecords {
		// Only under --tls-on-connect: that is what fetchmail's ssl
		// option speaks (it never sends STARTTLS), and the price of a
		// record per line is not paid by STARTTLS customers.
		conn = lineRecords{conn}
	}
	used := false
	// One session serves all the hosts: the first one's engine settings
	// apply to it.
	so := plan.Sender(st)
	so.Addr = "atrn:" + s.clientStr
	so.Helo = s.cfg.Hostname
	so.TLS = sender.TLSNone // the connection keeps the TLS it has; no second STARTTLS
	so.TLSName, so.AuthUser = "", ""
	// Never BDAT after the turnaround, whatever the host's chunking
	// says: the customer is often fetchmail relaying to its own MTA,
	// and fetchmail's relay reads this side a line at a time. A chunk
	// that ends inside a line (a big message is cut into 64 KiB
	// chunks) then waits in fetchmail until the next one, which is
	// sent only after the reply to this one: a deadlock until the
	// timeout. DATA always ends on a line.
	so.NoChunking = true
	so.Dial = func(string, string, time.Duration) (net.Conn, error) {
		if used {
			return nil, errors.New("the ATRN connection is already used")
		}
		used = true
		return conn, nil
	}
	sess, err := sender.Dial(ctx, so)
	s.closed = used // the sender closes the connection from here on
	if err != nil {
		s.log.Warnf("event=atrn client=%s status=error error=%s", s.clientStr, logging.Quote("the customer did not start an SMTP session: "+err.Error()))
		return err
	}
	for _, h := range hosts {
		// The host's own flush settings (spool, coalescing, refusals,
		// bounces, expiry, warnings: an ODMR customer may never be
		// flushed otherwise), over the one turned-around session.
		fc := plan.Flush(s.cfg.Conf.For(h))
		fc.Sender, fc.Session, fc.Log = so, sess, s.log
		fc.Dests, fc.Resolve = nil, nil
		sum, err := flush.Run(ctx, fc)
		if err != nil || sum.Unreachable {
			break // Run logged it; a dead session serves no further host
		}
	}
	if err := sess.Close(); err != nil {
		s.log.Debugf("event=quit client=%s error=%s", s.clientStr, logging.Quote(err.Error()))
	}
	// The sender closed the connection: the conversation is over, and
	// must not go back to reading commands from it.
	return errQuit
}

// lineRecords puts each line written in a TLS record of its own. fetchmail
// 6.4, the usual ODMR customer, relays the provider's side by waiting on
// the raw socket and then reading one line from TLS: lines that came in
// the same record as the one it read sit in its TLS buffer, unseen, until
// more data arrives, and the session stalls (the pipelined RCPT and DATA
// behind a MAIL, the lines of a message). With one line per record every
// line makes the socket readable. The price is a record header and a
// write per line (22 octets per line with TLS 1.3 and AES-GCM, some 30%
// more on 76-octet lines; on loopback about 45% fewer messages per
// second, see BenchmarkATRNTLS), so it is done only with implicit TLS.
type lineRecords struct{ net.Conn }

// noLineRecords turns lineRecords off, for BenchmarkATRNTLS to measure
// what it costs.
var noLineRecords = false

func (c lineRecords) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line = p[:i+1]
		}
		m, err := c.Conn.Write(line)
		n += m
		if err != nil {
			return n, err
		}
		p = p[len(line):]
	}
	return n, nil
}
