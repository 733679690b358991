package serve

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"etrnflush/spool"
)

const trustLocal = `etrn_clients = ["127.0.0.0/8", "::1"]`

// hostsConf: h1 and h2 under example.org, a host whose spool has its own
// name (#cust7), one with nothing held, one whose mail goes back to the
// client, and a user for ATRN.
const hostsConf = `
[host."empty.example"]
[host."a.example.net"]
[host."b.sub.example.net"]
[host."example.net"]
[host."queued.example"]
spool = "QUEUES/cust7"
[host."dyn.example"]
route = "client:2526"

[user.alice]
password_hash = "ALICEHASH"
hosts = ["h1.example", "h2.example", "empty.example"]

[user.bob]
password_hash = "BOBHASH"
hosts = ["dyn.example"]
`

func hostsFixture(t testing.TB, serveKeys string) *fixture {
	t.Helper()
	return newFixture(t, serveKeys, hostsConf)
}

func TestBasicCommands(t *testing.T) {
	f := newFixture(t, trustLocal, "")
	c := f.start()
	c.cmd("NOOP", 250, "OK")
	c.cmd("RSET", 250, "OK")
	lines := c.cmd("HELP", 214, "ETRN")
	if len(lines) < 2 {
		t.Errorf("HELP: one line only: %q", lines)
	}
	c.cmd("EHLO", 501, "Syntax")
	c.cmd("EHLO a b", 501, "Syntax")
	ehlo := c.cmd("EHLO client.example", 250, "provider.example")
	if !reflect.DeepEqual(ehlo[1:], []string{"ETRN", "ENHANCEDSTATUSCODES", "HELP"}) {
		t.Errorf("EHLO without users or TLS offers %q", ehlo[1:])
	}
	c.cmd("HELO client.example", 250, "provider.example")
	for _, cmd := range []string{
		"MAIL FROM:<a@b.example>", "RCPT TO:<x@y.example>", "DATA", "BDAT 10 LAST", "VRFY root",
		"EXPN staff", "TURN", "XYZZY", "STARTTLS", "AUTH PLAIN",
	} {
		c.cmd(cmd, 502, "5.5.1")
	}
	c.cmd("", 500, "Syntax")
	c.cmd("   ", 500, "Syntax")
	c.cmd("1234 x", 500, "Syntax")
	c.cmd("ETRN\x00x", 501, "control")
	c.cmd("ETRN h\xc3\xa9.example", 501, "non-ASCII")
	c.cmd("noop", 250, "OK")
	c.cmd("QUIT", 221, "closing")
	c.closed()
}

func TestETRNReplies(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\netrn_limit = 0")
	f.hold("h1.example", 2)
	f.hold("a.example.net", 1)
	f.hold("b.sub.example.net", 3)
	f.holdAt(filepath.Join(f.dir, "queues", "cust7"), "queued.example", 4)
	f.hold("dyn.example", 1)
	c := f.start()
	c.cmd("EHLO client.example", 250, "ETRN")
	cases := []struct {
		arg   string
		code  int
		want  string
		calls []spawnCall
	}{
		{"", 501, "Syntax: ETRN", nil},
		{"../x", 501, "Syntax", nil},
		{"a/b", 501, "Syntax", nil},
		{"two words", 501, "Syntax", nil},
		{"@", 501, "Syntax", nil},
		{"#", 501, "Syntax", nil},
		{"-x", 501, "Syntax", nil},
		{"h1.example.", 501, "Syntax", nil},
		{"unknown.example", 459, "Node unknown.example not allowed", nil},
		{"#unknown", 459, "not allowed", nil},
		{"@unknown.example", 459, "not allowed", nil},
		{"h1.example", 253, "OK, 2 pending messages for node h1.example started", []spawnCall{{"h1.example", ""}}},
		{"H1.Example", 253, "2 pending messages for node h1.example", []spawnCall{{"h1.example", ""}}},
		{"empty.example", 251, "OK, no messages waiting for node empty.example", nil},
		{"@example.net", 253, "4 pending messages for node @example.net started",
			[]spawnCall{{"a.example.net", ""}, {"b.sub.example.net", ""}}},
		{"@sub.example.net", 253, "3 pending messages", []spawnCall{{"b.sub.example.net", ""}}},
		{"#cust7", 253, "4 pending messages for node #cust7", []spawnCall{{"queued.example", ""}}},
		{"#h1.example", 253, "2 pending", []spawnCall{{"h1.example", ""}}},
		{"dyn.example", 253, "1 pending", []spawnCall{{"dyn.example", "127.0.0.1:2526"}}},
	}
	for _, tc := range cases {
		c.cmd(strings.TrimSpace("ETRN "+tc.arg), tc.code, tc.want)
		if got := f.calls(); !reflect.DeepEqual(got, tc.calls) {
			t.Errorf("ETRN %q started %v, want %v", tc.arg, got, tc.calls)
		}
	}
	// A flush that cannot be started is a 458, not a 250 that lies.
	f.spawnErr = errors.New("fork: resource temporarily unavailable")
	c.cmd("ETRN h1.example", 458, "Unable to queue messages for node h1.example")
	c.cmd("QUIT", 221, "")
	c.closed()
	if !strings.Contains(f.log.String(), "cannot start the flush") {
		t.Errorf("the failed start is not logged:\n%s", f.log)
	}
}

