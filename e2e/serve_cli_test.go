//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"etrnflush/config"
	"etrnflush/internal/fakesmtp"
	"etrnflush/internal/testcert"
)

// A receiver is the SMTP server in the test: fakesmtp's, recording what it
// accepts; held at its Gate when asked, so that a test can tell a detached
// flush from one the conversation waits for.

// received returns "from>to|data" per message r accepted, sorted.
func received(r *fakesmtp.Server) []string {
	var out []string
	for _, m := range r.Messages() {
		out = append(out, m.Envelope()+"|"+string(m.Data))
	}
	sort.Strings(out)
	return out
}

func waitFor(t *testing.T, r *fakesmtp.Server, n int) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := received(r)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d messages after 60s", len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startReceiver listens on 127.0.0.1 and returns the port.
func startReceiver(t *testing.T, r *fakesmtp.Server) string {
	t.Helper()
	r.Domain = "receiver.example"
	r.Timeout = 30 * time.Second
	r.DiscardTruncated = true
	_, port, _ := net.SplitHostPort(fakesmtp.Run(t, r))
	return port
}

// holdBSMTP writes n messages for host into path, as Exim's use_bsmtp does.
func holdBSMTP(t *testing.T, path, host string, n int) []string {
	t.Helper()
	var b strings.Builder
	var want []string
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "MAIL FROM:<sender@isp.example>\nRCPT TO:<user%d@%s>\nDATA\nSubject: %d\n\n..dot %d\n.\n", i, host, i, i)
		want = append(want, fmt.Sprintf("sender@isp.example>user%d@%s|Subject: %d\r\n\r\n.dot %d\r\n", i, host, i, i))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	return want
}

// serveProc is `etrnflush serve` run on one end of a real TCP connection,
// as inetd runs it: the accepted socket is its standard input and output.
type serveProc struct {
	proc   *exec.Cmd
	c      net.Conn // the client end
	br     *bufio.Reader
	stderr bytes.Buffer
	exited chan struct{}
	code   int
}

func startServe(t *testing.T, conf string, args ...string) *serveProc {
	t.Helper()
	return startServeArgv(t, append([]string{"-c", conf}, append(args, "serve")...))
}

// startServeArgv runs the binary with argv (without the program name).
func startServeArgv(t *testing.T, argv []string) *serveProc {
	t.Helper()
	return startServeAs(t, nil, argv)
}

// startServeAs is startServeArgv run as cred's user (nil: as the test).
func startServeAs(t *testing.T, cred *syscall.Credential, argv []string) *serveProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := srv.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{c: client, br: bufio.NewReader(client), exited: make(chan struct{})}
	p.proc = exec.Command(etrnflushBin, argv...)
	p.proc.Stdin, p.proc.Stdout = f, f
	p.proc.Stderr = &p.stderr
	if cred != nil {
		p.proc.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := p.proc.Start(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.proc.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			p.code = ee.ExitCode()
		default:
			p.code = -1
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = client.Close()
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			t.Error("etrnflush serve still running 30s after the client closed")
			_ = p.proc.Process.Kill()
			<-p.exited
		}
	})
	if err := client.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return p
}

// cmd sends line (unless empty) and checks the reply's code and text.
func (p *serveProc) cmd(t *testing.T, line string, code int, want string) string {
	t.Helper()
	if line != "" {
		if _, err := fmt.Fprintf(p.c, "%s\r\n", line); err != nil {
			t.Fatal(err)
		}
	}
	var text []string
	for {
		l, err := p.br.ReadString('\n')
		if err != nil {
			t.Fatalf("%q: reading reply: %v (stderr %q)", line, err, p.stderr.String())
		}
		if !strings.HasSuffix(l, "\r\n") || len(l) < 4 {
			t.Fatalf("%q: malformed reply line %q", line, l)
		}
		text = append(text, l[4:len(l)-2])
		if l[3] == ' ' {
			all := strings.Join(text, "\n")
			if !strings.HasPrefix(l, fmt.Sprint(code)) || !strings.Contains(all, want) {
				t.Fatalf("%q: reply %q, want %d containing %q", line, l, code, want)
			}
			return all
		}
	}
}

func (p *serveProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("etrnflush serve did not exit")
	}
	return p.code
}

