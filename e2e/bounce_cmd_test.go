//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBounceCopies drives "etrnflush bounce" with the fake sendmail: a
// failed copy (left by a flush with bounce = false) stays while the
// command exits non-zero (exit 75), is returned in one DSN to its sender
// and removed once it exits 0; a copy from <> and a damaged quarantined
// one are refused (65) and kept; a complete quarantined one is returned
// with status 5.0.0 and its reason; an unknown id is 64; a copy another
// process holds is left alone (75).
func TestBounceCopies(t *testing.T) {
	script, err := filepath.Abs("bounce/testdata/fake-sendmail")
	if err != nil {
		t.Fatal(err)
	}
	rx, addr := startRefusingServer(t)
	rx.refuse.Store(true)
	dir, out := t.TempDir(), t.TempDir()
	const host = "h.example"
	sp := filepath.Join(dir, host)
	msg := "MAIL FROM:<a@x.example>\nRCPT TO:<ok@h.example>\nRCPT TO:<reject1@h.example>\nDATA\nSubject: t\nMessage-ID: <b1@x.example>\n\nbody\n.\n" +
		"MAIL FROM:<>\nRCPT TO:<reject2@h.example>\nDATA\nSubject: a bounce\n\nbody\n.\n"
	if err := os.WriteFile(sp, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, "helo = \"relay.test.example\"\nsendmail = [\""+script+"\", \""+out+"\", \"-f\", \"<>\", \"--\"]\n")
	if _, stderr, code := runEtrnflush(t, "-c", cfg, "--to", addr, "--tls", "none", host); code != exOK {
		t.Fatalf("flush: exit %d\n%s", code, stderr)
	}
	fl := failedJSON(t, cfg, "failed", host)
	var id, nullID string
	for _, c := range fl.Copies {
		if c.From == "" {
			nullID = c.ID
		} else {
			id = c.ID
		}
	}
	if len(fl.Copies) != 2 || id == "" || nullID == "" {
		t.Fatalf("failed folder: %+v", fl)
	}
	fd := filepath.Join(dir, ".etrnflush-"+host+".failed")
	dsns := func() []string {
		m, err := filepath.Glob(filepath.Join(out, "dsn.*"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Another process holds the copy: left alone.
	f, err := os.Open(filepath.Join(fd, id+".bsmtp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runEtrnflush(t, "-c", cfg, "bounce", host, id)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if code != exTempFail || !strings.Contains(stderr, "right now") || len(dsns()) != 0 {
		t.Errorf("bounce of a held copy: exit %d, %d DSNs, stderr %q", code, len(dsns()), stderr)
	}

	t.Setenv("FAKE_SENDMAIL_EXIT", "75")
	stdout, stderr, code := runEtrnflush(t, "-c", cfg, "bounce", host, id)
	if code != exTempFail || stdout != "" || !strings.Contains(stderr, "the copy stays") {
		t.Errorf("sendmail failing: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(fd, id+".bsmtp")); err != nil {
		t.Errorf("copy gone although sendmail failed: %v", err)
	}

	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	stdout, stderr, code = runEtrnflush(t, "-c", cfg, "bounce", host, id, "nosuchid", nullID)
	if code != exDataErr {
		t.Errorf("exit %d, want 65 (the null sender's copy) over 64 (the unknown id); stderr:\n%s", code, stderr)
	}
	if stdout != "host="+host+" id="+id+" bounced from=failed to=<a@x.example>\n" {
		t.Errorf("stdout %q", stdout)
	}
	if !strings.Contains(stderr, "id=nosuchid") || !strings.Contains(stderr, "id="+nullID+" not bounced") || !strings.Contains(stderr, "null sender") {
		t.Errorf("stderr %q", stderr)
	}
	ds := dsns()
	if len(ds) != 2 { // the failed attempt's and this one
		t.Fatalf("%d DSNs handed over, want 2", len(ds))
	}
	dsn, err := os.ReadFile(filepath.Join(out, "dsn.2"))
	if err != nil {
		t.Fatal(err)
	}
	argv, err := os.ReadFile(filepath.Join(out, "argv.2"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(argv), "--\na@x.example\n") {
		t.Errorf("sendmail argv %q", argv)
	}
	for _, want := range []string{"Final-Recipient: rfc822; reject1@h.example", "Action: failed", "Status: 5.1.1",
		"Diagnostic-Code: smtp; 550 5.1.1 no such user", "Message-ID: <b1@x.example>", "Reporting-MTA: dns; relay.test.example"} {
		if !strings.Contains(string(dsn), want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(string(dsn), "ok@h.example") {
		t.Errorf("DSN names the delivered recipient:\n%s", dsn)
	}
	fl = failedJSON(t, cfg, "failed", host)
	if len(fl.Copies) != 1 || fl.Copies[0].ID != nullID {
		t.Errorf("failed folder after bounce: %+v", fl.Copies)
	}

	// Quarantined copies: one complete message is returned, damage is not.
	qd := filepath.Join(dir, ".etrnflush-"+host+".quarantine")
	if err := os.Mkdir(qd, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(qd, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("q1.bsmtp", "MAIL FROM:<c@x.example>\nRCPT TO:<c1@h.example>\nDATA\nSubject: odd\n\nbody\n.\n")
	write("q1.why", "line 1: its header block is not RFC 5322 header lines\n")
	write("q2.bsmtp", "MAIL FROM:<d@x.example>\nRCPT TO:<d1@h.example>\nDATA\nSubject: torn\n")
	write("q2.why", "line 1: incomplete\n")
	stdout, stderr, code = runEtrnflush(t, "-c", cfg, "bounce", host, "q2", "q1")
	if code != exDataErr || stdout != "host="+host+" id=q1 bounced from=quarantine to=<c@x.example>\n" || !strings.Contains(stderr, "id=q2 not bounced") {
		t.Errorf("quarantine: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	dsn, err = os.ReadFile(filepath.Join(out, "dsn.3"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Final-Recipient: rfc822; c1@h.example", "Status: 5.0.0", "header block is not RFC 5322"} {
		if !bytes.Contains(dsn, []byte(want)) {
			t.Errorf("quarantine DSN lacks %q:\n%s", want, dsn)
		}
	}
	if names := dirNames(t, qd); strings.Join(names, " ") != "q2.bsmtp q2.why" {
		t.Errorf("quarantine folder holds %v", names)
	}
}

// TestEximBounceCommand: "etrnflush bounce" hands the DSN for a copy in
// the failed folder (a 550 from a real Exim sink, bounce = false) to a
// real Exim as the local MTA, which delivers it to the sender; the copy
// is then gone. Before that, with an Exim that cannot run (its
// configuration is missing), the command exits 75 and the copy stays.
func TestEximBounceCommand(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	w := r.newWriter(t)
	host := "file.rt.example"
	path := w.filePath(host)
	msg := "From: <alice@sender.example>\nSubject: bounce command\nMessage-ID: <bc-1@test.example>\n\nbody\n"
	if err := w.inject("alice@sender.example", []string{"ok1@" + host, "reject550q@" + host}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	sendmail := func(conf string) string {
		argv := append([]string{r.exim, "-C", conf, "-DSINK_DIR=" + s.dir}, r.userDefines()...)
		argv = append(argv, "-odi", "-oi", "-f", "<>", "--")
		q := make([]string, len(argv))
		for i, a := range argv {
			q[i] = fmt.Sprintf("%q", a)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	cfgFor := func(conf string) string {
		p := filepath.Join(t.TempDir(), "etrnflush.toml")
		text := fmt.Sprintf("log = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\nhelo = \"test.example\"\n[host.%q]\nspool = %q\n", host, path)
		text = strings.Replace(text, "[host.", "sendmail = "+sendmail(conf)+"\n[host.", 1)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := cfgFor(filepath.Join(r.dir, "sink.conf"))
	broken := cfgFor(filepath.Join(r.dir, "no-such.conf"))
	if _, stderr, code := runEtrnflush(t, "-c", good, "--to", s.addr(), "--tls", "none", host); code != 0 {
		t.Fatalf("flush: exit %d\n%s%s", code, stderr, eximLogs(s.dir))
	}
	s.waitDelivered(t, 1)
	fl := failedJSON(t, good, "failed", host)
	if len(fl.Copies) != 1 {
		t.Fatalf("failed folder: %+v", fl)
	}
	id := fl.Copies[0].ID
	copyPath := filepath.Join(filepath.Dir(path), ".etrnflush-"+host+".failed", id+".bsmtp")

	_, stderr, code := runEtrnflush(t, "-c", broken, "bounce", host, id)
	if code != exTempFail {
		t.Errorf("with a broken Exim: exit %d, want 75; stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat(copyPath); err != nil {
		t.Errorf("copy gone although Exim did not take the DSN: %v", err)
	}

	stdout, stderr, code := runEtrnflush(t, "-c", good, "bounce", host, id)
	if code != 0 || stdout != "host="+host+" id="+id+" bounced from=failed to=<alice@sender.example>\n" {
		t.Fatalf("bounce: exit %d\nstdout %q\nstderr:\n%s%s", code, stdout, stderr, eximLogs(s.dir))
	}
	if _, err := os.Stat(copyPath); !os.IsNotExist(err) {
		t.Errorf("copy still there after the DSN was handed over: %v", err)
	}
	var dsn []byte
	for deadline := time.Now().Add(60 * time.Second); dsn == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no DSN for alice in the sink's maildir after 60s%s", eximLogs(s.dir))
		}
		if queuedMessages(t, filepath.Join(s.dir, "spool")) > 0 {
			continue
		}
		for _, f := range maildirFiles(t, filepath.Join(s.dir, "maildir")) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte("Envelope-to: alice@sender.example\n")) {
				dsn = b
			}
		}
	}
	for _, want := range []string{"Return-path: <>", "report-type=delivery-status", "Final-Recipient: rfc822; reject550q@" + host,
		"Action: failed", "Remote-MTA: dns; 127.0.0.1", "Diagnostic-Code: smtp; 550 ", "recipient rejected (scripted)",
		"Message-ID: <bc-1@test.example>", "Subject: bounce command"} {
		if !bytes.Contains(dsn, []byte(want)) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if bytes.Contains(dsn, []byte("Final-Recipient: rfc822; ok1@")) {
		t.Errorf("DSN names the delivered recipient:\n%s", dsn)
	}
	// Its structure, read with the standard library's MIME readers.
	m, err := mail.ReadMessage(bytes.NewReader(dsn))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Errorf("DSN parts %q", types)
	}
}
