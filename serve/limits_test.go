package serve

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // CRAM-MD5 is HMAC-MD5
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"etrnflush/internal/fakesmtp"
	"etrnflush/spool"
)

// snapshot is the names and contents of every file under dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestETRNUserHostAnonymous: a host listed under a [user.NAME] is
// collected with ATRN; a client outside etrn_clients cannot ETRN it
// (459, nothing started, the spool directory byte for byte as before),
// while an etrn_clients client can.
func TestETRNUserHostAnonymous(t *testing.T) {
	f := hostsFixture(t, `etrn_clients = ["192.0.2.0/24"]`)
	f.hold("h1.example", 3)
	f.hold("h2.example", 1)
	before := snapshot(t, f.spool)
	c := f.start()
	c.cmd("EHLO client.example", 250, "ETRN")
	for _, arg := range []string{"h1.example", "H1.EXAMPLE", "#h1.example", "@h1.example", "empty.example"} {
		c.cmd("ETRN "+arg, 459, "not allowed")
	}
	// @example: the ODMR and client-routed hosts are left out, the
	// others (none with mail here) are served.
	c.cmd("ETRN @example", 250, "queuing for node @example started")
	c.cmd("QUIT", 221, "")
	c.closed()
	if got := f.calls(); len(got) != 0 {
		t.Errorf("anonymous ETRN of ODMR hosts started %v", got)
	}
	if after := snapshot(t, f.spool); !reflect.DeepEqual(before, after) {
		t.Errorf("spool changed:\nbefore %q\nafter  %q", before, after)
	}
	if !strings.Contains(f.log.String(), "is an ODMR host of [user.alice]") {
		t.Errorf("the refusal does not name the user table:\n%s", f.log)
	}

	g := hostsFixture(t, trustLocal)
	g.hold("h1.example", 3)
	c = g.start()
	c.cmd("ETRN h1.example", 253, "3 pending messages")
	c.cmd("QUIT", 221, "")
	if got := g.calls(); !reflect.DeepEqual(got, []spawnCall{{"h1.example", ""}}) {
		t.Errorf("trusted ETRN of an ODMR host started %v", got)
	}
}

// TestETRNBusyAsksForPass: a host whose flush holds the lock gets the
// extra-pass request, not a second process; once the lock is free, ETRN
// starts a flush again.
func TestETRNBusyAsksForPass(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\netrn_limit = 0")
	f.hold("a.example.net", 2)
	f.hold("b.sub.example.net", 1)
	lock, err := spool.LockHost(f.spool, "a.example.net")
	if err != nil {
		t.Fatal(err)
	}
	if lock.TakeAgain() {
		t.Fatal("a pass was asked before any ETRN")
	}
	c := f.start()
	for i := 0; i < 3; i++ {
		c.cmd("ETRN @example.net", 253, "3 pending messages")
		if got := f.calls(); !reflect.DeepEqual(got, []spawnCall{{"b.sub.example.net", ""}}) {
			t.Errorf("ETRN %d with a.example.net busy started %v", i, got)
		}
	}
	if !lock.TakeAgain() {
		t.Error("the running flush was not asked for another pass")
	}
	if err := lock.Abandon(); err != nil {
		t.Fatal(err)
	}
	c.cmd("ETRN a.example.net", 253, "2 pending")
	if got := f.calls(); !reflect.DeepEqual(got, []spawnCall{{"a.example.net", ""}}) {
		t.Errorf("ETRN after the flush ended started %v", got)
	}
	c.cmd("QUIT", 221, "")
	if n := strings.Count(f.log.String(), "asked it for one more pass"); n != 3 {
		t.Errorf("%d pass requests logged, want 3:\n%s", n, f.log)
	}
}

// TestETRNRateUnitPerHost: ETRN @domain costs one unit of etrn_limit for
// every flush it starts.
func TestETRNRateUnitPerHost(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\netrn_limit = 3\netrn_window = \"1h\"")
	f.hold("a.example.net", 1)
	f.hold("b.sub.example.net", 1)
	f.hold("example.net", 1)
	c := f.start()
	c.cmd("ETRN @sub.example.net", 253, "1 pending") // 1 unit
	f.calls()
	c.cmd("ETRN @example.net", 253, "2 pending") // 1 + 2 wanted, 1 + 1 left
	if got := f.calls(); len(got) != 2 {
		t.Errorf("with two units left, @example.net started %v", got)
	}
	c.cmd("ETRN a.example.net", 458, "too many requests")
	c.cmd("QUIT", 221, "")
	if !strings.Contains(f.log.String(), "not started: more than 3 flushes") {
		t.Errorf("the host left out is not logged:\n%s", f.log)
	}
}