// TestETRNPublic: a client outside etrn_clients learns nothing about the
// queues (250 whether or not mail waits), and cannot pull the mail of a
// route = "client" host to itself.
func TestETRNPublic(t *testing.T) {
	f := hostsFixture(t, `etrn_clients = ["192.0.2.0/24"]`)
	f.hold("a.example.net", 2)
	f.hold("dyn.example", 1)
	c := f.start()
	c.cmd("EHLO client.example", 250, "ETRN")
	c.cmd("ETRN a.example.net", 250, "OK, queuing for node a.example.net started")
	if got := f.calls(); !reflect.DeepEqual(got, []spawnCall{{"a.example.net", ""}}) {
		t.Errorf("started %v", got)
	}
	c.cmd("ETRN example.net", 250, "OK, queuing for node example.net started")
	c.cmd("ETRN unknown.example", 459, "not allowed")
	c.cmd("ETRN dyn.example", 459, "Node dyn.example not allowed")
	c.cmd("ETRN #dyn.example", 459, "not allowed")
	c.cmd("ETRN @dyn.example", 459, "not allowed")
	if got := f.calls(); len(got) != 0 {
		t.Errorf("started %v for nothing waiting or for refusals", got)
	}
	// @example with a client-routed host and an ODMR host among others:
	// the others only.
	f.hold("h1.example", 1)
	f.hold("x.example", 1)
	c.cmd("ETRN @example", 250, "queuing for node @example started")
	if got := f.calls(); !reflect.DeepEqual(got, []spawnCall{{"x.example", ""}}) {
		t.Errorf("ETRN @example started %v", got)
	}
	c.cmd("QUIT", 221, "")

	g := hostsFixture(t, "etrn_clients = [\"192.0.2.0/24\"]\netrn_public = false")
	g.hold("a.example.net", 1)
	c = g.start()
	c.cmd("ETRN a.example.net", 459, "not permitted from this address")
	c.cmd("QUIT", 221, "")
	if got := g.calls(); len(got) != 0 {
		t.Errorf("etrn_public = false still started %v", got)
	}
}

