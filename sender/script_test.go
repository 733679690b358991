package sender

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"etrnflush/internal/testcert"
)

// peer is the server side of a scripted, byte-level SMTP dialogue: the
// test writes every reply by hand, so it can do what no real server does.
type peer struct {
	t       *testing.T
	c       net.Conn
	br      *bufio.Reader
	release chan struct{} // closed by the test once the client is done
	// patience bounds each read (default 5 s); the memory tests, which
	// check allocation and not speed, wait longer for a -race build on a
	// loaded machine to count and stream 64 MiB.
	patience time.Duration
}

func (p *peer) deadline() time.Time {
	if p.patience > 0 {
		return time.Now().Add(p.patience)
	}
	return time.Now().Add(5 * time.Second)
}

func (p *peer) send(lines ...string) {
	for _, l := range lines {
		if _, err := io.WriteString(p.c, l+"\r\n"); err != nil {
			p.t.Logf("peer write: %v", err)
			return
		}
	}
}

// expect reads one command line and checks it starts with prefix.
func (p *peer) expect(prefix string) string {
	p.t.Helper()
	if err := p.c.SetReadDeadline(p.deadline()); err != nil {
		p.t.Errorf("peer deadline: %v", err)
	}
	l, err := p.br.ReadString('\n')
	if err != nil {
		p.t.Errorf("peer: want %q, read error %v", prefix, err)
		return ""
	}
	if !strings.HasSuffix(l, "\r\n") || !strings.HasPrefix(l, prefix) {
		p.t.Errorf("peer: got %q, want prefix %q", l, prefix)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// expectEOF checks the client closed without sending anything more.
func (p *peer) expectEOF() {
	p.t.Helper()
	if err := p.c.SetReadDeadline(p.deadline()); err != nil {
		p.t.Errorf("peer deadline: %v", err)
	}
	if l, err := p.br.ReadString('\n'); err == nil || l != "" {
		p.t.Errorf("peer: want EOF, got %q %v", l, err)
	}
}

// data reads the wire form of the content up to the terminating dot line,
// which it leaves out. With keep false it only counts. ok is false when
// the connection ended before the dot.
func (p *peer) data(keep bool) (wire []byte, n int64, ok bool) {
	var buf bytes.Buffer
	bol := true
	for {
		if err := p.c.SetReadDeadline(p.deadline()); err != nil {
			p.t.Errorf("peer deadline: %v", err)
		}
		l, err := p.br.ReadSlice('\n')
		if bol && string(l) == ".\r\n" {
			return buf.Bytes(), n, true
		}
		n += int64(len(l))
		if keep {
			buf.Write(l)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return buf.Bytes(), n, false
		}
		bol = err == nil
	}
}

func (p *peer) startTLS(cert tls.Certificate) {
	tc := tls.Server(p.c, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err := tc.Handshake(); err != nil {
		p.t.Logf("peer handshake: %v", err)
	}
	p.c = tc
	p.br = bufio.NewReader(tc)
}

// greet sends the greeting, takes EHLO and offers exts.
func (p *peer) greet(exts ...string) {
	p.send("220 peer.test ESMTP")
	p.ehlo(exts...)
}

func (p *peer) ehlo(exts ...string) {
	p.expect("EHLO client.test")
	lines := append([]string{"peer.test"}, exts...)
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		p.send("250" + sep + l)
	}
}

// runPeer serves one connection with script. It returns the address and
// a release func that unblocks scripts waiting on p.release; Cleanup calls
// it too.
func runPeer(t *testing.T, script func(p *peer)) (string, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	closeRelease := sync.OnceFunc(func() { close(release) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return // the client never connected (refused before dialling)
		}
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		p := &peer{t: t, c: c, br: bufio.NewReader(c), release: release}
		script(p)
		if err := p.c.Close(); err != nil {
			t.Logf("peer close: %v", err)
		}
	}()
	t.Cleanup(func() {
		closeRelease()
		if err := l.Close(); err != nil {
			t.Logf("listener close: %v", err)
		}
		<-done
	})
	return l.Addr().String(), closeRelease
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, "mx.test")
	return c.TLS, c.Pool
}

func fastOptions(addr string) Options {
	o := testOptions(addr)
	o.Timeout = 300 * time.Millisecond
	o.DataTimeout = 300 * time.Millisecond
	return o
}

func TestDialFailures(t *testing.T) {
	cert, _ := selfSigned(t)
	cases := []struct {
		name      string
		script    func(p *peer)
		opts      func(*Options)
		op        string
		code      int
		temporary bool
		timeout   bool // Err must be a net timeout
	}{
		{
			name:   "421 greeting",
			script: func(p *peer) { p.send("421 4.3.2 busy"); p.expectEOF() },
			op:     "greeting", code: 421, temporary: true,
		},
		{
			name:   "554 greeting",
			script: func(p *peer) { p.send("554-5.7.1 go away", "554 5.7.1 really"); p.expectEOF() },
			op:     "greeting", code: 554, temporary: false,
		},
		{
			name:   "greeting never comes",
			script: func(p *peer) { <-p.release },
			op:     "greeting", temporary: true, timeout: true,
		},
		{
			name:   "EHLO 421",
			script: func(p *peer) { p.send("220 hi"); p.expect("EHLO"); p.send("421 4.3.2 bye") },
			op:     "ehlo", code: 421, temporary: true,
		},
		{
			name:   "EHLO 550",
			script: func(p *peer) { p.send("220 hi"); p.expect("EHLO"); p.send("550 no") },
			op:     "ehlo", code: 550, temporary: false,
		},
		{
			name:   "encrypt without STARTTLS",
			script: func(p *peer) { p.greet("SIZE"); p.expectEOF() },
			opts:   func(o *Options) { o.TLS = TLSEncrypt },
			op:     "starttls", temporary: true,
		},
		{
			name:   "verify without STARTTLS",
			script: func(p *peer) { p.greet("SIZE"); p.expectEOF() },
			opts:   func(o *Options) { o.TLS = TLSVerify },
			op:     "starttls", temporary: true,
		},
		{
			name: "verify with a self-signed certificate",
			script: func(p *peer) {
				p.greet("STARTTLS")
				p.expect("STARTTLS")
				p.send("220 go ahead")
				p.startTLS(cert)
			},
			opts: func(o *Options) { o.TLS = TLSVerify; o.TLSName = "mx.test" },
			op:   "tls", temporary: true,
		},
		{
			name: "encrypt and STARTTLS refused",
			script: func(p *peer) {
				p.greet("STARTTLS")
				p.expect("STARTTLS")
				p.send("454 4.7.0 not now")
				p.expectEOF()
			},
			opts: func(o *Options) { o.TLS = TLSEncrypt },
			op:   "starttls", code: 454, temporary: true,
		},
		{
			name: "data before the TLS handshake",
			script: func(p *peer) {
				p.greet("STARTTLS")
				p.expect("STARTTLS")
				// One write, so the injected line is read together with the 220.
				p.send("220 go ahead\r\n250 injected")
				p.expectEOF()
			},
			opts: func(o *Options) { o.TLS = TLSMay },
			op:   "starttls", temporary: true,
		},
		{
			name:   "AUTH refused without TLS",
			script: func(p *peer) { p.greet("AUTH PLAIN LOGIN"); p.expectEOF() },
			opts:   func(o *Options) { o.AuthUser, o.AuthPass = "user", "secret" },
			op:     "auth", temporary: true,
		},
		{
			name: "AUTH 535",
			script: func(p *peer) {
				p.greet("STARTTLS")
				p.expect("STARTTLS")
				p.send("220 go ahead")
				p.startTLS(cert)
				p.ehlo("AUTH PLAIN")
				p.expect("AUTH PLAIN ")
				p.send("535 5.7.8 bad credentials")
				p.expectEOF()
			},
			opts: func(o *Options) { o.TLS = TLSEncrypt; o.AuthUser, o.AuthPass = "user", "wrong" },
			op:   "auth", code: 535, temporary: false,
		},
		{
			name:   "bad HELO name",
			script: func(p *peer) { <-p.release },
			opts:   func(o *Options) { o.Helo = "a\r\nb" },
			op:     "ehlo", temporary: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, release := runPeer(t, c.script)
			o := fastOptions(addr)
			if c.opts != nil {
				c.opts(&o)
			}
			start := time.Now()
			s, err := Dial(context.Background(), o)
			release()
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("Dial took %v", el)
			}
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			if s != nil {
				t.Error("Dial returned a session with an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err %T %v is not *Error", err, err)
			}
			if e.Op != c.op || e.Reply.Code != c.code || e.Temporary != c.temporary {
				t.Errorf("got op=%s code=%d temp=%v (%v), want op=%s code=%d temp=%v",
					e.Op, e.Reply.Code, e.Temporary, e, c.op, c.code, c.temporary)
			}
			var ne net.Error
			if c.timeout && !(errors.As(err, &ne) && ne.Timeout()) {
				t.Errorf("want a timeout, got %v", err)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "wrong") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestDialSuccess(t *testing.T) {
	cert, pool := selfSigned(t)
	tlsHandshake := func(p *peer) {
		p.greet("STARTTLS", "SIZE")
		p.expect("STARTTLS")
		p.send("220 go ahead")
		p.startTLS(cert)
	}
	plainIR := base64.StdEncoding.EncodeToString([]byte("\x00user\x00secret"))
	cases := []struct {
		name   string
		script func(p *peer)
		opts   func(*Options)
		tls    bool
		ext    string // an extension that must be present
	}{
		{
			name: "HELO fallback",
			script: func(p *peer) {
				p.send("220 old")
				p.expect("EHLO client.test")
				p.send("500 what?")
				p.expect("HELO client.test")
				p.send("250 old.test")
			},
		},
		{
			name: "multi-line greeting and EHLO",
			script: func(p *peer) {
				p.send("220-peer.test first", "220-second", "220 third")
				p.ehlo("8BITMIME", "size 1000")
			},
			ext: "SIZE",
		},
		{
			name:   "may without STARTTLS stays clear",
			script: func(p *peer) { p.greet("8BITMIME") },
			opts:   func(o *Options) { o.TLS = TLSMay },
			ext:    "8BITMIME",
		},
		{
			name: "may and STARTTLS refused stays clear",
			script: func(p *peer) {
				p.greet("STARTTLS")
				p.expect("STARTTLS")
				p.send("454 4.7.0 not now")
			},
			opts: func(o *Options) { o.TLS = TLSMay },
			ext:  "STARTTLS",
		},
		{
			name: "none ignores STARTTLS",
			script: func(p *peer) {
				p.greet("STARTTLS")
			},
			ext: "STARTTLS",
		},
		{
			name:   "may with a self-signed certificate",
			script: func(p *peer) { tlsHandshake(p); p.ehlo("PIPELINING") },
			opts:   func(o *Options) { o.TLS = TLSMay },
			tls:    true, ext: "PIPELINING",
		},
		{
			name:   "verify with the CA",
			script: func(p *peer) { tlsHandshake(p); p.ehlo("PIPELINING") },
			opts: func(o *Options) {
				o.TLS = TLSVerify
				o.TLSName = "mx.test"
				o.TLSConf = &tls.Config{RootCAs: pool}
			},
			tls: true, ext: "PIPELINING",
		},
		{
			name: "AUTH PLAIN over TLS",
			script: func(p *peer) {
				tlsHandshake(p)
				p.ehlo("AUTH LOGIN PLAIN")
				p.expect("AUTH PLAIN " + plainIR)
				p.send("235 2.7.0 ok")
			},
			opts: func(o *Options) { o.TLS = TLSEncrypt; o.AuthUser, o.AuthPass = "user", "secret" },
			tls:  true, ext: "AUTH",
		},
		{
			name: "AUTH LOGIN over TLS",
			script: func(p *peer) {
				tlsHandshake(p)
				p.ehlo("AUTH LOGIN")
				p.expect("AUTH LOGIN " + base64.StdEncoding.EncodeToString([]byte("user")))
				p.send("334 " + base64.StdEncoding.EncodeToString([]byte("Password:")))
				p.expect(base64.StdEncoding.EncodeToString([]byte("secret")))
				p.send("235 2.7.0 ok")
			},
			opts: func(o *Options) { o.TLS = TLSEncrypt; o.AuthUser, o.AuthPass = "user", "secret" },
			tls:  true, ext: "AUTH",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, _ := runPeer(t, func(p *peer) {
				c.script(p)
				p.expect("QUIT")
				p.send("221 bye")
				p.expectEOF()
			})
			o := fastOptions(addr)
			if c.opts != nil {
				c.opts(&o)
			}
			var mu sync.Mutex
			var transcript []string
			o.Trace = func(dir, line string) {
				mu.Lock()
				defer mu.Unlock()
				transcript = append(transcript, dir+" "+line)
			}
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				mu.Lock()
				defer mu.Unlock()
				all := strings.Join(transcript, "\n")
				if !strings.Contains(all, "C EHLO ") || !strings.Contains(all, "S 221 bye") {
					t.Errorf("transcript lacks EHLO or the reply to QUIT:\n%s", all)
				}
				// The credentials never reach the transcript, in any form.
				for _, secret := range []string{"secret", plainIR, base64.StdEncoding.EncodeToString([]byte("secret"))} {
					if strings.Contains(all, secret) {
						t.Errorf("transcript holds %q:\n%s", secret, all)
					}
				}
				if o.AuthUser != "" && !strings.Contains(all, "<credentials elided>") {
					t.Errorf("transcript does not show the AUTH command:\n%s", all)
				}
			}()
			if s.TLS() != c.tls {
				t.Errorf("TLS() = %v, want %v", s.TLS(), c.tls)
			}
			ext := s.Extensions()
			if c.ext == "" && len(ext) != 0 {
				t.Errorf("extensions %v, want none", ext)
			}
			if _, ok := ext[c.ext]; c.ext != "" && !ok {
				t.Errorf("extensions %v lack %s", ext, c.ext)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

// bigContent yields n octets of 78-column lines without holding them.
type bigContent struct{ n, off int64 }

func (b *bigContent) Read(p []byte) (int, error) {
	if b.off >= b.n {
		return 0, io.EOF
	}
	k := 0
	for k < len(p) && b.off < b.n {
		if b.off%79 == 78 {
			p[k] = '\n'
		} else {
			p[k] = 'z'
		}
		k++
		b.off++
	}
	return k, nil
}

func bigMsg(n int64) *Message {
	return &Message{
		From: "a@x", To: []string{"r@y"}, Size: n,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(&bigContent{n: n}), nil },
	}
}

// envelope plays MAIL/RCPT/DATA with 250s and a 354.
func (p *peer) envelope(rcpts int) {
	p.expect("MAIL FROM:<")
	p.send("250 ok")
	for range rcpts {
		p.expect("RCPT TO:<")
		p.send("250 ok")
	}
	p.expect("DATA")
	p.send("354 go")
}

// TestSessionFailures covers a session dying under a message: what the
// message is reported as, and that Send returns quickly with an *Error.
func TestSessionFailures(t *testing.T) {
	const big = 32 << 20 // more than loopback socket buffers can absorb
	cases := []struct {
		name   string
		m      *Message
		script func(p *peer)
		st     string // statuses, "?" for Uncertain
		op     string
		code   int
	}{
		{
			name: "dropped mid-DATA",
			m:    bigMsg(big),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				if _, err := io.ReadFull(p.br, make([]byte, 1000)); err != nil {
					t.Errorf("peer read: %v", err)
				}
			},
			st: "d", op: "body",
		},
		{
			name: "dropped right after the dot",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				if _, _, ok := p.data(false); !ok {
					t.Error("no dot")
				}
			},
			st: "d?", op: "dot",
		},
		{
			name: "server stops reading during the body",
			m:    bigMsg(big),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				<-p.release
			},
			st: "d", op: "body",
		},
		{
			name: "MAIL reply slower than Timeout",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				<-p.release
			},
			st: "d", op: "mail",
		},
		{
			name: "RCPT reply slower than Timeout",
			m:    msg("a@x", "hello\n", "r1@y", "r2@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("550 no")
				p.expect("RCPT")
				<-p.release
			},
			st: "fd", op: "rcpt",
		},
		{
			name: "DATA reply slower than Timeout",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("250 ok")
				p.expect("DATA")
				<-p.release
			},
			st: "d", op: "data",
		},
		{
			name: "dot reply slower than DataTimeout",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				p.data(false)
				<-p.release
			},
			st: "d?", op: "dot",
		},
		{
			name: "421 at RCPT",
			m:    msg("a@x", "hello\n", "r1@y", "r2@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("421 4.3.2 shutting down")
			},
			st: "dd", op: "rcpt", code: 421,
		},
		{
			name: "421 after the dot",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				p.data(false)
				p.send("421 4.3.2 shutting down")
			},
			st: "d", op: "dot", code: 421,
		},
		{
			name: "garbage reply",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("hello there")
			},
			st: "d", op: "mail",
		},
		{
			name: "content read error mid-body",
			m: &Message{From: "a@x", To: []string{"r@y"}, Size: 100,
				Open: func() (io.ReadCloser, error) {
					return io.NopCloser(&failReader{n: 50, err: errors.New("disk")}), nil
				}},
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				if _, _, ok := p.data(false); ok {
					t.Error("the dot followed partial content")
				}
			},
			st: "d", op: "body",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, release := runPeer(t, c.script)
			s, err := Dial(context.Background(), fastOptions(addr))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			res, err := sendAll(t, s, []*Message{c.m})
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("Send took %v", el)
			}
			release()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Send err %T %v, want *Error", err, err)
			}
			if e.Op != c.op || e.Reply.Code != c.code || !e.Temporary {
				t.Errorf("error op=%s code=%d temp=%v (%v), want op=%s code=%d", e.Op, e.Reply.Code, e.Temporary, e, c.op, c.code)
			}
			if len(res) != 1 {
				t.Fatalf("%d results", len(res))
			}
			if st := statuses(res[0]); st != c.st {
				t.Errorf("statuses %s (%+v), want %s", st, res[0].Reply, c.st)
			}
			if res[0].Reply.Text == "" {
				t.Error("no reason in Result.Reply")
			}
			// The session is dead: Send refuses, Close only closes.
			if err := s.Send(context.Background(), func() (*Message, error) {
				t.Error("next called on a dead session")
				return nil, io.EOF
			}, nil); err == nil {
				t.Error("Send on a dead session succeeded")
			}
			if err := s.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
		})
	}
}

