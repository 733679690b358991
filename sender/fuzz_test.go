package sender

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// normalize is the encoder's contract written the slow, obvious way: every
// LF not preceded by CR becomes CRLF, and a last line without a line end
// gets one.
func normalize(in []byte) []byte {
	var out []byte
	for i, c := range in {
		if c == '\n' && (i == 0 || in[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	if len(in) > 0 && in[len(in)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// stuffRef doubles the dot that starts any line (RFC 5321 4.5.2).
func stuffRef(plain []byte) []byte {
	var out []byte
	for i, c := range plain {
		if c == '.' && (i == 0 || plain[i-1] == '\n') {
			out = append(out, '.')
		}
		out = append(out, c)
	}
	return out
}

func encodeSplit(in []byte, stuff bool, split int) []byte {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	e := &encoder{w: bw, stuff: stuff}
	if split < 0 || split > len(in) {
		split = len(in)
	}
	for _, p := range [][]byte{in[:split], in[split:]} {
		if _, err := e.Write(p); err != nil {
			panic(err) // a bytes.Buffer does not fail
		}
	}
	if err := e.finish(); err != nil {
		panic(err)
	}
	if err := bw.Flush(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// FuzzEncoder checks the body encoder against the reference above for any
// content and any split of it across writes: CRLF line ends only, every
// other octet kept, exactly the dots RFC 5321 asks for, and wireSize equal
// to what is sent.
func FuzzEncoder(f *testing.F) {
	f.Add([]byte("a\nb\n"), 1)
	f.Add([]byte(".\n..\n.a"), 2)
	f.Add([]byte("x\r\n.y\r"), 3)
	f.Add([]byte("a\rb\r.c\n\x00\xff\n"), 0)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		plain := encodeSplit(in, false, split)
		if want := normalize(in); !bytes.Equal(plain, want) {
			t.Fatalf("plain(%q) = %q, want %q", in, plain, want)
		}
		stuffed := encodeSplit(in, true, split)
		if want := stuffRef(plain); !bytes.Equal(stuffed, want) {
			t.Fatalf("stuffed(%q) = %q, want %q", in, stuffed, want)
		}
		for i, c := range stuffed {
			if c == '\n' && (i == 0 || stuffed[i-1] != '\r') {
				t.Fatalf("bare LF at %d in %q", i, stuffed)
			}
		}
		if bytes.HasPrefix(stuffed, []byte(".\r\n")) || bytes.Contains(stuffed, []byte("\r\n.\r\n")) {
			t.Fatalf("content %q would end DATA early: %q", in, stuffed)
		}
		n, err := wireSize(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(in)), nil }, nil)
		if err != nil || n != int64(len(plain)) {
			t.Fatalf("wireSize = %d, %v; want %d", n, err, len(plain))
		}
	})
}

// FuzzReadReply feeds arbitrary server output to the reply reader: it
// must never panic, and what it accepts must be a well-formed reply whose
// report text is safe for a log line.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte("250 2.0.0 ok\r\n"))
	f.Add([]byte("250-a\r\n250-SIZE 100\r\n250 c\r\n"))
	f.Add([]byte("354\n"))
	f.Add([]byte("550 x\x1by\xff\r\n"))
	f.Add([]byte("250-a\r\n251 b\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), maxReplyLine)
		for {
			r, err := readReply(br)
			if err != nil {
				return
			}
			if r.code < 200 || r.code > 599 {
				t.Fatalf("accepted code %d from %q", r.code, in)
			}
			if len(r.lines) == 0 || len(r.lines) > maxReplyLines {
				t.Fatalf("accepted %d lines", len(r.lines))
			}
			rep := r.Reply()
			if len(rep.Text) > 300 || strings.IndexFunc(rep.Text, func(c rune) bool { return c < 0x20 || c > 0x7e }) >= 0 {
				t.Fatalf("report text %q is not safe for a log line", rep.Text)
			}
		}
	})
}
