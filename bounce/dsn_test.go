package bounce

import (
	"bufio"
	"bytes"
	"context"
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

// parsed is a DSN taken apart with the standard library's MIME readers.
type parsed struct {
	top      mail.Header
	text     string
	perMsg   textproto.MIMEHeader
	perRcpt  []textproto.MIMEHeader
	headers  string
	partType []string
}

func parseDSN(t *testing.T, raw []byte) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("read DSN: %v\n%s", err, raw)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	p := parsed{top: m.Header}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		p.partType = append(p.partType, ct)
		body, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		switch ct {
		case "text/plain":
			p.text = string(body)
		case "message/delivery-status":
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			if p.perMsg, err = tr.ReadMIMEHeader(); err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					p.perRcpt = append(p.perRcpt, h)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("per-recipient fields: %v", err)
				}
			}
		case "text/rfc822-headers":
			p.headers = string(body)
		}
	}
	return p
}

const original = "Received: from a.example by mx.example; Tue, 1 Dec 2026 10:00:00 +0000\n" +
	"From: Alice <alice@sender.example>\n" +
	"Subject: lunch\n" +
	"\n" +
	"Secret body that must not be returned.\n"

func TestWriteDSNFields(t *testing.T) {
	arr := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := Report{
		ReportingMTA: "relay.isp.example",
		Host:         "dialup.example",
		RemoteMTA:    "mx.dialup.example",
		Sender:       "alice@sender.example",
		Arrival:      arr,
		Rcpts: []Recipient{
			{Addr: "ann@dialup.example", Reply: "550 5.1.1 <ann@dialup.example>: no such user\r\nBcc: injected"},
			{Addr: "bob@dialup.example", Reply: "554 transaction failed"},
			{Addr: "cy@dialup.example", Reply: "5.3.4 not sent: message is bigger than the server's SIZE limit"},
		},
	}
	var buf bytes.Buffer
	if err := Write(&buf, r, strings.NewReader(original)); err != nil {
		t.Fatal(err)
	}
	p := parseDSN(t, buf.Bytes())
	if got := strings.Join(p.partType, ","); got != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Errorf("parts %s", got)
	}
	if p.top.Get("To") != "<alice@sender.example>" || p.top.Get("Auto-Submitted") != "auto-replied" ||
		!strings.Contains(p.top.Get("From"), "MAILER-DAEMON@relay.isp.example") {
		t.Errorf("top header %v", p.top)
	}
	if p.top.Get("Bcc") != "" {
		t.Errorf("a line break in a reply forged a header")
	}
	if !strings.Contains(p.text, "dialup.example") || !strings.Contains(p.text, "no such user") ||
		!strings.Contains(p.text, "mx.dialup.example said") {
		t.Errorf("human part does not name host and reason:\n%s", p.text)
	}
	if got := p.perMsg.Get("Reporting-MTA"); got != "dns; relay.isp.example" {
		t.Errorf("Reporting-MTA %q", got)
	}
	if got := p.perMsg.Get("Arrival-Date"); got != arr.Format(time.RFC1123Z) {
		t.Errorf("Arrival-Date %q", got)
	}
	if len(p.perRcpt) != 3 {
		t.Fatalf("%d recipient groups, want 3: %v", len(p.perRcpt), p.perRcpt)
	}
	want := []struct{ rcpt, status, diag, remote string }{
		{"rfc822; ann@dialup.example", "5.1.1", "smtp; 550 5.1.1 <ann@dialup.example>: no such user  Bcc: injected", "dns; mx.dialup.example"},
		{"rfc822; bob@dialup.example", "5.0.0", "smtp; 554 transaction failed", "dns; mx.dialup.example"},
		{"rfc822; cy@dialup.example", "5.3.4", "", ""}, // a local refusal: no server said it
	}
	for i, w := range want {
		g := p.perRcpt[i]
		if g.Get("Final-Recipient") != w.rcpt || g.Get("Action") != "failed" || g.Get("Status") != w.status ||
			g.Get("Diagnostic-Code") != w.diag || g.Get("Remote-MTA") != w.remote {
			t.Errorf("recipient %d: %v, want %+v", i, g, w)
		}
	}
	if !strings.Contains(p.headers, "Subject: lunch\r\n") || !strings.Contains(p.headers, "Received: from a.example") {
		t.Errorf("original headers missing:\n%s", p.headers)
	}
	if strings.Contains(p.headers, "Secret body") {
		t.Errorf("the body was returned:\n%s", p.headers)
	}
}