// TestDialogue checks exact commands and per-recipient outcomes for the
// replies go-smtp's server cannot produce.
func TestDialogue(t *testing.T) {
	edgeStuffed := "..lead\r\n...two\r\nnul\x00 8bit\xff\xfe bare\rcr\r\n" + strings.Repeat("L", 70000) + "\r\n..\r\n\r\nno final newline\r\n"
	cases := []struct {
		name   string
		msgs   []*Message
		script func(p *peer)
		st     []string
		codes  []int
	}{
		{
			name: "wire form, SIZE and BODY",
			msgs: func() []*Message {
				m := msg("a@x", edgeBody, "r@y")
				m.EightBit = true
				return []*Message{m}
			}(),
			script: func(p *peer) {
				p.greet("8BITMIME", "SIZE 1000000")
				p.expect("MAIL FROM:<a@x> SIZE=" + strconv.Itoa(len(edgeWire)) + " BODY=8BITMIME\r")
				p.send("250 ok")
				p.expect("RCPT TO:<r@y>")
				p.send("250 ok")
				p.expect("DATA")
				p.send("354 go")
				wire, _, ok := p.data(true)
				if !ok || string(wire) != edgeStuffed {
					t.Errorf("wire form differs: ok=%v got %q", ok, trunc(string(wire)))
				}
				p.send("250-2.0.0 queued", "250 2.0.0 as 123")
			},
			st: []string{"s"}, codes: []int{250},
		},
		{
			name: "HELO session sends no parameters",
			msgs: func() []*Message {
				m := msg("a@x", "\xe9t\xe9\n", "r@y")
				m.EightBit = true
				return []*Message{m}
			}(),
			script: func(p *peer) {
				p.send("220 old")
				p.expect("EHLO")
				p.send("502 no")
				p.expect("HELO")
				p.send("250 old")
				if l := p.expect("MAIL FROM:<a@x>"); l != "MAIL FROM:<a@x>" {
					t.Errorf("MAIL line %q", l)
				}
				p.send("250 ok")
				p.expect("RCPT TO:<r@y>")
				p.send("250 ok")
				p.expect("DATA")
				p.send("354 go")
				p.data(false)
				p.send("250 ok")
			},
			st: []string{"s"}, codes: []int{250},
		},
		{
			name: "no SMTPUTF8 and a UTF-8 address",
			msgs: []*Message{msg("jörg@x", "hi\n", "r@y"), msg("a@x", "hi\n", "東京@y"), msg("a@x", "hi\n", "r@y")},
			script: func(p *peer) {
				p.greet("8BITMIME")
				p.expect("MAIL FROM:<a@x>")
				p.send("250 ok")
				p.expect("RCPT TO:<r@y>")
				p.send("250 ok")
				p.expect("DATA")
				p.send("354 go")
				p.data(false)
				p.send("250 ok")
			},
			st: []string{"f", "f", "s"}, codes: []int{0, 0, 250},
		},
		{
			name: "SMTPUTF8 offered",
			msgs: []*Message{msg("jörg@x", "hi\n", "r@y")},
			script: func(p *peer) {
				p.greet("SMTPUTF8")
				p.expect("MAIL FROM:<jörg@x> SMTPUTF8\r")
				p.send("250 ok")
				p.expect("RCPT TO:<r@y>")
				p.send("250 ok")
				p.expect("DATA")
				p.send("354 go")
				p.data(false)
				p.send("250 ok")
			},
			st: []string{"s"}, codes: []int{250},
		},
		{
			name: "SIZE limit exceeded, exact size below it",
			msgs: []*Message{msg("a@x", strings.Repeat("x\n", 50), "r@y"), msg("a@x", strings.Repeat("x\n", 33), "r@y")},
			script: func(p *peer) {
				// 100 octets stored, 150 on the wire: over 149. 66 stored,
				// 99 on the wire: under.
				p.greet("SIZE 149")
				p.expect("MAIL FROM:<a@x> SIZE=99\r")
				p.send("250 ok")
				p.expect("RCPT TO:<r@y>")
				p.send("250 ok")
				p.expect("DATA")
				p.send("354 go")
				p.data(false)
				p.send("250 ok")
			},
			st: []string{"f", "s"}, codes: []int{0, 250},
		},
		{
			name: "452 on the 3rd RCPT",
			// RFC 5321 4.5.3.1.10: the rest go in a new transaction of
			// the same session, as many rounds as the limit takes.
			msgs: []*Message{msg("a@x", "hi\n", "r1@y", "r2@y", "r3@y", "r4@y", "r5@y")},
			script: func(p *peer) {
				p.greet()
				for _, round := range [][]string{{"r1@y", "r2@y", "r3@y"}, {"r3@y", "r4@y", "r5@y"}, {"r5@y"}} {
					p.expect("MAIL")
					p.send("250 ok")
					for i, to := range round {
						p.expect("RCPT TO:<" + to + ">")
						if i == 2 {
							p.send("452 4.5.3 Too many recipients")
							break
						}
						p.send("250 ok")
					}
					p.expect("DATA")
					p.send("354 go")
					p.data(false)
					p.send("250 ok")
				}
			},
			st: []string{"sssss"}, codes: []int{250},
		},
		{
			name: "452 too many, and the rest refused: no endless rounds",
			msgs: []*Message{msg("a@x", "hi\n", "r1@y", "r2@y", "r3@y")},
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT TO:<r1@y>")
				p.send("250 ok")
				p.expect("RCPT TO:<r2@y>")
				p.send("452 4.5.3 Too many recipients")
				p.expect("DATA")
				p.send("354 go")
				p.data(false)
				p.send("250 ok")
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT TO:<r2@y>")
				p.send("452 4.5.3 Too many recipients")
				p.expect("RSET")
				p.send("250 ok")
			},
			st: []string{"sdd"}, codes: []int{452},
		},
		{
			name: "452 mailbox full does not stop the list",
			msgs: []*Message{msg("a@x", "hi\n", "r1@y", "r2@y", "r3@y")},
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT TO:<r1@y>")
				p.send("452 4.2.2 Mailbox full")
				p.expect("RCPT TO:<r2@y>")
				p.send("550-5.1.1 no such", "550 5.1.1 user")
				p.expect("RCPT TO:<r3@y>")
				p.send("250 ok")
				p.expect("DATA")
				p.send("354 go")
				p.data(false)
				p.send("250 ok")
			},
			st: []string{"dfs"}, codes: []int{250},
		},
		{
			name: "DATA 554 and 451 instead of 354",
			msgs: []*Message{msg("a@x", "hi\n", "r1@y", "r2@y"), msg("b@x", "hi\n", "r1@y")},
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL FROM:<a@x>")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("550 no")
				p.expect("RCPT")
				p.send("250 ok")
				p.expect("DATA")
				p.send("554 5.3.0 no")
				p.expect("RSET")
				p.send("250 ok")
				p.expect("MAIL FROM:<b@x>")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("250 ok")
				p.expect("DATA")
				p.send("451 4.3.0 later")
				p.expect("RSET")
				p.send("250 ok")
			},
			st: []string{"ff", "d"}, codes: []int{554, 451},
		},
		{
			name: "multi-line replies everywhere",
			msgs: []*Message{msg("a@x", "hi\n", "r@y")},
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250-a", "250 b")
				p.expect("RCPT")
				p.send("250-c", "250-d", "250 e")
				p.expect("DATA")
				p.send("354-go", "354 on")
				p.data(false)
				p.send("550-5.7.1 first line", "550-5.7.1 second\x01line", "550 5.7.1 third")
			},
			st: []string{"f"}, codes: []int{550},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, _ := runPeer(t, func(p *peer) {
				c.script(p)
				p.expect("QUIT")
				p.send("221 bye")
			})
			s, err := Dial(context.Background(), fastOptions(addr))
			if err != nil {
				t.Fatal(err)
			}
			res, err := sendAll(t, s, c.msgs)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			for i := range c.st {
				if st := statuses(res[i]); st != c.st[i] || res[i].Reply.Code != c.codes[i] {
					t.Errorf("msg %d: %s %+v, want %s %d", i, st, res[i].Reply, c.st[i], c.codes[i])
				}
			}
		})
	}
}