// TestSessionTimeout: a client that sends a NOOP within every idle
// period is still cut at session_timeout.
func TestSessionTimeout(t *testing.T) {
	f := newFixture(t, trustLocal+"\nidle_timeout = \"1s\"\nsession_timeout = \"2s\"", "")
	start := time.Now()
	c := f.start()
	n := 0
	for {
		c.send("NOOP")
		code, lines := c.reply()
		if code == 421 {
			if !strings.Contains(strings.Join(lines, " "), "session time limit") {
				t.Fatalf("421 %q", lines)
			}
			break
		}
		if code != 250 {
			t.Fatalf("NOOP: %d %q", code, lines)
		}
		n++
		time.Sleep(300 * time.Millisecond)
		if time.Since(start) > 10*time.Second {
			t.Fatal("not cut after 10s")
		}
	}
	c.closed()
	if d := time.Since(start); d < 2*time.Second || d > 5*time.Second {
		t.Errorf("cut after %s, want about 2s", d)
	}
	if n < 4 {
		t.Errorf("only %d NOOPs answered before the cut", n)
	}
	if !strings.Contains(f.log.String(), "session_timeout") {
		t.Errorf("not logged:\n%s", f.log)
	}
}

// TestAuthLinesCount: the lines of an AUTH dialogue count towards
// max_commands.
func TestAuthLinesCount(t *testing.T) {
	f := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true\nmax_commands = 4")
	c := f.start()
	c.cmd("EHLO client.example", 250, "AUTH") // 1
	c.cmd("AUTH LOGIN", 334, "")              // 2
	c.cmd(b64("alice"), 334, "")              // 3
	c.cmd(b64(alicePass), 235, "")            // 4
	c.cmd("NOOP", 421, "too many commands")
	c.closed()

	// Endless cancelled AUTHs are lines as well.
	g := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true\nmax_commands = 5")
	c = g.start()
	c.cmd("EHLO client.example", 250, "AUTH") // 1
	c.cmd("AUTH LOGIN", 334, "")              // 2
	c.cmd("*", 501, "cancelled")              // 3
	c.cmd("AUTH LOGIN", 334, "")              // 4
	c.cmd(b64("alice"), 334, "")              // 5
	c.cmd(b64("x"), 421, "too many commands")
	c.closed()
}

const (
	carolPass  = "carol's clear secret"
	secretConf = `
[user.carol]
secret_file = "SECRETFILE"
hosts = ["c.example"]

[user.alice]
password_hash = "ALICEHASH"
hosts = ["h1.example"]
`
)

