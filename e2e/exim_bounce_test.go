//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEximBounceDSN: a real Exim is the local MTA that takes the DSN
// (sendmail = exim -C sink.conf -odi -oi -f <> --). The receiving Exim
// refuses one recipient of a two-recipient message with 550; its sender
// gets one DSN in the maildir, which is parsed with the standard
// library's MIME readers: structure, fields, original headers and the
// remote's reply. A message from <> refused the same way is not bounced.
func TestEximBounceDSN(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	w := r.newWriter(t)
	host := "file.rt.example"
	path := w.filePath(host)
	msg := "From: <alice@sender.example>\nSubject: dsn test\nMessage-ID: <dsn-1@test.example>\n\nbody of the message\n"
	if err := w.inject("alice@sender.example", []string{"ok1@" + host, "reject550x@" + host}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	null := "From: <mailer-daemon@other.example>\nSubject: a bounce\nMessage-ID: <dsn-2@test.example>\n\nbody\n"
	if err := w.inject("", []string{"reject550y@" + host}, []byte(null)); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{r.exim, "-C", filepath.Join(r.dir, "sink.conf"), "-DSINK_DIR=" + s.dir}, r.userDefines()...)
	argv = append(argv, "-odi", "-oi", "-f", "<>", "--")
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	cfg := filepath.Join(t.TempDir(), "etrnflush.toml")
	conf := "log = \"stderr\"\nsendmail = [" + strings.Join(q, ", ") + "]\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runEtrnflush(t, "-c", cfg, "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example", host)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s%s", code, stderr, eximLogs(s.dir))
	}
	if n := strings.Count(stderr, "status=bounced"); n != 1 {
		t.Errorf("%d bounced lines, want 1:\n%s", n, stderr)
	}
	fd := filepath.Join(filepath.Dir(path), ".etrnflush-"+host+".failed")
	left, err := filepath.Glob(filepath.Join(fd, "*.bsmtp"))
	if err != nil || len(left) != 1 {
		t.Errorf("failed folder holds %q, want the null sender's copy only (%v)", left, err)
	}

	for deadline := time.Now().Add(60 * time.Second); queuedMessages(t, filepath.Join(s.dir, "spool")) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sink queue not empty after 60s%s", eximLogs(s.dir))
		}
	}
	var dsns [][]byte
	files := maildirFiles(t, filepath.Join(s.dir, "maildir"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("Envelope-to: alice@sender.example\n")) {
			dsns = append(dsns, b)
		}
	}
	if len(files) != 2 || len(dsns) != 1 {
		t.Fatalf("maildir holds %d messages, %d of them DSNs to alice; want the delivered message and one DSN%s", len(files), len(dsns), eximLogs(s.dir))
	}
	m, err := mail.ReadMessage(bytes.NewReader(dsns[0]))
	if err != nil {
		t.Fatal(err)
	}
	if rp := m.Header.Get("Return-path"); rp != "<>" {
		t.Errorf("DSN Return-path %q, want <>", rp)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var groups []textproto.MIMEHeader
	var text, headers string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		switch ct {
		case "text/plain":
			text = string(body)
		case "message/delivery-status":
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					groups = append(groups, h)
				}
				if err != nil {
					break
				}
			}
		case "text/rfc822-headers":
			headers = string(body)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("parts %q", types)
	}
	if !strings.Contains(text, host) || !strings.Contains(text, "recipient rejected (scripted)") {
		t.Errorf("human-readable part:\n%s", text)
	}
	if len(groups) != 2 {
		t.Fatalf("delivery-status groups %v, want per-message and one recipient", groups)
	}
	if groups[0].Get("Reporting-MTA") != "dns; test.example" || groups[0].Get("Arrival-Date") == "" {
		t.Errorf("per-message fields %v", groups[0])
	}
	g := groups[1]
	if g.Get("Final-Recipient") != "rfc822; reject550x@"+host || g.Get("Action") != "failed" || g.Get("Remote-MTA") != "dns; 127.0.0.1" ||
		!strings.HasPrefix(g.Get("Status"), "5.") ||
		!strings.HasPrefix(g.Get("Diagnostic-Code"), "smtp; 550 ") || !strings.Contains(g.Get("Diagnostic-Code"), "recipient rejected (scripted)") {
		t.Errorf("recipient fields %v", g)
	}
	for _, want := range []string{"Subject: dsn test", "Message-ID: <dsn-1@test.example>", "Received: "} {
		if !strings.Contains(headers, want) {
			t.Errorf("original headers lack %q:\n%s", want, headers)
		}
	}
	if strings.Contains(headers, "body of the message") {
		t.Errorf("the DSN returned the body:\n%s", headers)
	}
}