func TestMultiLineText(t *testing.T) {
	addr, _ := runPeer(t, func(p *peer) {
		p.greet()
		p.envelope(1)
		p.data(false)
		p.send("451-4.3.0 first", "451-4.3.0 se\x01cond", "451 4.3.0 third")
		p.expect("QUIT")
		p.send("221 bye")
	})
	s, err := Dial(context.Background(), fastOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sendAll(t, s, []*Message{msg("a@x", "hi\n", "r@y")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	want := Reply{451, "4.3.0 first 4.3.0 se?cond 4.3.0 third"}
	if res[0].Reply != want {
		t.Errorf("reply %+v, want %+v", res[0].Reply, want)
	}
}

func TestContextCancelDuringDot(t *testing.T) {
	addr, release := runPeer(t, func(p *peer) {
		p.greet()
		p.envelope(1)
		p.data(false)
		<-p.release
	})
	o := fastOptions(addr)
	o.DataTimeout = time.Minute
	s, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	var res Result
	err = s.Send(ctx, func() (*Message, error) {
		if res.Rcpts != nil {
			return nil, io.EOF
		}
		return msg("a@x", "hi\n", "r@y"), nil
	}, func(_ *Message, r Result) error { res = r; return nil })
	release()
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Send took %v after cancel", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's", err)
	}
	if statuses(res) != "d?" {
		t.Errorf("statuses %s", statuses(res))
	}
	if err := s.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
}

// TestBodyMemoryFlat streams a large body and checks allocation does not
// grow with it.
func TestBodyMemoryFlat(t *testing.T) {
	const size = 64 << 20
	addr, _ := runPeer(t, func(p *peer) {
		p.patience = 2 * time.Minute
		p.greet("SIZE")
		p.envelope(1)
		if _, n, ok := p.data(false); !ok || n < size {
			t.Errorf("peer got %d octets, ok=%v", n, ok)
		}
		p.send("250 ok")
		p.expect("QUIT")
		p.send("221 bye")
	})
	o := testOptions(addr)
	o.Timeout, o.DataTimeout = 2*time.Minute, 2*time.Minute
	sendFlat(t, o, size)
}

// sendFlat sends one message of size octets over a session dialled with o
// and fails when that allocated more than 4 MiB or the message was not
// sent. Both ends run in this process; the peers reuse their bufio
// buffers.
func sendFlat(t *testing.T, o Options, size int64) {
	t.Helper()
	s, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := sendAll(t, s, []*Message{bigMsg(size)})
	runtime.ReadMemStats(&after)
	if err != nil || statuses(res[0]) != "s" {
		t.Fatalf("%v %+v", err, res)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Errorf("allocated %d octets to send %d", grew, size)
	}
}

// failConn fails writes once armed: either before a single octet leaves
// (short) or after all of them were handed over (late).
type failConn struct {
	net.Conn
	armed *atomic.Bool
	late  bool
}

func (f *failConn) Write(p []byte) (int, error) {
	if !f.armed.Load() {
		return f.Conn.Write(p)
	}
	if f.late {
		n, err := f.Conn.Write(p)
		if err == nil {
			err = errors.New("injected late write error")
		}
		return n, err
	}
	return 0, errors.New("injected write error")
}

// TestDotWriteFailure checks the dot is judged by what reached the
// connection: a failed flush that wrote nothing is a plain deferral, one
// that wrote everything may have delivered.
func TestDotWriteFailure(t *testing.T) {
	for _, late := range []bool{false, true} {
		name, want := "nothing written", "d"
		if late {
			name, want = "all written", "d?"
		}
		t.Run(name, func(t *testing.T) {
			var armed atomic.Bool
			addr, release := runPeer(t, func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("250 ok")
				p.expect("DATA")
				// Armed before 354: the client writes the body only after it.
				armed.Store(true)
				p.send("354 go")
				<-p.release
			})
			o := fastOptions(addr)
			o.Dial = func(network, addr string, timeout time.Duration) (net.Conn, error) {
				c, err := net.DialTimeout(network, addr, timeout)
				if err != nil {
					return nil, err
				}
				return &failConn{Conn: c, armed: &armed, late: late}, nil
			}
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			res, err := sendAll(t, s, []*Message{msg("a@x", "hello\n", "r@y")})
			release()
			var e *Error
			if !errors.As(err, &e) || e.Op != "dot" {
				t.Errorf("err = %v, want *Error op dot", err)
			}
			if st := statuses(res[0]); st != want {
				t.Errorf("statuses %s, want %s", st, want)
			}
			if err := s.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
		})
	}
}

