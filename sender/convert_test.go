package sender

import (
	"bytes"
	"strings"
	"testing"
)

// TestEightBitWithout8BITMIME: to a server that does not offer 8BITMIME,
// 8-bit content is converted to quoted-printable (RFC 6152 leaves no
// other way), or refused for good when eight_bit says so or when it
// cannot be converted; it is never sent raw. 7-bit content passes as it
// is, and the messages around a refused one still go.
func TestEightBitWithout8BITMIME(t *testing.T) {
	eight := "Subject: caf\xc3\xa9?\nContent-Type: text/plain; charset=utf-8\n\nCaf\xc3\xa9 cr\xc3\xa8me\n"
	body8 := "Subject: hi\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nCaf\xc3\xa9 cr\xc3\xa8me\n"
	plain := "Subject: hi\n\nplain\n"
	mk := func(from, content string) *Message {
		m := msg(from, content, "r@y")
		m.EightBit = strings.ContainsFunc(content, func(r rune) bool { return r >= 0x80 })
		return m
	}
	for _, m := range []struct {
		name string
		exts []string
	}{
		{"chunking", []string{"PIPELINING", "CHUNKING", "SIZE 100000000"}},
		{"pipelining", []string{"PIPELINING", "SIZE 100000000"}},
		{"lock-step", []string{"SIZE 100000000"}},
	} {
		t.Run(m.name, func(t *testing.T) {
			for _, policy := range []EightBitPolicy{EightBitConvert, EightBitRefuse} {
				sp := &strictPeer{exts: m.exts}
				res := sendVia(t, sp, func(o *Options) { o.EightBit = policy },
					[]*Message{mk("a@x", body8), mk("b@x", eight), mk("c@x", plain)})
				// b's header is 8-bit: it can never be made 7-bit.
				if st := statuses(res[1]); st != "f" || !res[1].Local || !strings.HasPrefix(res[1].Reply.Text, "5.6.3") {
					t.Errorf("policy %d, 8-bit header: %s %+v", policy, st, res[1])
				}
				if st := statuses(res[2]); st != "s" || res[2].Converted {
					t.Errorf("policy %d, 7-bit: %s %+v", policy, st, res[2])
				}
				sp.mu.Lock()
				data := sp.data
				sp.mu.Unlock()
				for i, d := range data {
					if bytes.ContainsFunc(d, func(r rune) bool { return r >= 0x80 || r == 0xfffd }) {
						t.Errorf("policy %d: message %d reached the server with 8-bit octets:\n%q", policy, i, d)
					}
				}
				if policy == EightBitRefuse {
					if st := statuses(res[0]); st != "f" || !res[0].Local {
						t.Errorf("refuse: %s %+v", st, res[0])
					}
					if len(data) != 1 {
						t.Errorf("refuse: the server got %d messages, want 1", len(data))
					}
					continue
				}
				if st := statuses(res[0]); st != "s" || !res[0].Converted {
					t.Errorf("convert: %s %+v", st, res[0])
				}
				if len(data) != 2 {
					t.Fatalf("convert: the server got %d messages, want 2", len(data))
				}
				got := string(data[0])
				if !strings.Contains(got, "Content-Transfer-Encoding: quoted-printable\r\n") || !strings.Contains(got, "Caf=C3=A9 cr=C3=A8me\r\n") {
					t.Errorf("convert: the server got\n%q", got)
				}
				if !bytes.Equal(data[1], []byte(strings.ReplaceAll(plain, "\n", "\r\n"))) {
					t.Errorf("7-bit content changed: %q", data[1])
				}
			}
		})
	}
}
