package logging

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	cases := map[string]string{
		"250 OK":                      `"250 OK"`,
		"line\r\nforged: status=sent": `"line??forged: status=sent"`,
		"tab\there \x7f":              `"tab?here ?"`,
		"caf\u00e9":                   `"caf\u00e9"`,
		strings.Repeat("x", 400):      `"` + strings.Repeat("x", MaxText) + `..."`,
		`say "hi" \ bye`:              `"say \"hi\" \\ bye"`,
	}
	for in, want := range cases {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	// Every octet, alone and in plain text, as QuoteToASCII has it.
	for c := 0; c < 256; c++ {
		in := "a" + string(rune(c)) + "b"
		if c >= 0x80 {
			in = "a" + string([]byte{byte(c)}) + "b"
		}
		r := []rune(in)
		for i := range r {
			if r[i] < 0x20 || r[i] == 0x7f {
				r[i] = '?'
			}
		}
		if got, want := Quote(in), strconv.QuoteToASCII(string(r)); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
		if got, want := Token(in), escapeSlow(in); got != want {
			t.Errorf("Token(%q) = %s, want %s", in, got, want)
		}
	}
}

// escapeSlow is escape without its shortcut for plain text.
func escapeSlow(a string) string {
	var b strings.Builder
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c >= 0x7f || c == '\\' || c == '"' {
			fmt.Fprintf(&b, "\\x%02x", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