// sendRaw writes lines as one write, so that they reach the client in one
// segment.
func (p *peer) sendRaw(lines ...string) {
	if _, err := io.WriteString(p.c, strings.Join(lines, "\r\n")+"\r\n"); err != nil {
		p.t.Logf("peer write: %v", err)
	}
}

// TestOutOfStep: a reply that no command asked for must never be taken as
// the answer to a later command. A stale 250 read as the verdict on the
// dot reports Sent for mail the server refused; one read as a RCPT reply
// shifts every later reply and reports a recipient Failed that the server
// accepted. The session is given up instead, and nothing unanswered is
// reported Sent or Failed.
func TestOutOfStep(t *testing.T) {
	cases := []struct {
		name   string
		m      *Message
		script func(p *peer)
		st     string
		ops    string // the ops the error may name
	}{
		{
			// Out of step, a's 550 would be read as b's reply.
			name: "two replies to MAIL",
			m:    msg("a@x", "hello\n", "a@y", "b@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.sendRaw("250 ok", "250 ok")
				// The client should hang up now; play on if it does not.
				for _, reply := range []string{"550 5.1.1 <a@y> unknown", "250 ok", "354 go"} {
					if _, err := p.br.ReadString('\n'); err != nil {
						return
					}
					p.send(reply)
				}
				p.data(false)
				p.send("250 ok")
				<-p.release
			},
			st: "dd", ops: "mail rcpt",
		},
		{
			name: "a 250 behind the 354",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("250 ok")
				p.expect("DATA")
				p.sendRaw("354 go", "250 2.0.0 bogus early")
				p.data(false)
				p.send("451 4.3.0 the real verdict")
			},
			st: "d", ops: "data dot",
		},
		{
			// 32 MiB is more than the socket buffers hold: the client is
			// still writing the body when the stale 250 reaches it.
			name: "a 250 while the body is written",
			m:    bigMsg(32 << 20),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				time.Sleep(5 * time.Millisecond)
				p.send("250 2.0.0 bogus early")
				time.Sleep(100 * time.Millisecond)
				p.data(false)
				p.send("451 4.3.0 the real verdict")
			},
			st: "d", ops: "data dot",
		},
		{
			name: "two replies to the dot",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				p.data(false)
				p.sendRaw("250 ok", "250 ok")
				<-p.release
			},
			st: "d?", ops: "dot",
		},
		{
			name: "221 to the dot",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.envelope(1)
				p.data(false)
				p.send("221 2.0.0 bye")
				<-p.release
			},
			st: "d?", ops: "dot",
		},
		{
			name: "252 to RCPT",
			m:    msg("a@x", "hello\n", "r@y"),
			script: func(p *peer) {
				p.greet()
				p.expect("MAIL")
				p.send("250 ok")
				p.expect("RCPT")
				p.send("252 2.1.5 cannot verify")
				<-p.release
			},
			st: "d", ops: "rcpt",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, release := runPeer(t, c.script)
			s, err := Dial(context.Background(), fastOptions(addr))
			if err != nil {
				t.Fatal(err)
			}
			res, err := sendAll(t, s, []*Message{c.m})
			release()
			var e *Error
			if !errors.As(err, &e) || !e.Temporary {
				t.Fatalf("Send err %T %v, want a temporary *Error", err, err)
			}
			if !slices.Contains(strings.Fields(c.ops), e.Op) {
				t.Errorf("error op %s (%v), want one of %s", e.Op, e, c.ops)
			}
			if len(res) != 1 {
				t.Fatalf("%d results", len(res))
			}
			if st := statuses(res[0]); st != c.st {
				t.Errorf("statuses %s (%+v), want %s", st, res[0].Reply, c.st)
			}
			if err := s.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
		})
	}
}