// TestCLIServeETRN: the built binary under the inetd contract. ETRN for a
// route = "client" host is answered at once with the count, the flush
// runs detached (serve exits while the receiver holds the flush) and
// delivers to the address that asked, and nothing but SMTP appears on
// the connection.
func TestCLIServeETRN(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	rcv := &fakesmtp.Server{Gate: gate}
	released := false
	release := func() {
		if !released {
			released = true
			close(gate)
		}
	}
	t.Cleanup(release)
	port := startReceiver(t, rcv)
	want := holdBSMTP(t, filepath.Join(spoolDir, "h1.example"), "h1.example", 3)
	logFile := filepath.Join(dir, "etrnflush.log")
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"
tls = "none"

[serve]
etrn_clients = ["127.0.0.1"]

[host."h1.example"]
route = "client:%s"
`, spoolDir, logFile, port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, conf)
	p.cmd(t, "", 220, "provider.example ESMTP")
	p.cmd(t, "EHLO customer.example", 250, "ETRN")
	start := time.Now()
	p.cmd(t, "ETRN h1.example", 253, "OK, 3 pending messages for node h1.example started")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the ETRN reply took %s: the conversation waited for the flush", d)
	}
	p.cmd(t, "QUIT", 221, "closing")
	if code := p.wait(t); code != 0 {
		t.Errorf("serve exited %d; stderr %q", code, p.stderr.String())
	}
	if n := len(received(rcv)); n != 0 {
		t.Errorf("%d messages delivered through a closed gate", n)
	}
	release()
	got := waitFor(t, rcv, 3)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("received\n%q\nwant\n%q", got, want)
	}
	logText := waitLog(t, logFile, "event=summary host=h1.example sent=3")
	for _, w := range []string{"event=connect client=127.0.0.1", "event=flush-started client=127.0.0.1", " to=127.0.0.1:" + port} {
		if !strings.Contains(logText, w) {
			t.Errorf("log lacks %q:\n%s", w, logText)
		}
	}
	if p.stderr.Len() != 0 {
		t.Errorf("serve wrote to stderr: %q", p.stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(spoolDir, "h1.example")); err == nil && len(b) > 0 {
		t.Errorf("spool still holds %d octets", len(b))
	}

	// A flush of such a host by hand needs --to: there is no client.
	_, stderr, code := runEtrnflush(t, "-c", conf, "h1.example")
	if code != exUsage || !strings.Contains(stderr, "--to") {
		t.Errorf("flush of a route = client host without --to: exit %d, %q", code, stderr)
	}
}

// TestCLIServeATRN: the built binary with its certificate and users from
// the config: STARTTLS, AUTH, ATRN, and the test client receives the mail
// as the SMTP server on the same TLS connection.
func TestCLIServeATRN(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	want := holdBSMTP(t, filepath.Join(spoolDir, "odmr.example"), "odmr.example", 2)
	certFile, keyFile, pool := writeTestCert(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw of carol"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "etrnflush.log")
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"

[serve]
tls_cert = %q
tls_key = %q

[user.carol]
password_hash = %q
hosts = ["odmr.example"]
`, spoolDir, logFile, certFile, keyFile, hash)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, conf)
	p.cmd(t, "", 220, "")
	p.cmd(t, "EHLO customer.example", 250, "STARTTLS")
	p.cmd(t, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00carol\x00pw of carol")), 538, "Encryption required")
	p.cmd(t, "STARTTLS", 220, "Ready")
	tc := tls.Client(p.c, &tls.Config{RootCAs: pool, ServerName: "provider.example", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	p.c, p.br = tc, bufio.NewReader(tc)
	p.cmd(t, "EHLO customer.example", 250, "ATRN")
	p.cmd(t, "ATRN", 530, "Authentication required")
	p.cmd(t, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00carol\x00wrong")), 535, "")
	p.cmd(t, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00carol\x00pw of carol")), 235, "")
	p.cmd(t, "ATRN other.example", 450, "refused")
	p.cmd(t, "ATRN odmr.example", 250, "reversing")

	rcv := &fakesmtp.Server{Domain: "customer.example"}
	go func() { _ = rcv.Serve(fakesmtp.OneConn(tc)) }()
	select {
	case <-rcv.LoggedOut():
	case <-time.After(60 * time.Second):
		t.Fatal("the provider did not end the session")
	}
	if err := rcv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Error(err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("serve exited %d; stderr %q", code, p.stderr.String())
	}
	if got := received(rcv); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("received\n%q\nwant\n%q", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(spoolDir, "odmr.example")); err == nil && len(b) > 0 {
		t.Errorf("spool still holds %d octets", len(b))
	}
	logText, _ := os.ReadFile(logFile)
	if !strings.Contains(string(logText), "event=summary host=odmr.example sent=2") {
		t.Errorf("log:\n%s", logText)
	}
	if strings.Contains(string(logText), "pw of carol") {
		t.Errorf("the password is in the log")
	}
}

// writeTestCert writes a self-signed certificate for provider.example.
func writeTestCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, "provider.example")
	certFile, keyFile = c.WriteFiles(t, dir)
	return certFile, keyFile, c.Pool
}

// TestCLIServeRefusals: serve needs a socket, and a broken configuration
// is told to the client (421) and to the exit status (78), never as text
// on the connection that is not SMTP.
func TestCLIServeRefusals(t *testing.T) {
	_, stderr, code := runEtrnflush(t, "serve")
	if code != exUsage || !strings.Contains(oneErrorLine(t, stderr), "not a socket") {
		t.Errorf("serve on a non-socket: exit %d, %q", code, stderr)
	}
	_, stderr, code = runEtrnflush(t, "serve", "extra")
	if code != exUsage {
		t.Errorf("serve with an argument: exit %d, %q", code, stderr)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(conf, []byte("[serve]\nidle_timeout = \"soon\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, conf)
	p.cmd(t, "", 421, "Service not available")
	if code := p.wait(t); code != exConfig {
		t.Errorf("serve with a bad config exited %d, want %d", code, exConfig)
	}
	if line := oneErrorLine(t, p.stderr.String()); !strings.Contains(line, "idle_timeout") {
		t.Errorf("error line %q does not name the key", line)
	}
}

// TestCLIPasswd: the hash printed for a password on standard input
// verifies, goes into a config that loads, and bad input is refused.
func TestCLIPasswd(t *testing.T) {
	run := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, etrnflushBin, append([]string{"passwd"}, args...)...)
		cmd.Env = childEnv()
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	out, stderr, code := run("correct horse battery staple\n")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	hash := strings.TrimSuffix(out, "\n")
	if strings.Contains(hash, "\n") {
		t.Fatalf("more than one line: %q", out)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse battery staple")); err != nil {
		t.Errorf("hash does not verify: %v", err)
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse battery staple\n")) == nil {
		t.Error("the line end became part of the password")
	}
	if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost < bcrypt.DefaultCost {
		t.Errorf("cost %d, %v", cost, err)
	}
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("[user.dave]\npassword_hash = %q\nhosts = [\"d.example\"]\n", hash)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(p, true); err != nil {
		t.Errorf("config with the hash: %v", err)
	}
	out2, _, _ := run("correct horse battery staple\r\n")
	if out2 == out {
		t.Error("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", nil, "empty password"},
		{"\n", nil, "empty password"},
		{strings.Repeat("x", 73) + "\n", nil, "72"},
		{"pw\n", []string{"extra"}, "no arguments"},
	} {
		out, stderr, code := run(tc.stdin, tc.args...)
		if code != exUsage || out != "" || !strings.Contains(oneErrorLine(t, stderr), tc.want) {
			t.Errorf("passwd %v with %q: exit %d, out %q, stderr %q", tc.args, tc.stdin, code, out, stderr)
		}
	}
}

// TestCLIServeRateAcrossProcesses: under inetd each connection is a
// process of its own; the ETRN limit still holds per client address.
func TestCLIServeRateAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"

[serve]
etrn_clients = ["127.0.0.0/8"]
etrn_limit = 2
etrn_window = "1h"

[host."quiet.example"]
`, spoolDir, filepath.Join(dir, "etrnflush.log"))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{251, 251, 458, 458} {
		p := startServe(t, conf)
		p.cmd(t, "", 220, "")
		p.cmd(t, "ETRN quiet.example", want, "")
		p.cmd(t, "QUIT", 221, "")
		if code := p.wait(t); code != 0 {
			t.Errorf("process %d exited %d", i, code)
		}
	}
}
