package flush

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
	"reflect"
	"strings"
	"testing"
	"time"

	"etrnflush/bounce"
	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

// fakeSendmail is the argv of bounce/testdata/fake-sendmail writing into
// dir, followed by the default's options.
func fakeSendmail(t *testing.T, dir string) []string {
	t.Helper()
	script, err := filepath.Abs("../bounce/testdata/fake-sendmail")
	if err != nil {
		t.Fatal(err)
	}
	return []string{script, dir, "-i", "-f", "<>", "--"}
}

func flushBouncing(t *testing.T, path, addr string, sendmail []string) (Summary, string) {
	t.Helper()
	var logBuf bytes.Buffer
	cfg := Config{
		Host:     "h.example",
		Spool:    spool.Options{Path: path},
		Sender:   sender.Options{Helo: "relay.test.example", TLS: sender.TLSNone, Timeout: 5 * time.Second, DataTimeout: 5 * time.Second},
		Log:      logging.NewWriter(&logBuf, true),
		Sendmail: sendmail,
	}
	if addr != "" {
		cfg.Dests = []string{addr}
	}
	sum, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("flush: %v\n%s", err, logBuf.String())
	}
	return sum, logBuf.String()
}

// dsnFiles lists the DSNs the fake sendmail was given.
func dsnFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "dsn.*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBounceThroughSendmail: a 550'd recipient of a two-recipient message
// is returned to its sender in one DSN; while the command fails the copy
// stays and is tried again on the next run, which may find nothing else to
// do; a message from the null sender is never bounced.
func TestBounceThroughSendmail(t *testing.T) {
	be := &faultSink{faults: map[string]string{
		"RCPT a1@h.example": "550",
		"RCPT n1@h.example": "550",
	}}
	addr := startFaultSink(t, be)
	path := filepath.Join(t.TempDir(), "h.example")
	writeSpool(t, path, []testMsg{
		{"a@s.example", []string{"a1@h.example", "a2@h.example"}},
		{"", []string{"n1@h.example"}},
		{"c@s.example", []string{"c1@h.example"}},
	}, -1)
	out := t.TempDir()
	sm := fakeSendmail(t, out)

	t.Setenv("FAKE_SENDMAIL_EXIT", "1")
	sum, logs := flushBouncing(t, path, addr, sm)
	if sum.Sent != 1 || sum.Failed != 1 || sum.Partial != 1 || sum.Bounced != 0 || sum.BounceFailed != 1 || !sum.Left() {
		t.Errorf("run 1: summary %+v\n%s", sum, logs)
	}
	if !strings.Contains(logs, "from=<a@s.example> to=<a1@h.example> status=bounce_failed reason=") || !strings.Contains(logs, " bounced=0 bounce_failed=1\n") {
		t.Errorf("run 1: no bounce_failed line:\n%s", logs)
	}
	if got, _ := failedIn(t, path); !reflect.DeepEqual(got, sorted(">n1@h.example", "a@s.example>a1@h.example")) {
		t.Errorf("run 1: failed folder %q", got)
	}

	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	sum, logs = flushBouncing(t, path, "", sm) // nothing left to send: no destination needed
	if sum.Bounced != 1 || sum.BounceFailed != 0 || sum.Left() {
		t.Errorf("run 2: summary %+v\n%s", sum, logs)
	}
	if !strings.Contains(logs, "from=<a@s.example> to=<a1@h.example> status=bounced") || !strings.Contains(logs, " bounced=1 bounce_failed=0\n") {
		t.Errorf("run 2: no bounced line:\n%s", logs)
	}
	if got, _ := failedIn(t, path); !reflect.DeepEqual(got, []string{">n1@h.example"}) {
		t.Errorf("run 2: failed folder %q, want only the null sender's copy", got)
	}
	if n := len(dsnFiles(t, out)); n != 2 {
		t.Fatalf("%d calls of sendmail, want 2 (one refused, one taken)", n)
	}
	argv, err := os.ReadFile(filepath.Join(out, "argv.2"))
	if err != nil {
		t.Fatal(err)
	}
	if string(argv) != "-i\n-f\n<>\n--\na@s.example\n" {
		t.Errorf("sendmail arguments %q", argv)
	}
	raw, err := os.ReadFile(filepath.Join(out, "dsn.2"))
	if err != nil {
		t.Fatal(err)
	}
	checkDSN(t, raw)

	sum, logs = flushBouncing(t, path, "", sm)
	if n := len(dsnFiles(t, out)); n != 2 || sum.Bounced != 0 {
		t.Errorf("run 3: %d calls of sendmail, summary %+v\n%s", n, sum, logs)
	}
}

// parseDSNFlush returns the field groups of a DSN's
// message/delivery-status part: per message first, then per recipient.
func parseDSNFlush(t *testing.T, raw []byte) []textproto.MIMEHeader {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no message/delivery-status part: %v", err)
		}
		if p.Header.Get("Content-Type") != "message/delivery-status" {
			continue
		}
		var out []textproto.MIMEHeader
		tr := textproto.NewReader(bufio.NewReader(p))
		for {
			h, err := tr.ReadMIMEHeader()
			if len(h) > 0 {
				out = append(out, h)
			}
			if err != nil {
				return out
			}
		}
	}
}