// TestTLSMayFallsBack: under "may" a server that offers STARTTLS but fails
// the handshake gets a second connection in clear text; under "encrypt",
// or with AUTH to do, the failure stands.
func TestTLSMayFallsBack(t *testing.T) {
	for _, c := range []struct {
		name  string
		opts  func(*Options)
		conns int  // connections the client should make
		ok    bool // Dial succeeds, in clear text
	}{
		{"may", func(o *Options) { o.TLS = TLSMay }, 2, true},
		{"encrypt", func(o *Options) { o.TLS = TLSEncrypt }, 1, false},
		{"may with auth", func(o *Options) { o.TLS = TLSMay; o.AuthUser, o.AuthPass = "u", "p" }, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var conns atomic.Int32
			go func() {
				for {
					nc, err := l.Accept()
					if err != nil {
						return
					}
					n := conns.Add(1)
					p := &peer{t: t, c: nc, br: bufio.NewReader(nc)}
					p.greet("STARTTLS")
					if n == 1 {
						p.expect("STARTTLS")
						p.send("220 go ahead")
						// After the client's ClientHello, not with the 220.
						buf := make([]byte, 1)
						if _, err := p.br.Read(buf); err != nil {
							t.Logf("peer: %v", err)
						}
						p.send("this is not a TLS record")
					} else {
						p.expect("QUIT")
						p.send("221 bye")
					}
					_ = nc.Close()
				}
			}()
			defer l.Close()
			o := fastOptions(l.Addr().String())
			c.opts(&o)
			s, err := Dial(context.Background(), o)
			if got := int(conns.Load()); got != c.conns {
				t.Errorf("%d connections, want %d", got, c.conns)
			}
			if !c.ok {
				if err == nil {
					t.Fatal("Dial succeeded")
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			if s.TLS() || s.TLSFailed() == nil {
				t.Errorf("TLS()=%v TLSFailed()=%v, want a clear session that says why", s.TLS(), s.TLSFailed())
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}
