package serve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

// A customer is the ODMR customer's SMTP server: the fake server of
// internal/fakesmtp, serving the very connection the test client sent
// ATRN on. Refusals are RCPT faults; a dropped link is a DATA fault.

// messages returns "from>to1,to2|data" per message cust accepted, sorted.
func messages(cust *fakesmtp.Server) []string {
	var out []string
	for _, m := range cust.Messages() {
		out = append(out, m.Envelope()+"|"+string(m.Data))
	}
	sort.Strings(out)
	return out
}

// serveCustomer turns the client side around: from now on it is the SMTP
// server on c.c, and it returns once the provider has said QUIT.
func (c *conn) serveCustomer(t testing.TB, cust *fakesmtp.Server) {
	t.Helper()
	cust.Domain = "customer.example"
	cust.Timeout = 30 * time.Second
	served := make(chan error, 1)
	go func() { served <- cust.Serve(fakesmtp.OneConn(c.c)) }()
	select {
	case <-cust.LoggedOut():
	case <-time.After(60 * time.Second):
		t.Fatal("the provider did not finish the session within 60s")
	}
	if err := cust.Close(); err != nil {
		t.Error(err)
	}
	if err := <-served; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("customer server: %v", err)
	}
	select {
	case err := <-c.done:
		c.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the ATRN delivery")
	}
}

func want(host string, i int) string {
	return "sender@isp.example>user" + string(rune('0'+i)) + "@" + host +
		"|Subject: message " + string(rune('0'+i)) + " for " + host + "\r\n\r\nbody " + string(rune('0'+i)) + "\r\n.dot line\r\n"
}

// TestODMREndToEnd: STARTTLS with a test-made certificate, AUTH, ATRN; the
// test client then acts as the SMTP server on the same TLS connection and
// receives the mail of both its hosts over one session; the spools end
// empty.
func TestODMREndToEnd(t *testing.T) {
	f := hostsFixture(t, trustLocal)
	leaf := f.withTLS()
	f.hold("h1.example", 2)
	f.hold("h2.example", 1)
	c := f.start()
	c.cmd("EHLO customer.example", 250, "STARTTLS")
	c.startTLS(leaf)
	c.cmd("EHLO customer.example", 250, "ATRN")
	c.cmd("ATRN", 530, "Authentication required")
	c.cmd("AUTH PLAIN "+plainAuth("alice", "wrong"), 535, "")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
	c.cmd("ATRN dyn.example", 450, "refused")
	c.cmd("ATRN", 250, "reversing")
	cust := &fakesmtp.Server{}
	c.serveCustomer(t, cust)

	got := messages(cust)
	exp := []string{want("h1.example", 0), want("h1.example", 1), want("h2.example", 0)}
	sort.Strings(exp)
	if strings.Join(got, "\n") != strings.Join(exp, "\n") {
		t.Errorf("customer received\n%q\nwant\n%q", got, exp)
	}
	for _, h := range []string{"h1.example", "h2.example"} {
		if n := f.count(h); n != 0 {
			t.Errorf("%s: %d messages left in the spool", h, n)
		}
	}
	assertNoWorkFiles(t, f.spool)
	log := f.log.String()
	for _, w := range []string{"status=turned tls=true", "event=summary host=h1.example sent=2", "event=summary host=h2.example sent=1"} {
		if !strings.Contains(log, w) {
			t.Errorf("log lacks %q:\n%s", w, log)
		}
	}
	if got := f.calls(); len(got) != 0 {
		t.Errorf("ATRN started detached flushes: %v", got)
	}
}