// TestETRNRateLimit: the limit holds per client address across
// connections (under inetd, across processes: the count is on disk), and
// lifts once the window has passed.
func TestETRNRateLimit(t *testing.T) {
	// The window must outlast three connections on a loaded machine.
	f := hostsFixture(t, trustLocal+"\netrn_limit = 2\netrn_window = \"4s\"")
	f.hold("h1.example", 1)
	c := f.start()
	c.cmd("ETRN h1.example", 253, "1 pending")
	c.cmd("QUIT", 221, "")
	c = f.start()
	c.cmd("ETRN h1.example", 253, "1 pending")
	c.cmd("ETRN h1.example", 458, "too many requests")
	c.cmd("ETRN unknown.example", 458, "too many requests")
	c.cmd("QUIT", 221, "")
	if n := len(f.calls()); n != 2 {
		t.Errorf("%d flushes started, want 2", n)
	}
	ents, err := os.ReadDir(f.cfg.Serve.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !strings.Contains(strings.Join(names, " "), "etrn-127.0.0.1") {
		t.Errorf("state_dir holds %v, no file for 127.0.0.1", names)
	}
	time.Sleep(4100 * time.Millisecond)
	c = f.start()
	c.cmd("ETRN h1.example", 253, "1 pending")
	c.cmd("QUIT", 221, "")
}

func TestLineLimits(t *testing.T) {
	f := newFixture(t, trustLocal, "")
	c := f.start()
	c.cmd("NOOP "+strings.Repeat("x", 600), 500, "Line too long")
	c.cmd("NOOP "+strings.Repeat("x", 40000), 500, "Line too long")
	// A line just within the limit is a command (RFC 5321: 512 with CRLF).
	c.cmd("NOOP "+strings.Repeat("x", 505), 250, "OK")
	c.cmd("NOOP "+strings.Repeat("x", 506), 500, "Line too long")
	// AUTH may be longer (RFC 4954: 12288 octets with CRLF), not more.
	c.cmd("AUTH PLAIN "+strings.Repeat("x", 12275), 502, "AUTH not available")
	c.cmd("AUTH PLAIN "+strings.Repeat("x", 12276), 500, "Line too long")
	c.cmd("NOOP", 250, "OK")
	c.cmd("QUIT", 221, "")
	c.closed()
}

func TestMaxCommands(t *testing.T) {
	f := newFixture(t, trustLocal+"\nmax_commands = 3", "")
	c := f.start()
	c.cmd("NOOP", 250, "")
	c.cmd("NOOP", 250, "")
	c.cmd("NOOP", 250, "")
	c.cmd("NOOP", 421, "too many commands")
	c.closed()
}

func TestIdleTimeout(t *testing.T) {
	f := newFixture(t, trustLocal+"\nidle_timeout = \"1s\"", "")
	c := f.start()
	c.cmd("EHLO client.example", 250, "")
	start := time.Now()
	c.expect(421, "idle timeout")
	// The server's clock started before ours: allow for a slow client.
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("closed after %s, before the idle timeout", d)
	}
	c.closed()
	// Idle in the middle of an AUTH exchange: one 421, then the end.
	g := hostsFixture(t, trustLocal+"\nidle_timeout = \"300ms\"\nallow_plaintext_auth = true")
	c = g.start()
	c.cmd("EHLO client.example", 250, "")
	c.cmd("AUTH LOGIN", 334, "")
	c.expect(421, "idle timeout")
	c.closed()
	// A line that never ends is idle too.
	c = f.start()
	if _, err := c.c.Write([]byte("NOOP")); err != nil {
		t.Fatal(err)
	}
	c.expect(421, "idle timeout")
	c.closed()
}

// TestDisconnects: a client may vanish at any point; Serve must return,
// start nothing it was not asked to, and leave the spool alone.
func TestDisconnects(t *testing.T) {
	steps := []struct {
		name string
		do   func(f *fixture, c *conn)
	}{
		{"before the greeting was read", func(f *fixture, c *conn) {}},
		{"after EHLO", func(f *fixture, c *conn) { c.cmd("EHLO c.example", 250, "") }},
		{"in the middle of a line", func(f *fixture, c *conn) { c.c.Write([]byte("ETRN h1.exa")) }},
		{"during AUTH", func(f *fixture, c *conn) {
			c.cmd("EHLO c.example", 250, "")
			c.cmd("AUTH LOGIN", 334, b64("Username:"))
		}},
		{"after ATRN's 250, before its greeting", func(f *fixture, c *conn) {
			c.cmd("EHLO c.example", 250, "")
			c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
			c.cmd("ATRN", 250, "reversing")
		}},
		{"after ATRN's 250, in the middle of its greeting", func(f *fixture, c *conn) {
			c.cmd("EHLO c.example", 250, "")
			c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
			c.cmd("ATRN", 250, "reversing")
			c.c.Write([]byte("220-customer"))
		}},
		{"after STARTTLS's 220, before the handshake", nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			f := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true")
			f.withTLS()
			f.hold("h1.example", 2)
			before, err := os.ReadFile(filepath.Join(f.spool, "h1.example"))
			if err != nil {
				t.Fatal(err)
			}
			c := f.start()
			if st.do == nil {
				c.cmd("EHLO c.example", 250, "STARTTLS")
				c.cmd("STARTTLS", 220, "Ready")
			} else {
				st.do(f, c)
			}
			if err := c.c.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.done:
				c.done <- nil
			case <-time.After(30 * time.Second):
				t.Fatal("Serve did not return after the client went away")
			}
			if got := f.calls(); len(got) != 0 {
				t.Errorf("started %v", got)
			}
			after, err := os.ReadFile(filepath.Join(f.spool, "h1.example"))
			if err != nil || string(after) != string(before) {
				t.Errorf("the spool changed (err %v)", err)
			}
			assertNoWorkFiles(t, f.spool)
		})
	}
}

