package sender

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func encode(t *testing.T, in string, stuff bool, chunk int) string {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	e := &encoder{w: bw, stuff: stuff}
	for p := []byte(in); len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := e.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := e.finish(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestEncoder(t *testing.T) {
	long := strings.Repeat("y", 70000)
	cases := []struct {
		name, in, stuffed, plain string
	}{
		{"empty", "", "", ""},
		{"lf", "a\nb\n", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"crlf kept", "a\r\nb\r\n", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"no final newline", "a\nb", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"leading dot", ".a\n.\n..\n", "..a\r\n..\r\n...\r\n", ".a\r\n.\r\n..\r\n"},
		{"dot only without newline", ".", "..\r\n", ".\r\n"},
		{"dot mid line untouched", "a.b\n a\n", "a.b\r\n a\r\n", "a.b\r\n a\r\n"},
		{"dot after crlf", "x\r\n.y", "x\r\n..y\r\n", "x\r\n.y\r\n"},
		{"bare cr kept", "a\rb\r.c\n", "a\rb\r.c\r\n", "a\rb\r.c\r\n"},
		{"trailing bare cr kept", "a\r", "a\r\r\n", "a\r\r\n"},
		{"nul and 8bit", "\x00\xff\xfe\n", "\x00\xff\xfe\r\n", "\x00\xff\xfe\r\n"},
		{"empty lines", "\n\n", "\r\n\r\n", "\r\n\r\n"},
		{"long line", long + "\n." + long, long + "\r\n.." + long + "\r\n", long + "\r\n." + long + "\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Chunk sizes that split CRLF pairs and dot lines across writes.
			for _, chunk := range []int{1, 2, 3, 7, 1 << 20} {
				if got := encode(t, c.in, true, chunk); got != c.stuffed {
					t.Errorf("chunk %d stuffed: got %q, want %q", chunk, trunc(got), trunc(c.stuffed))
				}
				if got := encode(t, c.in, false, chunk); got != c.plain {
					t.Errorf("chunk %d plain: got %q, want %q", chunk, trunc(got), trunc(c.plain))
				}
			}
			n, err := wireSize(func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(c.in)), nil }, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(c.plain)) {
				t.Errorf("wireSize = %d, want %d", n, len(c.plain))
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:40] + "..." + s[len(s)-40:]
	}
	return s
}

type errCloser struct {
	io.Reader
	err error
}

func (e errCloser) Close() error { return e.err }

func TestWireSizeErrors(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name string
		open func() (io.ReadCloser, error)
	}{
		{"open", func() (io.ReadCloser, error) { return nil, boom }},
		{"read", func() (io.ReadCloser, error) { return io.NopCloser(&failReader{n: 10, err: boom}), nil }},
		{"close", func() (io.ReadCloser, error) { return errCloser{strings.NewReader("x"), boom}, nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := wireSize(c.open, nil); !errors.Is(err, boom) {
				t.Errorf("err = %v, want boom", err)
			}
		})
	}
}

// failReader yields n octets of 'a' then err.
type failReader struct {
	n   int
	err error
}

func (f *failReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'a'
	}
	f.n -= k
	return k, nil
}

func TestSanitize(t *testing.T) {
	cases := []struct{ in, want string }{
		{"250 ok", "250 ok"},
		{"a\r\nb\x00c\x7f\xc3\xa9", "a??b?c???"},
		{strings.Repeat("z", 400), strings.Repeat("z", 300)},
		{"\t~", "?~"},
	}
	for _, c := range cases {
		if got := Sanitize(c.in); got != c.want {
			t.Errorf("Sanitize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestReadReply(t *testing.T) {
	cases := []struct {
		name, in string
		code     int
		text     string
		wantErr  bool
	}{
		{"single", "250 2.0.0 ok\r\n", 250, "2.0.0 ok", false},
		{"multi", "250-a\r\n250-b\r\n250 c\r\n", 250, "a b c", false},
		{"bare lf", "220 hi\n", 220, "hi", false},
		{"code only", "354\r\n", 354, "", false},
		{"control chars sanitised", "550 x\x1by\r\n", 550, "x?y", false},
		{"code changes", "250-a\r\n251 b\r\n", 0, "", true},
		{"malformed", "25x ok\r\n", 0, "", true},
		{"bad separator", "250+ok\r\n", 0, "", true},
		{"code out of range", "150 ok\r\n", 0, "", true},
		{"short", "25\r\n", 0, "", true},
		{"eof mid reply", "250-a\r\n", 0, "", true},
		{"too long", "250 " + strings.Repeat("x", maxReplyLine) + "\r\n", 0, "", true},
		{"too many lines", strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 y\r\n", 0, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := readReply(bufio.NewReaderSize(strings.NewReader(c.in), maxReplyLine))
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if err != nil {
				return
			}
			if got := r.Reply(); got.Code != c.code || got.Text != c.text {
				t.Errorf("got %+v, want %d %q", got, c.code, c.text)
			}
		})
	}
}

func TestTooMany(t *testing.T) {
	cases := []struct {
		r    reply
		want bool
	}{
		{reply{452, []string{"4.5.3 Too many recipients"}}, true},
		{reply{452, []string{"Too many recipients"}}, true},
		{reply{452, []string{"4.2.2 Mailbox full"}}, false},
		{reply{552, []string{"5.5.3 Too many recipients"}}, true},
		{reply{552, []string{"5.2.2 Mailbox full"}}, false},
		{reply{450, []string{"4.5.3 x"}}, false},
	}
	for _, c := range cases {
		if got := tooMany(c.r); got != c.want {
			t.Errorf("tooMany(%v) = %v, want %v", c.r, got, c.want)
		}
	}
}
