// Command sink is the receiving SMTP server of `make demo`: it stands in for
// the intermittently connected host's mail server, so the demo needs
// nothing but Go. It prints one line per message and per refused
// recipient, and stores each message it accepts as a file.
//
// Scripted answers, by recipient local part (the convention of the Exim
// sink used in the real-MTA tests):
//
//	reject550*  550 at RCPT: etrnflush moves it to the failed folder
//	defer451*   451 at RCPT: etrnflush keeps it for the next run
//
// Everything else is accepted.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	addrFile := flag.String("addr-file", "", "write the address actually listened on to this file")
	dir := flag.String("dir", "", "store received messages in this directory (required)")
	flag.Parse()
	if *dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: sink -dir DIR [-listen ADDR] [-addr-file FILE]")
		os.Exit(64)
	}
	if err := run(*listen, *addrFile, *dir); err != nil {
		fmt.Fprintf(os.Stderr, "sink: error: %v\n", err)
		os.Exit(1)
	}
}

func run(listen, addrFile, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create message directory: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	be := &backend{dir: dir, out: os.Stdout}
	srv := be.server("sink.demo.example", log.New(os.Stderr, "sink: ", 0))

	// The address file appears only once the listener is up, so the demo
	// script can wait for it instead of guessing a delay.
	if addrFile != "" {
		if err := writeFileAtomic(addrFile, []byte(ln.Addr().String()+"\n")); err != nil {
			_ = ln.Close()
			return err
		}
	}
	be.printf("sink: listening on %s, storing messages in %s", ln.Addr(), dir)

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		be.printf("sink: %s: stopping after %d message(s)", s, be.count())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// backend is what the sink adds to the fake SMTP server of the tests
// (internal/fakesmtp): the scripted answers, the console lines and the
// message files.
type backend struct {
	dir string
	out io.Writer

	mu sync.Mutex // serialises output lines and the message counter
	n  int
}

// server returns the fake SMTP server that answers as the package comment
// says; errLog, if not nil, gets go-smtp's complaints.
func (b *backend) server(domain string, errLog smtp.Logger) *fakesmtp.Server {
	return &fakesmtp.Server{
		Domain:  domain,
		Timeout: time.Minute,
		Tune: func(s *smtp.Server) {
			s.EnableSMTPUTF8 = true
			s.MaxLineLength = 0 // Exim lines can be long; this is not what the demo is about
			if errLog != nil {
				s.ErrorLog = errLog
			}
		},
		OnRcpt: b.rcpt,
		OnData: b.data,
		// The content goes to a file, not into memory.
		Discard: true,
	}
}

func (b *backend) printf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(b.out, format+"\n", args...)
}

func (b *backend) next() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	return b.n
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// opts shows the MAIL parameters worth a look in the demo.
func opts(o smtp.MailOptions) string {
	var out []string
	if o.Body != "" {
		out = append(out, "BODY="+string(o.Body))
	}
	if o.UTF8 {
		out = append(out, "SMTPUTF8")
	}
	return strings.Join(out, " ")
}

func (b *backend) rcpt(_ *fakesmtp.Txn, to string, _ int) error {
	local, _, _ := strings.Cut(strings.ToLower(to), "@")
	switch {
	case strings.HasPrefix(local, "reject550"):
		b.printf("sink: refused  to=<%s> with 550 (scripted)", to)
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here (demo sink: reject550*)"}
	case strings.HasPrefix(local, "defer451"):
		b.printf("sink: deferred to=<%s> with 451 (scripted)", to)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "mailbox busy, try later (demo sink: defer451*)"}
	}
	return nil
}

// data streams the message to its file; only the first header lines are
// looked at, for the Subject shown on the console.
func (b *backend) data(tx *fakesmtp.Txn, r io.Reader) (after func(), err error) {
	n := b.next()
	name := filepath.Join(b.dir, fmt.Sprintf("msg-%04d.eml", n))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store message: %w", err)
	}
	var head bytes.Buffer
	size, err := io.Copy(f, io.TeeReader(r, &capWriter{buf: &head, max: 8192}))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// A message that was not stored must not be accepted.
		_ = os.Remove(name)
		return nil, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "could not store the message"}
	}
	rc := make([]string, len(tx.To))
	for i, t := range tx.To {
		rc[i] = "<" + t + ">"
	}
	extra := ""
	if o := opts(tx.Opts); o != "" {
		extra = " " + o
	}
	return func() {
		b.printf("sink: accepted #%d from=<%s> to=%s size=%d%s subject=%q -> %s",
			n, tx.From, strings.Join(rc, ","), size, extra, subject(head.Bytes()), filepath.Base(name))
	}, nil
}

// capWriter keeps the first max bytes written to it and drops the rest.
type capWriter struct {
	buf *bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func subject(head []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(head))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Subject") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