// assertNoWorkFiles: nothing of an interrupted flush is left but the lock.
func assertNoWorkFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".etrnflush-") && !strings.HasSuffix(n, ".lock") {
			t.Errorf("left in the spool directory: %s", n)
		}
	}
}

func TestSTARTTLS(t *testing.T) {
	f := newFixture(t, trustLocal, "")
	leaf := f.withTLS()
	c := f.start()
	c.cmd("STARTTLS", 503, "EHLO first")
	c.cmd("EHLO c.example", 250, "STARTTLS")
	c.cmd("STARTTLS now", 501, "Syntax")
	c.startTLS(leaf)
	ehlo := c.cmd("EHLO c.example", 250, "provider.example")
	for _, l := range ehlo {
		if l == "STARTTLS" {
			t.Error("STARTTLS offered again over TLS")
		}
	}
	c.cmd("STARTTLS", 503, "already")
	c.cmd("ETRN unknown.example", 459, "")
	c.cmd("QUIT", 221, "")
	c.closed()

	// Commands sent with STARTTLS, before the handshake, end the session
	// instead of being taken as if they had come over TLS.
	c = f.start()
	c.cmd("EHLO c.example", 250, "STARTTLS")
	c.send("STARTTLS\r\nETRN h1.example")
	c.expect(220, "Ready")
	c.closed()
	if !strings.Contains(f.log.String(), "before the TLS handshake") {
		t.Errorf("not logged:\n%s", f.log)
	}
}

func TestAUTH(t *testing.T) {
	f := hostsFixture(t, trustLocal)
	leaf := f.withTLS()
	c := f.start()
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 503, "EHLO first")
	ehlo := c.cmd("EHLO c.example", 250, "")
	if strings.Contains(strings.Join(ehlo, " "), "AUTH") {
		t.Errorf("AUTH offered without TLS: %q", ehlo)
	}
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 538, "Encryption required")
	c.startTLS(leaf)
	ehlo = c.cmd("EHLO c.example", 250, "AUTH PLAIN LOGIN")
	if !strings.Contains(strings.Join(ehlo, " "), "ATRN") {
		t.Errorf("ATRN not offered after TLS: %q", ehlo)
	}
	c.cmd("AUTH CRAM-MD5", 504, "Unrecognized")
	c.cmd("AUTH PLAIN !!!", 501, "decode")
	c.cmd("AUTH PLAIN", 334, "")
	c.cmd("*", 501, "cancelled")
	c.cmd("AUTH PLAIN "+plainAuth("alice", "wrong"), 535, "invalid")
	c.cmd("AUTH PLAIN", 334, "")
	c.cmd(plainAuth("nobody", alicePass), 535, "invalid")
	c.cmd("AUTH PLAIN "+b64("bob\x00alice\x00"+alicePass), 421, "too many failed")
	c.closed()
	if !strings.Contains(f.log.String(), `user="nobody" status=failed`) {
		t.Errorf("failed AUTH not logged:\n%s", f.log)
	}
	if strings.Contains(f.log.String(), alicePass) {
		t.Errorf("a password is in the log:\n%s", f.log)
	}

	c = f.start()
	c.cmd("EHLO c.example", 250, "")
	c.startTLS(leaf)
	c.cmd("EHLO c.example", 250, "")
	c.cmd("AUTH LOGIN", 334, b64("Username:"))
	c.cmd(b64("alice"), 334, b64("Password:"))
	c.cmd(b64(alicePass), 235, "successful")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 503, "Already")
	c.cmd("QUIT", 221, "")
	c.closed()

	// LOGIN with the user name as initial response, and PLAIN over clear
	// text where the admin allowed it.
	g := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true")
	c = g.start()
	c.cmd("EHLO c.example", 250, "AUTH PLAIN LOGIN")
	c.cmd("AUTH LOGIN "+b64("bob"), 334, b64("Password:"))
	c.cmd(b64(bobPass), 235, "")
	c.cmd("QUIT", 221, "")

	// Without users there is no AUTH at all.
	h := newFixture(t, trustLocal+"\nallow_plaintext_auth = true", "")
	c = h.start()
	c.cmd("EHLO c.example", 250, "")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 502, "not available")
	c.cmd("ATRN", 530, "Authentication required")
	c.cmd("QUIT", 221, "")
}

