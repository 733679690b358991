package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tornCuts are the places a delivery killed mid-write leaves its
// fragment: the next delivery is appended right after it.
func tornCuts(frag string) map[string]string {
	i := func(sub string) int {
		k := strings.Index(frag, sub)
		if k < 0 {
			panic(sub)
		}
		return k
	}
	return map[string]string{
		"in the headers, inside a line": frag[:i("alice-secret-subject")+5],
		"in the headers, at a line end": frag[:i("Subject:")],
		"in the body, inside a line":    frag[:i("alice-secret-body")+5],
		"in the body, at a line end":    frag[:i("alice-secret-body")],
		"inside a RCPT line":            frag[:i("alice@")+3],
		"after the RCPT line":           frag[:i("DATA")],
		"inside the MAIL line":          frag[:12],
	}
}

// ambiguousCut is the one cut where the next delivery's envelope starts a
// line of alice's body: exactly what a message quoting an envelope looks
// like, so the whole entry, bob's message included, is quarantined.
const ambiguousCut = "in the body, at a line end"

// A torn append in an appended BSMTP file: the fragment is quarantined
// (never sent), the message appended after it goes to its own
// recipients only, once (or, where it cannot be told from a quotation,
// is quarantined with the fragment), and the messages around it are sent
// as usual, in this run and in none after.
func TestTornAppendFile(t *testing.T) {
	alice := tmsg{from: "a@x.example", to: []string{"alice@h.example"},
		body: "Received: by x\nSubject: alice-secret-subject\n\nalice-secret-body one\nalice-secret-body two\n"}
	bob := tmsg{from: "b@x.example", to: []string{"bob@h.example"}, body: "Subject: for bob\n\nbob's text\n"}
	before, after := mkmsgs(2)[0], mkmsgs(2)[1]
	for name, frag := range tornCuts(alice.bsmtp()) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "h.example")
			writeFile(t, p, before.bsmtp()+frag+bob.bsmtp()+after.bsmtp())
			ev := &events{}
			gs := drainAll(t, open(t, p, ev, false), all(Sent))
			var sent []string
			for _, g := range gs {
				if strings.Contains(g.body, "MAIL FROM") || strings.Contains(g.body, "RCPT TO") || strings.Contains(g.body, "alice-secret") {
					t.Errorf("sent to %s: %q holds an envelope line or alice's text", g.to, g.body)
				}
				sent = append(sent, g.to)
			}
			want := strings.Join(before.to, ",") + " bob@h.example " + strings.Join(after.to, ",")
			if name == ambiguousCut {
				want = strings.Join(before.to, ",") + " " + strings.Join(after.to, ",")
			}
			if strings.Join(sent, " ") != want {
				t.Errorf("sent to %q, want %q", sent, want)
			}
			q := 0
			for _, e := range ev.list {
				if e.Kind == "quarantine" {
					q++
					if !strings.Contains(e.Reason, "BSMTP envelope") {
						t.Errorf("quarantine reason %q does not name the envelope found", e.Reason)
					}
				}
			}
			if q != 1 {
				t.Errorf("%d quarantined, want the fragment alone: %v", q, ev.list)
			}
			copies := glob(t, filepath.Join(dir, ".etrnflush-h.example.quarantine", "*.bsmtp"))
			if len(copies) != 1 {
				t.Fatalf("quarantine copies %v", copies)
			}
			b, err := os.ReadFile(copies[0])
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(b), frag) {
				t.Errorf("the quarantine copy does not begin with the fragment: %q", b)
			}
			if name == ambiguousCut && !strings.Contains(string(b), bob.bsmtp()) {
				t.Errorf("the quarantine copy lacks bob's message: %q", b)
			}
			if got := yielded(t, open(t, p, nil, false)); got != nil {
				t.Errorf("the next run would send %q", got)
			}
		})
	}
}

