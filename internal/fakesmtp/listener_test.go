package fakesmtp

import "testing"

func TestCapFilterRewrite(t *testing.T) {
	c := &capFilter{hide: []string{"PIPELINING", "CHUNKING"}}
	in := [][]byte{[]byte("250-sink Hello\r\n"), []byte("250-8BITMIME\r\n"), []byte("250-PIPELINING\r\n"), []byte("250 CHUNKING\r\n")}
	if got, want := string(c.rewrite(in)), "250-sink Hello\r\n250 8BITMIME\r\n"; got != want {
		t.Errorf("rewrite: %q, want %q", got, want)
	}
}
