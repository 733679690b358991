package sender

import (
	"bufio"
	"strings"
	"testing"
)

// TestReplyBuffered: the reader skips the read deadline only when a whole
// reply, last line included, is already buffered; anything short of
// that would read with a stale deadline.
func TestReplyBuffered(t *testing.T) {
	cases := map[string]bool{
		"":                             false,
		"250 ok":                       false, // no line end yet
		"250 ok\r\n":                   true,
		"250\r\n":                      true,
		"250-first\r\n":                false,
		"250-first\r\n250-second\r\n":  false,
		"250-first\r\n250 last\r\n":    true,
		"250-first\r\n250 la":          false,
		"250 ok\r\n354 go":             true,
		"x\r\n":                        true, // readReply fails on it at once
		"250-a\r\n250-b\r\n250 c\r\n2": true,
	}
	for in, want := range cases {
		br := bufio.NewReaderSize(strings.NewReader(in), 64)
		if in != "" {
			if _, err := br.Peek(len(in)); err != nil {
				t.Fatal(err)
			}
		}
		if got := replyBuffered(br); got != want {
			t.Errorf("replyBuffered(%q) = %v, want %v", in, got, want)
		}
	}
}
