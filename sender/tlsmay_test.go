package sender

import (
	"context"
	"strings"
	"testing"
)

// TestTLSMayRefused: under TLSMay a 454 to STARTTLS leaves a clear-text
// session that still delivers, and TLSFailed says why, for the log; so
// does a server that offers no STARTTLS at all.
func TestTLSMayRefused(t *testing.T) {
	for _, c := range []struct {
		name, want string
		script     func(p *peer)
	}{
		{"454", "STARTTLS refused: 454", func(p *peer) {
			p.greet("STARTTLS")
			p.expect("STARTTLS")
			p.send("454 4.7.0 TLS not available due to temporary reason")
		}},
		{"not offered", "does not offer STARTTLS", func(p *peer) { p.greet() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, _ := runPeer(t, func(p *peer) {
				c.script(p)
				p.expect("MAIL FROM:<a@x>")
				p.send("250 ok")
				p.expect("RCPT TO:<r@y>")
				p.send("250 ok")
				p.expect("DATA")
				p.send("354 go")
				p.data(false)
				p.send("250 ok")
				p.expect("QUIT")
				p.send("221 bye")
			})
			o := testOptions(addr)
			o.TLS = TLSMay
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if s.TLS() || s.TLSFailed() == nil || !strings.Contains(s.TLSFailed().Error(), c.want) {
				t.Errorf("TLS %v, TLSFailed %v; want clear text and %q", s.TLS(), s.TLSFailed(), c.want)
			}
			res, err := sendAll(t, s, []*Message{msg("a@x", "hi\n", "r@y")})
			if err != nil || statuses(res[0]) != "s" {
				t.Fatalf("Send: %v %+v", err, res)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}