// The same when the run is killed after the fragment was quarantined and
// bob's message sent, before the compaction: the journal keeps the
// fragment's boundary, so bob's message is neither sent again nor merged.
func TestTornAppendFileAfterCrash(t *testing.T) {
	alice := tmsg{from: "a@x.example", to: []string{"alice@h.example"}, body: "Subject: alice-secret-subject\n\nalice-secret-body\n"}
	bob := tmsg{from: "b@x.example", to: []string{"bob@h.example"}, body: "Subject: for bob\n\nbob's text\n"}
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	frag := alice.bsmtp()[:len(alice.bsmtp())-8]
	writeFile(t, p, frag+bob.bsmtp())
	s := open(t, p, nil, false)
	m, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(m.To, ",") != "bob@h.example" {
		t.Fatalf("first message for %v", m.To)
	}
	if err := s.Settle(m, all(Sent)(m), ""); err != nil {
		t.Fatal(err)
	}
	// Killed here, before Close.
	if got := yielded(t, open(t, p, nil, false)); got != nil {
		t.Errorf("after the crash the spool yields %q, want nothing", got)
	}
}

// In a one-message-per-file directory, Exim writes each file whole: a
// file with an envelope inside, or without a header block, is not Exim's
// and is quarantined whole; the other files are sent.
func TestTornAppendDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	alice := tmsg{from: "a@x.example", to: []string{"alice@h.example"}, body: "Subject: s\n\nalice-secret-body\n"}
	bob := tmsg{from: "b@x.example", to: []string{"bob@h.example"}, body: "Subject: for bob\n\nbob's text\n"}
	writeFile(t, filepath.Join(p, "q1"), alice.bsmtp()[:len(alice.bsmtp())-6]+bob.bsmtp())
	writeFile(t, filepath.Join(p, "q2"), tmsg{from: "c@x.example", to: []string{"c@h.example"}, body: "no header\n\nbody\n"}.bsmtp())
	writeFile(t, filepath.Join(p, "q3"), mkmsgs(1)[0].bsmtp())
	ev := &events{}
	gs := drainAll(t, open(t, p, ev, false), all(Sent))
	if len(gs) != 1 || gs[0].from != "s0@x.example" {
		t.Errorf("sent %v, want q3's message alone", gs)
	}
	var reasons []string
	for _, e := range ev.list {
		if e.Kind == "quarantine" {
			reasons = append(reasons, e.Reason)
		}
	}
	if len(reasons) != 2 || !strings.Contains(strings.Join(reasons, "|"), "BSMTP envelope") || !strings.Contains(strings.Join(reasons, "|"), "header") {
		t.Errorf("quarantine reasons %q", reasons)
	}
}

// TestQuotedEnvelope: a message whose body quotes a whole BSMTP envelope
// at the start of a line is quarantined whole: nothing of it is sent, least
// of all the quoted part to the quoted addresses.
func TestQuotedEnvelope(t *testing.T) {
	quoting := tmsg{from: "a@x.example", to: []string{"alice@h.example"},
		body: "Subject: how BSMTP looks\n\nA batch holds lines like these:\nMAIL FROM:<x@y.example>\nRCPT TO:<stranger@z.example>\nDATA\nSubject: quoted\n\nquoted text\n"}
	before, after := mkmsgs(2)[0], mkmsgs(2)[1]
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	writeFile(t, p, before.bsmtp()+quoting.bsmtp()+after.bsmtp())
	ev := &events{}
	var sent []string
	for _, g := range drainAll(t, open(t, p, ev, false), all(Sent)) {
		sent = append(sent, g.to)
	}
	if want := strings.Join(before.to, ",") + " " + strings.Join(after.to, ","); strings.Join(sent, " ") != want {
		t.Errorf("sent to %q, want %q", sent, want)
	}
	copies := glob(t, filepath.Join(dir, ".etrnflush-h.example.quarantine", "*.bsmtp"))
	if len(copies) != 1 {
		t.Fatalf("quarantine copies %v", copies)
	}
	if b, err := os.ReadFile(copies[0]); err != nil || string(b) != quoting.bsmtp() {
		t.Errorf("the quarantine copy is not the whole quoting message: %q %v", b, err)
	}
}