// secretFixture has carol with a secret_file (loaded as serve_cmd does)
// and alice with a hash only.
func secretFixture(t *testing.T, serveKeys string) *fixture {
	t.Helper()
	dir := t.TempDir()
	sf := filepath.Join(dir, "carol.secret")
	if err := os.WriteFile(sf, []byte(carolPass+"\nnot part of it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, serveKeys, strings.ReplaceAll(secretConf, "SECRETFILE", sf))
	f.cfg.Secrets = map[string]string{"carol": carolPass}
	return f
}

// cram answers a CRAM-MD5 challenge (base64, from a 334 reply).
func cram(t *testing.T, challenge64, user, secret string) string {
	t.Helper()
	ch, err := base64.StdEncoding.DecodeString(challenge64)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(md5.New, []byte(secret))
	m.Write(ch)
	return b64(user + " " + hex.EncodeToString(m.Sum(nil)))
}

func TestCRAMMD5(t *testing.T) {
	f := secretFixture(t, trustLocal+"\nallow_plaintext_auth = true")
	c := f.start()
	lines := c.cmd("EHLO client.example", 250, "AUTH CRAM-MD5 PLAIN LOGIN")
	if !strings.Contains(strings.Join(lines, "\n"), "ATRN") {
		t.Errorf("no ATRN in %q", lines)
	}
	seen := map[string]bool{}
	for _, tc := range []struct{ user, secret string }{
		{"carol", "wrong"}, {"nobody", carolPass}, {"alice", alicePass},
	} {
		ch := c.cmd("AUTH CRAM-MD5", 334, "")[0]
		raw, _ := base64.StdEncoding.DecodeString(ch)
		if !strings.HasPrefix(string(raw), "<") || !strings.HasSuffix(string(raw), "@provider.example>") || seen[ch] {
			t.Errorf("challenge %q: not <random.time@provider.example>, or not fresh", raw)
		}
		seen[ch] = true
		if tc.user == "alice" {
			// alice has no secret_file: CRAM-MD5 cannot succeed for
			// her; the third failure ends the session.
			c.cmd(cram(t, ch, tc.user, tc.secret), 421, "too many failed")
			break
		}
		c.cmd(cram(t, ch, tc.user, tc.secret), 535, "credentials invalid")
	}
	c.closed()

	c = f.start()
	c.cmd("EHLO client.example", 250, "CRAM-MD5")
	c.cmd("AUTH CRAM-MD5 "+b64("early"), 501, "")
	c.cmd("AUTH CRAM-MD5", 334, "")
	c.cmd(b64("carol"), 501, "Malformed")
	ch := c.cmd("AUTH CRAM-MD5", 334, "")[0]
	c.cmd(cram(t, ch, "carol", carolPass), 235, "Authentication successful")
	c.cmd("ATRN", 453, "no mail")
	c.cmd("QUIT", 221, "")
	c.closed()

	// PLAIN and LOGIN check carol's secret (its first line only).
	c = f.start()
	c.cmd("EHLO client.example", 250, "")
	c.cmd("AUTH PLAIN "+plainAuth("carol", carolPass+"\nnot part of it"), 535, "")
	c.cmd("AUTH PLAIN "+plainAuth("carol", carolPass), 235, "")
	c.cmd("QUIT", 221, "")

	// Without a secret_file nobody can do CRAM-MD5: not offered.
	g := hostsFixture(t, trustLocal+"\nallow_plaintext_auth = true")
	c = g.start()
	lines = c.cmd("EHLO client.example", 250, "AUTH PLAIN LOGIN")
	if strings.Contains(strings.Join(lines, "\n"), "CRAM") {
		t.Errorf("CRAM-MD5 offered without secrets: %q", lines)
	}
	c.cmd("AUTH CRAM-MD5", 504, "Unrecognized")
	c.cmd("QUIT", 221, "")
}

// TestDecoyHighestCost: the decoy for an unknown user is the dearest hash.
func TestDecoyHighestCost(t *testing.T) {
	f := hostsFixture(t, "")
	h5, err := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost+1)
	if err != nil {
		t.Fatal(err)
	}
	u := f.cfg.Conf.Users["bob"]
	u.PasswordHash = string(h5)
	f.cfg.Conf.Users["bob"] = u
	s := &session{cfg: f.cfg}
	if got := s.decoyHash(); got != string(h5) {
		t.Errorf("decoy is %q, want bob's cost-5 hash", got)
	}
}

// startImplicit gives the fixture a certificate and ImplicitTLS, runs
// Serve, does the TLS handshake and reads the greeting.
func (f *fixture) startImplicit() *conn {
	f.t.Helper()
	leaf := f.withTLS()
	f.cfg.ImplicitTLS = true
	srv, cli := socketPair(f.t)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	tc := tls.Client(cli, &tls.Config{RootCAs: pool, ServerName: "provider.example", MinVersion: tls.VersionTLS12})
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), srv, f.cfg) }()
	f.t.Cleanup(func() { _ = cli.Close() })
	if err := tc.Handshake(); err != nil {
		f.t.Fatal(err)
	}
	if err := tc.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		f.t.Fatal(err)
	}
	c := &conn{t: f.t, c: tc, br: bufio.NewReader(tc), done: done}
	c.expect(220, "provider.example ESMTP")
	return c
}

// TestImplicitTLS: with ImplicitTLS the handshake comes first; AUTH and
// ATRN are offered at once (no allow_plaintext_auth), STARTTLS is not.
func TestImplicitTLS(t *testing.T) {
	f := secretFixture(t, trustLocal)
	f.hold("c.example", 2)
	c := f.startImplicit()
	done := c.done
	lines := strings.Join(c.cmd("EHLO client.example", 250, "AUTH CRAM-MD5"), "\n")
	if !strings.Contains(lines, "ATRN") || strings.Contains(lines, "STARTTLS") {
		t.Errorf("EHLO over implicit TLS: %q", lines)
	}
	ch := c.cmd("AUTH CRAM-MD5", 334, "")[0]
	c.cmd(cram(t, ch, "carol", carolPass), 235, "")
	cust := &fakesmtp.Server{}
	c.cmd("ATRN", 250, "reversing")
	c.serveCustomer(t, cust)
	if got := messages(cust); len(got) != 2 || got[0] != want("c.example", 0) {
		t.Errorf("delivered over implicit TLS: %q", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if strings.Contains(f.log.String(), "closed network connection") {
		t.Errorf("spurious error at the end of the ATRN session:\n%s", f.log)
	}
}

// recordingConn records the writes made to it.
type recordingConn struct {
	net.Conn
	writes []string
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

// TestLineRecords: each line goes down in a write (a TLS record) of its
// own, a partial last line too, and nothing is lost or reordered.
func TestLineRecords(t *testing.T) {
	rc := &recordingConn{}
	w := lineRecords{rc}
	in := "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
	if n, err := w.Write([]byte(in)); n != len(in) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n, err := w.Write([]byte("body without end")); n != 16 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	want := []string{"MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n", "DATA\r\n", "body without end"}
	if !reflect.DeepEqual(rc.writes, want) {
		t.Errorf("writes %q, want %q", rc.writes, want)
	}
}
