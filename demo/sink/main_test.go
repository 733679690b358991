package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

// TestSinkScriptedAnswers: the demo shows etrnflush's outcomes only if the
// sink answers as its doc comment says.
func TestSinkScriptedAnswers(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	be := &backend{dir: dir, out: &out}
	addr := fakesmtp.Run(t, be.server("sink.test.example", nil))

	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.test.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@sender.example", nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rcpt string
		code int
	}{
		{"ok@demo.example", 0},
		{"Reject550-x@demo.example", 550},
		{"defer451-y@demo.example", 451},
	} {
		err := c.Rcpt(tc.rcpt, nil)
		var se *smtp.SMTPError
		switch {
		case tc.code == 0 && err != nil:
			t.Errorf("RCPT %s: %v, want accepted", tc.rcpt, err)
		case tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code):
			t.Errorf("RCPT %s: %v, want %d", tc.rcpt, err, tc.code)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	const body = "Subject: hi\r\n\r\n.leading dot\r\n"
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("final dot: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	got, err := os.ReadFile(filepath.Join(dir, "msg-0001.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != body {
		t.Errorf("stored %q, want %q", got, body)
	}
	be.mu.Lock() // the server goroutine writes out under this lock
	log := out.String()
	be.mu.Unlock()
	for _, want := range []string{
		"refused  to=<Reject550-x@demo.example> with 550",
		"deferred to=<defer451-y@demo.example> with 451",
		"accepted #1 from=<a@sender.example> to=<ok@demo.example> size=29 ",
		`subject="hi" -> msg-0001.eml`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("sink output lacks %q:\n%s", want, log)
		}
	}
}