func checkDSN(t *testing.T, raw []byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("To") != "<a@s.example>" {
		t.Errorf("DSN To %q", m.Header.Get("To"))
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var parts []string
	var status []textproto.MIMEHeader
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
		ct := p.Header.Get("Content-Type")
		parts = append(parts, ct)
		switch ct {
		case "message/delivery-status":
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					status = append(status, h)
				}
				if err != nil {
					break
				}
			}
		case "text/rfc822-headers":
			if string(body) != "Subject: message a@s.example\r\n" {
				t.Errorf("original headers %q", body)
			}
		}
	}
	if len(parts) != 3 || len(status) != 2 {
		t.Fatalf("parts %q, status groups %v", parts, status)
	}
	if status[0].Get("Reporting-MTA") != "dns; relay.test.example" {
		t.Errorf("per-message fields %v", status[0])
	}
	r := status[1]
	if r.Get("Final-Recipient") != "rfc822; a1@h.example" || r.Get("Action") != "failed" || r.Get("Status") != "5.7.1" ||
		r.Get("Diagnostic-Code") != "smtp; 550 5.7.1 scripted refusal for RCPT a1@h.example" ||
		r.Get("Remote-MTA") != "dns; 127.0.0.1" {
		t.Errorf("recipient fields %v", r)
	}
}

// TestBounceOff: without a sendmail command (bounce = false) failed copies
// stay where they are and nothing is run.
func TestBounceOff(t *testing.T) {
	be := &faultSink{faults: map[string]string{"RCPT a1@h.example": "550"}}
	addr := startFaultSink(t, be)
	path := filepath.Join(t.TempDir(), "h.example")
	writeSpool(t, path, []testMsg{{"a@s.example", []string{"a1@h.example"}}}, -1)
	sum, logs := flushBouncing(t, path, addr, nil)
	if sum.Failed != 1 || sum.Bounced != 0 || sum.BounceFailed != 0 || sum.Left() || strings.Contains(logs, "bounce") {
		t.Errorf("summary %+v\n%s", sum, logs)
	}
	if got, _ := failedIn(t, path); !reflect.DeepEqual(got, []string{"a@s.example>a1@h.example"}) {
		t.Errorf("failed folder %q", got)
	}
}

func TestRcptReasons(t *testing.T) {
	to := []string{"a@h.example", "b@h.example"}
	got := rcptReasons(to, "<a@h.example> 550 5.1.1 no; such user; <b@h.example> 552 5.2.2 full")
	want := []bounce.Recipient{{Addr: "a@h.example", Reply: "550 5.1.1 no; such user"}, {Addr: "b@h.example", Reply: "552 5.2.2 full"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("per recipient: %+v", got)
	}
	got = rcptReasons(to, "554 5.0.0 all refused")
	if got[0].Reply != "554 5.0.0 all refused" || got[1].Reply != "554 5.0.0 all refused" {
		t.Errorf("one reply for all: %+v", got)
	}
}

func TestReceivedDate(t *testing.T) {
	c := "Received: from x by relay.example with esmtp id 1;\n\tTue, 01 Dec 2026 10:00:00 +0100\n" +
		"Received: from y by x; Mon, 30 Nov 2026 10:00:00 +0000\nSubject: s\n\nbody\n"
	if got := receivedDate(strings.NewReader(c)); !got.Equal(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("newest Received: %v", got)
	}
	if got := receivedDate(strings.NewReader("Subject: s\n\nbody\n")); !got.IsZero() {
		t.Errorf("no Received: %v", got)
	}
}

func TestRemoteTag(t *testing.T) {
	failed := sender.Result{Rcpts: []sender.Status{sender.Sent, sender.Failed}}
	tag := remoteTag("mx.h.example", failed)
	if tag != " [remote-mta: mx.h.example]" {
		t.Errorf("tag %q", tag)
	}
	for _, tc := range []struct {
		why, rest, remote string
	}{
		{"550 5.1.1 no" + tag, "550 5.1.1 no", "mx.h.example"},
		{"550 5.1.1 no", "550 5.1.1 no", ""},
		{"550 odd [remote-mta: a b]", "550 odd [remote-mta: a b]", ""},
		{"<a@h> 550 x; <b@h> 550 y" + tag, "<a@h> 550 x; <b@h> 550 y", "mx.h.example"},
	} {
		rest, remote := cutRemoteTag(tc.why)
		if rest != tc.rest || remote != tc.remote {
			t.Errorf("cutRemoteTag(%q) = %q, %q", tc.why, rest, remote)
		}
	}
	if remoteTag("mx.h.example", sender.Result{Rcpts: []sender.Status{sender.Failed}, Local: true}) != "" {
		t.Errorf("a local refusal named a server")
	}
	if remoteTag("mx.h.example", sender.Result{Rcpts: []sender.Status{sender.Sent}}) != "" {
		t.Errorf("a tag without a failure")
	}
}