func TestATRNRefusals(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true")
	f.hold("h1.example", 1)
	c := f.start()
	c.cmd("ATRN", 503, "EHLO first")
	c.cmd("EHLO c.example", 250, "ATRN")
	c.cmd("ATRN", 530, "Authentication required")
	c.cmd("ATRN h1.example", 530, "Authentication required")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
	c.cmd("ATRN @h1.example", 501, "Syntax")
	c.cmd("ATRN h1.example,,h2.example", 501, "Syntax")
	c.cmd("ATRN ../x", 501, "Syntax")
	c.cmd("ATRN dyn.example", 450, "refused")
	c.cmd("ATRN h1.example,dyn.example", 450, "refused")
	c.cmd("ATRN h2.example,empty.example", 453, "no mail")
	// A flush of h1 is running: "try later", not a turnaround that
	// could deliver nothing.
	lock, err := spool.LockHost(f.spool, "h1.example")
	if err != nil {
		t.Fatal(err)
	}
	c.cmd("ATRN h1.example", 451, "Unable to process ATRN request now")
	c.cmd("ATRN", 451, "Unable")
	if _, err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	c.cmd("QUIT", 221, "")
	c.closed()
	if got := f.calls(); len(got) != 0 {
		t.Errorf("ATRN started detached flushes: %v", got)
	}
	// Bob owns only dyn.example, which holds nothing.
	c = f.start()
	c.cmd("EHLO c.example", 250, "")
	c.cmd("AUTH PLAIN "+plainAuth("bob", bobPass), 235, "")
	c.cmd("ATRN h1.example", 450, "refused")
	c.cmd("ATRN", 453, "no mail")
	c.cmd("QUIT", 221, "")
}

// TestATRNEarlyData: a customer that speaks before the 250 is not taken
// at its word.
func TestATRNEarlyData(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true")
	f.hold("h1.example", 1)
	c := f.start()
	c.cmd("EHLO c.example", 250, "")
	c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
	c.send("ATRN h1.example\r\n220 customer ready")
	c.expect(250, "reversing")
	c.closed()
	if n := f.count("h1.example"); n != 1 {
		t.Errorf("%d messages left, want 1", n)
	}
}

// count is what is left for host, read as a dry run reads it (the
// spool file and the work files of earlier runs).
func (f *fixture) count(host string) int {
	f.t.Helper()
	n, err := countMessages(f.cfg.Conf.For(host))
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// TestShutdown: a cancelled context (SIGTERM under inetd) ends a
// conversation that waits for the client, with 421, at once.
func TestShutdown(t *testing.T) {
	f := newFixture(t, trustLocal, "")
	srv, cli := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, f.cfg) }()
	c := &conn{t: t, c: cli, br: bufio.NewReader(cli), done: done}
	if err := cli.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c.expect(220, "")
	c.cmd("EHLO c.example", 250, "")
	start := time.Now()
	cancel()
	c.expect(421, "shutting down")
	c.closed()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s", d)
	}
	if err := cli.Close(); err != nil {
		t.Error(err)
	}
}
