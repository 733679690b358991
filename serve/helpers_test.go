package serve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"etrnflush/config"
	"etrnflush/internal/testcert"
	"etrnflush/logging"
)

// lockedBuffer collects log lines written by the server goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// spawnCall is one flush the server started.
type spawnCall struct{ host, to string }

// fixture is a configuration, its spool directory and what the server did.
type fixture struct {
	t        testing.TB
	dir      string
	spool    string
	cfg      *Config
	log      *lockedBuffer
	mu       sync.Mutex
	spawned  []spawnCall
	spawnErr error
}

// Passwords of the test users; hashed at bcrypt's lowest cost so that the
// race detector does not turn every AUTH into seconds.
const (
	alicePass = "alice secret"
	bobPass   = "b0b"
)

var (
	hashOnce           sync.Once
	aliceHash, bobHash string
)

func hashes(t testing.TB) (string, string) {
	hashOnce.Do(func() {
		a, err := bcrypt.GenerateFromPassword([]byte(alicePass), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		b, err := bcrypt.GenerateFromPassword([]byte(bobPass), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		aliceHash, bobHash = string(a), string(b)
	})
	return aliceHash, bobHash
}

// newFixture writes a config: spool_dir in a temp dir, the [serve] keys in
// serveKeys, hosts and users as given in extra (TOML text), and loads it
// through config.Load, so the tests see what a real run sees.
func newFixture(t testing.TB, serveKeys, extra string) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), log: &lockedBuffer{}}
	f.spool = filepath.Join(f.dir, "spool")
	for _, d := range []string{f.spool, filepath.Join(f.dir, "queues")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	a, b := hashes(t)
	text := fmt.Sprintf("spool_dir = %q\ntimeout = \"20s\"\n\n[serve]\nstate_dir = %q\n%s\n%s\n",
		f.spool, filepath.Join(f.dir, "state"), serveKeys, extra)
	text = strings.NewReplacer("ALICEHASH", a, "BOBHASH", b, "QUEUES", filepath.Join(f.dir, "queues")).Replace(text)
	p := filepath.Join(f.dir, "etrnflush.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p, true)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	f.cfg = &Config{
		Conf:     c,
		Serve:    c.ServeSettings(),
		Hostname: "provider.example",
		Log:      logging.NewWriter(f.log, true),
		Spawn: func(host, to string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.spawnErr != nil {
				return f.spawnErr
			}
			f.spawned = append(f.spawned, spawnCall{host, to})
			return nil
		},
	}
	return f
}

func (f *fixture) calls() []spawnCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]spawnCall(nil), f.spawned...)
	f.spawned = nil
	return out
}

// hold writes n messages for host into spool_dir/host (an appended BSMTP
// file, as Exim's use_bsmtp writes it).
func (f *fixture) hold(host string, n int) {
	f.t.Helper()
	f.holdAt(filepath.Join(f.spool, host), host, n)
}

func (f *fixture) holdAt(path, host string, n int) {
	f.t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "MAIL FROM:<sender@isp.example>\nRCPT TO:<user%d@%s>\nDATA\nSubject: message %d for %s\n\nbody %d\n..dot line\n.\n", i, host, i, host, i)
	}
	f.appendTo(path, b.String())
}

// holdBody writes n messages with the given (unstuffed-safe) body.
func (f *fixture) holdBody(host string, n int, body string) {
	f.t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "MAIL FROM:<sender@isp.example>\nRCPT TO:<user%d@%s>\nDATA\nSubject: %d\n\n%s.\n", i, host, i, body)
	}
	f.appendTo(filepath.Join(f.spool, host), b.String())
}

func (f *fixture) appendTo(path, text string) {
	f.t.Helper()
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := file.WriteString(text); err != nil {
		f.t.Fatal(err)
	}
	if err := file.Close(); err != nil {
		f.t.Fatal(err)
	}
}

// conn is the test's client end of one conversation.
type conn struct {
	t    testing.TB
	c    net.Conn
	br   *bufio.Reader
	done chan error // Serve's result
}

// socketPair returns two ends of a loopback TCP connection: the server's
// sees the client at 127.0.0.1, as under inetd.
func socketPair(t testing.TB) (server, client net.Conn) {
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
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.Fatal("accept failed")
	}
	return server, client
}

// start runs Serve on one end of a new socket pair and reads the greeting.
func (f *fixture) start() *conn {
	f.t.Helper()
	srv, cli := socketPair(f.t)
	c := &conn{t: f.t, c: cli, br: bufio.NewReader(cli), done: make(chan error, 1)}
	go func() { c.done <- Serve(context.Background(), srv, f.cfg) }()
	f.t.Cleanup(func() {
		_ = cli.Close() // may be closed already
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			f.t.Error("Serve did not return after the client closed")
		}
	})
	if err := cli.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		f.t.Fatal(err)
	}
	c.expect(220, "provider.example ESMTP")
	return c
}

// reply reads one reply: its code and its lines' text.
func (c *conn) reply() (int, []string) {
	c.t.Helper()
	var lines []string
	code := 0
	for {
		l, err := c.br.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply: %v (so far %q)", err, lines)
		}
		if !strings.HasSuffix(l, "\r\n") || len(l) < 6 {
			c.t.Fatalf("malformed reply line %q", l)
		}
		fmt.Sscanf(l[:3], "%d", &code)
		lines = append(lines, l[4:len(l)-2])
		if l[3] == ' ' {
			return code, lines
		}
	}
}

// send writes one line (CRLF added).
func (c *conn) send(line string) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.c, "%s\r\n", line); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// expect checks the next reply's code and that its text contains want.
func (c *conn) expect(code int, want string) []string {
	c.t.Helper()
	got, lines := c.reply()
	text := strings.Join(lines, "\n")
	if got != code || !strings.Contains(text, want) {
		c.t.Fatalf("reply %d %q, want %d containing %q", got, text, code, want)
	}
	return lines
}

// cmd sends line and expects a reply.
func (c *conn) cmd(line string, code int, want string) []string {
	c.t.Helper()
	c.send(line)
	return c.expect(code, want)
}

// closed waits for the server to end the conversation.
func (c *conn) closed() {
	c.t.Helper()
	buf := make([]byte, 1)
	if n, err := c.br.Read(buf); err == nil {
		c.t.Fatalf("more data after the last reply: %q", buf[:n])
	}
	select {
	case <-c.done:
		c.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		c.t.Fatal("Serve did not return")
	}
}

// startTLS upgrades the client end, trusting cert.
func (c *conn) startTLS(cert *x509.Certificate) {
	c.t.Helper()
	c.cmd("STARTTLS", 220, "Ready")
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tc := tls.Client(c.c, &tls.Config{RootCAs: pool, ServerName: "provider.example", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.c = tc
	c.br = bufio.NewReader(tc)
}

func plainAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// testCert makes a self-signed certificate for provider.example.
func testCert(t testing.TB) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	c := testcert.New(t, "provider.example")
	return c.TLS, c.Leaf
}

// withTLS gives the fixture's server a test certificate.
func (f *fixture) withTLS() *x509.Certificate {
	f.t.Helper()
	cert, leaf := testCert(f.t)
	f.cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return leaf
}