// TestODMRSomeHosts: ATRN naming one host delivers that host only; the
// customer's refusals get the usual treatment (a 4xx keeps the message,
// a 5xx moves it aside), and clear text works where the admin allows it.
func TestODMRSomeHosts(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true")
	f.hold("h1.example", 3)
	f.hold("h2.example", 1)
	c := f.start()
	c.cmd("EHLO customer.example", 250, "ATRN")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
	c.cmd("ATRN H1.example", 250, "reversing")
	cust := &fakesmtp.Server{Faults: map[string]fakesmtp.Fault{
		"RCPT user1@h1.example": {Code: 451, Enhanced: smtp.EnhancedCode{4, 2, 0}, Text: "try later"},
		"RCPT user2@h1.example": {Code: 550, Enhanced: smtp.EnhancedCode{5, 1, 1}, Text: "no such user"},
	}}
	c.serveCustomer(t, cust)
	got := messages(cust)
	if len(got) != 1 || got[0] != want("h1.example", 0) {
		t.Errorf("customer received %q", got)
	}
	if n := f.count("h1.example"); n != 1 {
		t.Errorf("h1 spool holds %d messages, want the deferred one", n)
	}
	if n := f.count("h2.example"); n != 1 {
		t.Errorf("h2, not asked for, holds %d messages, want 1", n)
	}
	log := f.log.String()
	if !strings.Contains(log, "tls=false") || !strings.Contains(log, "status=failed") || !strings.Contains(log, "status=deferred") {
		t.Errorf("log:\n%s", log)
	}
}

// TestODMRDropped: the customer's link dies after the final dot of the
// second message. The first is gone from the spool (accepted), the second
// stays (the reply never came: it may be sent twice, never lost), the third
// was never offered and stays; the conversation ends.
func TestODMRDropped(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true")
	f.hold("h1.example", 3)
	c := f.start()
	c.cmd("EHLO customer.example", 250, "ATRN")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
	c.cmd("ATRN h1.example", 250, "reversing")
	// The link dies after the second message's final dot (user1's).
	cust := &fakesmtp.Server{Faults: map[string]fakesmtp.Fault{"DATA #2": {Close: fakesmtp.Drop}}}
	c.serveCustomer(t, cust)
	if got := messages(cust); len(got) != 1 || got[0] != want("h1.example", 0) {
		t.Errorf("customer kept %q", got)
	}
	if n := f.count("h1.example"); n != 2 {
		t.Errorf("%d messages left for h1, want 2", n)
	}
	if log := f.log.String(); !strings.Contains(log, "status=uncertain") {
		t.Errorf("the message in flight is not logged as uncertain:\n%s", log)
	}
}

// TestODMRMaildir: ATRN and the ETRN count read a maildir spool (Exim's
// Return-path:/Envelope-to: on top) the way a flush does; the envelope
// fields are not relayed.
func TestODMRMaildir(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true\netrn_limit = 0")
	md := filepath.Join(f.spool, "h2.example")
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(md, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		msg := fmt.Sprintf("Return-path: <sender@isp.example>\nEnvelope-to: user%d@h2.example\nDelivery-date: Sat, 28 Nov 2026 15:54:10 +0000\nSubject: maildir %d\n\nbody %d\n.dot\n", i, i, i)
		name := fmt.Sprintf("1795880606.M%dP29784.mx.isp.example", i)
		if err := os.WriteFile(filepath.Join(md, "new", name), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := f.start()
	c.cmd("ETRN h2.example", 253, "2 pending messages for node h2.example")
	c.cmd("EHLO customer.example", 250, "ATRN")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
	c.cmd("ATRN h2.example", 250, "reversing")
	cust := &fakesmtp.Server{}
	c.serveCustomer(t, cust)
	got := messages(cust)
	exp := []string{
		"sender@isp.example>user0@h2.example|Subject: maildir 0\r\n\r\nbody 0\r\n.dot\r\n",
		"sender@isp.example>user1@h2.example|Subject: maildir 1\r\n\r\nbody 1\r\n.dot\r\n",
	}
	if strings.Join(got, "\n") != strings.Join(exp, "\n") {
		t.Errorf("customer received\n%q\nwant\n%q", got, exp)
	}
	if n := f.count("h2.example"); n != 0 {
		t.Errorf("%d messages left", n)
	}
}