func TestWriteDSNNoArrivalNoRemote(t *testing.T) {
	var buf bytes.Buffer
	r := Report{ReportingMTA: "relay.isp.example", Host: "h.example", Sender: "s@x.example",
		Rcpts: []Recipient{{Addr: "jöe@h.example", Reply: "550 4.1.1 odd"}}}
	if err := Write(&buf, r, strings.NewReader("Subject: x\n")); err != nil {
		t.Fatal(err)
	}
	p := parseDSN(t, buf.Bytes())
	if _, ok := p.perMsg["Arrival-Date"]; ok {
		t.Errorf("Arrival-Date without an arrival: %v", p.perMsg)
	}
	g := p.perRcpt[0]
	if g.Get("Remote-MTA") != "" || g.Get("Status") != "5.0.0" || g.Get("Final-Recipient") != `utf-8; j\x{F6}e@h.example` {
		t.Errorf("recipient %v", g)
	}
	if p.headers != "Subject: x\r\n" {
		t.Errorf("headers %q", p.headers)
	}
}

func TestHeadersCapped(t *testing.T) {
	var in strings.Builder
	for in.Len() < 3*MaxHeaders {
		in.WriteString("X-Filler: 0123456789012345678901234567890123456789\n")
	}
	var out bytes.Buffer
	if err := copyHeaders(&out, strings.NewReader(in.String())); err != nil {
		t.Fatal(err)
	}
	if out.Len() > MaxHeaders || out.Len() < MaxHeaders-100 || !strings.HasSuffix(out.String(), "789\r\n") {
		t.Errorf("capped block is %d octets, ends %q", out.Len(), out.String()[max(0, out.Len()-10):])
	}
}

func TestStatus(t *testing.T) {
	for in, want := range map[string]string{
		"550 5.7.1 denied":       "5.7.1",
		"550-5.2.2 full":         "5.0.0", // a continuation mark, not a code field
		"552 5.3.4 too big":      "5.3.4",
		"5.6.7 not sent: utf8":   "5.6.7",
		"550 denied":             "5.0.0",
		"550 4.2.2 said 4 but 5": "5.0.0",
		"":                       "5.0.0",
		"550 5.1.1000 bad":       "5.0.0",
		"4.4.7 expired: held 5d": "4.4.7",
	} {
		if got := Status(in); got != want {
			t.Errorf("Status(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSend(t *testing.T) {
	script, err := filepath.Abs("testdata/fake-sendmail")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	argv := []string{script, dir, "-i", "-f", "<>", "--"}
	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	if err := Send(context.Background(), argv, "-alice@x.example", []byte("the dsn")); err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(filepath.Join(dir, "argv.1"))
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != "-i\n-f\n<>\n--\n-alice@x.example\n" {
		t.Errorf("argv %q", a)
	}
	if d, err := os.ReadFile(filepath.Join(dir, "dsn.1")); err != nil || string(d) != "the dsn" {
		t.Errorf("stdin %q, %v", d, err)
	}
	t.Setenv("FAKE_SENDMAIL_EXIT", "75")
	err = Send(context.Background(), argv, "a@x.example", nil)
	if err == nil || !strings.Contains(err.Error(), "exit status 75") {
		t.Errorf("exit 75: %v", err)
	}
	if err := Send(context.Background(), []string{filepath.Join(dir, "missing")}, "a@x.example", nil); err == nil {
		t.Errorf("a missing command succeeded")
	}
}

func TestWriteDelayWarning(t *testing.T) {
	until := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	r := Report{ReportingMTA: "relay.isp.example", Host: "dialup.example", Sender: "alice@sender.example",
		Rcpts: []Recipient{{Addr: "ann@dialup.example"}, {Addr: "bob@dialup.example"}}, Delayed: true, RetryUntil: until}
	var buf bytes.Buffer
	if err := Write(&buf, r, strings.NewReader(original)); err != nil {
		t.Fatal(err)
	}
	p := parseDSN(t, buf.Bytes())
	if !strings.HasPrefix(p.top.Get("Subject"), "Delayed Mail") || !strings.Contains(p.text, "still being tried") {
		t.Errorf("subject %q, text:\n%s", p.top.Get("Subject"), p.text)
	}
	if len(p.perRcpt) != 2 {
		t.Fatalf("groups %v", p.perRcpt)
	}
	for _, g := range p.perRcpt {
		if g.Get("Action") != "delayed" || g.Get("Status") != "4.0.0" || g.Get("Will-Retry-Until") != until.Format(time.RFC1123Z) ||
			g.Get("Diagnostic-Code") != "" {
			t.Errorf("recipient %v", g)
		}
	}
}
