package bsmtp

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	okLF   = "MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\nSubject: ok\n\nbody\n.\n"
	okLF2  = "MAIL FROM:<c@x.example>\nRCPT TO:<d@y.example>\nDATA\nSubject: ok2\n\n..dot\n.\n"
	okCRLF = "MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nSubject: ok\r\n\r\nbare\rCR\r\n.\r\n"
	msgOK  = "msg <a@x.example> [b@y.example] size=18"
	msgOK2 = "msg <c@x.example> [d@y.example] size=19"
)

func TestReader(t *testing.T) {
	long := strings.Repeat("x", 70000)
	// A line's first chunk is one full read buffer, so this line's CR is
	// its last octet and the LF comes in the next chunk.
	edge := strings.Repeat("x", bufSize-1)
	tests := []struct {
		name  string
		input string
		want  []string // describe() of each entry
		why   []string // a part of each damage reason, in order
	}{
		{name: "empty", input: ""},
		{name: "one LF message", input: okLF, want: []string{msgOK}},
		{name: "two LF messages", input: okLF + okLF2, want: []string{msgOK, msgOK2}},
		{name: "CRLF with bare CR in data", input: okCRLF, want: []string{"msg <a@x.example> [b@y.example] size=24 crlf"}},
		{name: "null sender, two recipients", input: "MAIL FROM:<>\nRCPT TO:<b@y>\nRCPT TO:<c@z>\nDATA\nx\n.\n",
			want: []string{"msg <> [b@y c@z] size=2"}},
		{name: "lower case and one space after the colon", input: "mail from: <a@x>\nrcpt to: <b@y>\ndata\nx\n.\n",
			want: []string{"msg <a@x> [b@y] size=2"}},
		{name: "empty data section", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n.\n", want: []string{"msg <a@x> [b@y] size=0"}},
		{name: "one dot removed per line", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n..\n...\n.x\nx.\n.\n",
			want: []string{"msg <a@x> [b@y] size=10"}},
		{name: "UTF-8 addresses", input: "MAIL FROM:<jörg@x>\nRCPT TO:<用户@y>\nDATA\nx\n.\n", want: []string{"msg <jörg@x> [用户@y] size=2"}},
		{name: "HELO from message_prefix is skipped", input: "HELO mx.example\n" + okLF + "helo mx.example\nNOOP\nRSET\n" + okLF2,
			want: []string{msgOK, msgOK2}},
		{name: "data keeps NUL, 8-bit and From lines", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nFrom me\n\x00\xff\n.\n",
			want: []string{"msg <a@x> [b@y] size=11"}},
		{name: "70000-octet data lines", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n" + long + "\n.." + long + "\n\xe9" + long + "\n.\n",
			want: []string{"msg <a@x> [b@y] size=210005"}},
		{name: "70000-octet CRLF data line", input: "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + long + "\r\n.\r\n",
			want: []string{"msg <a@x> [b@y] size=70002 crlf"}},

		{name: "CR of a CRLF at the end of the read buffer", input: "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + edge + "\r\n.\r\n",
			want: []string{"msg <a@x> [b@y] size=65537 crlf"}},
		{name: "CRLF split at the read buffer in an LF message", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n" + edge + "\r\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"ending in CRLF"}},
		{name: "missing final dot at EOF", input: okLF + "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nbody\n",
			want: []string{msgOK, "incomplete"}, why: []string{"end of input inside DATA"}},
		{name: "last line without EOL", input: okLF + "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nbody\n.",
			want: []string{msgOK, "incomplete"}, why: []string{"no line end"}},
		{name: "cut inside the envelope", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\n",
			want: []string{"incomplete"}, why: []string{"inside the envelope"}},
		{name: "cut inside a command line", input: okLF + "MAIL FROM:<a@",
			want: []string{msgOK, "incomplete"}, why: []string{"no line end"}},
		{name: "70000-octet data line cut at EOF", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n" + long,
			want: []string{"incomplete"}, why: []string{"no line end"}},
		{name: "trailing garbage after the last dot", input: okLF + "garbage\n",
			want: []string{msgOK, "incomplete"}, why: []string{"unknown line"}},
		{name: "trailing HELO without MAIL", input: okLF + "HELO mx.example\n",
			want: []string{msgOK, "incomplete"}, why: []string{"before MAIL"}},
		{name: "RCPT before MAIL", input: "RCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"RCPT before MAIL"}},
		{name: "DATA before MAIL", input: "DATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"DATA before MAIL"}},
		{name: "DATA without RCPT", input: "MAIL FROM:<a@x>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"DATA without RCPT"}},
		{name: "ESMTP parameter on MAIL", input: "MAIL FROM:<a@x> SIZE=10\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"ESMTP"}},
		{name: "ESMTP parameter on RCPT", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y> NOTIFY=NEVER\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"ESMTP"}},
		{name: "NUL in command", input: "MAIL FROM:<a@x>\x00\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"NUL"}},
		{name: "CR in address", input: "MAIL FROM:<a\r@x>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"control character"}},
		{name: "CR before > in address", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y\r>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"control character"}},
		{name: "DEL in address", input: "MAIL FROM:<a\x7f@x>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"control character"}},
		{name: "non-UTF-8 address", input: "MAIL FROM:<j\xf6rg@x>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"UTF-8"}},
		{name: "< inside address", input: "MAIL FROM:<a<b@x>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"in address"}},
		{name: "text after address", input: "MAIL FROM:<a@x>>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"text after"}},
		{name: "no angle brackets", input: "MAIL FROM:a@x\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"'<' missing"}},
		{name: "missing >", input: "MAIL FROM:<a@x\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"'>' missing"}},
		{name: "two spaces after the colon", input: "MAIL FROM:  <a@x>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"'<' missing"}},
		{name: "empty recipient", input: "MAIL FROM:<a@x>\nRCPT TO:<>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"empty recipient"}},
		{name: "address of 1000 octets", input: "MAIL FROM:<" + strings.Repeat("a", 998) + "@x>\nRCPT TO:<b@y>\nDATA\n.\n",
			want: []string{"msg <" + strings.Repeat("a", 998) + "@x> [b@y] size=0"}},
		{name: "address of 1001 octets", input: "MAIL FROM:<" + strings.Repeat("a", 999) + "@x>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"longer than 1000"}},
		{name: "70000-octet command line", input: "MAIL FROM:<" + long + ">\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"command line longer"}},
		{name: "second MAIL", input: "MAIL FROM:<a@x>\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"second MAIL"}},
		{name: "HELO inside a transaction", input: "MAIL FROM:<a@x>\nHELO mx\nRCPT TO:<b@y>\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"session command inside"}},
		{name: "HELO without a name", input: "HELO\n" + okLF + okLF2,
			want: []string{"damage", msgOK2}, why: []string{"unknown line"}},
		{name: "empty line between messages", input: okLF + "\n" + okLF + okLF2,
			want: []string{msgOK, "damage", msgOK2}, why: []string{"unknown line"}},
		{name: "unknown line between messages, then valid ones", input: okLF + "XYZZY\n" + okLF + okLF2 + okLF,
			want: []string{msgOK, "damage", msgOK2, msgOK}, why: []string{"XYZZY"}},
		{name: "a lone . between messages", input: okLF + ".\n" + okLF2,
			want: []string{msgOK, "damage", msgOK2}, why: []string{"unknown line"}},
		{name: ".CRLF in an LF message", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nx\n.\r\nrest\n.\n" + okLF,
			want: []string{"damage", "damage", msgOK}, why: []string{"ambiguous terminator", "unknown line"}},
		{name: "CRLF data line in an LF message", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nx\r\nrest\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"ending in CRLF"}},
		{name: ".LF in a CRLF message", input: "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\nrest\r\n.\r\n" + okLF,
			want: []string{"damage", "damage", msgOK}, why: []string{"ambiguous terminator", "unknown line"}},
		{name: "bare LF data line in a CRLF message", input: "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\n.\r\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"ending in LF"}},
		{name: "CRLF RCPT after LF MAIL", input: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\r\nDATA\nx\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"CRLF line end"}},
		{name: "damage runs to EOF", input: "XYZZY\n" + "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nx\n",
			want: []string{"incomplete"}, why: []string{"XYZZY"}},
		{name: "dot-like lines do not resync", input: "XYZZY\n..\n. \n.x\n.\n" + okLF,
			want: []string{"damage", msgOK}, why: []string{"XYZZY"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			input := []byte(tc.input)
			es := readAll(t, input)
			checkEntries(t, input, es)
			var got, whys []string
			for _, e := range es {
				got = append(got, describe(e))
				if e.Msg == nil {
					whys = append(whys, e.Damage)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("entries:\n got %q\nwant %q", got, tc.want)
			}
			if len(whys) != len(tc.why) {
				t.Fatalf("damage %q, want parts %q", whys, tc.why)
			}
			for i := range whys {
				if !strings.Contains(whys[i], tc.why[i]) {
					t.Errorf("damage %d: %q does not contain %q", i, whys[i], tc.why[i])
				}
			}
		})
	}
}

// TestReaderChunking feeds input one octet per Read, so every line crosses
// a buffer boundary, and still expects the same entries.
func TestReaderChunking(t *testing.T) {
	input := []byte("HELO mx\n" + okLF + okCRLF + "XYZZY\n" + okLF + okLF2 + "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r")
	want := readAll(t, input)
	r := NewReader(iotest.OneByteReader(bytes.NewReader(input)))
	for i := 0; ; i++ {
		e, err := r.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("%d entries, want %d", i, len(want))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if describe(e) != describe(want[i]) || e.Start != want[i].Start || e.End != want[i].End || e.Damage != want[i].Damage {
			t.Fatalf("entry %d: %+v, want %+v", i, e, want[i])
		}
	}
}

func TestNewReaderAt(t *testing.T) {
	head := okLF + okCRLF
	r := NewReaderAt(strings.NewReader(okLF2+"XYZZY\n"), int64(len(head)), 1+strings.Count(head, "\n"))
	e, err := r.Next()
	if err != nil || e.Msg == nil {
		t.Fatalf("Next: %+v, %v", e, err)
	}
	if e.Start != int64(len(head)) || e.End != int64(len(head+okLF2)) || e.Line != 15 {
		t.Errorf("entry [%d,%d) line %d, want [%d,%d) line 15", e.Start, e.End, e.Line, len(head), len(head+okLF2))
	}
	if e.Msg.DataStart != int64(len(head)+strings.Index(okLF2, "Subject")) {
		t.Errorf("DataStart %d is not relative to the base", e.Msg.DataStart)
	}
	e, err = r.Next()
	if err != nil || !e.Incomplete || e.Line != 22 || !strings.Contains(e.Damage, "line 22:") {
		t.Errorf("second Next: %+v, %v", e, err)
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestReadError checks that a failing input is an error, not damage, and
// that the error sticks.
func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	for _, input := range []string{"", okLF, okLF + "MAIL FROM:<a@x>\n", okLF + "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nx\n", okLF + "XYZZY\n"} {
		r := NewReader(&failingReader{data: []byte(input), err: boom})
		var err error
		for range 10 {
			if _, err = r.Next(); err != nil {
				break
			}
		}
		if !errors.Is(err, boom) {
			t.Errorf("input %q: error %v, want boom", input, err)
		}
		if _, err2 := r.Next(); !errors.Is(err2, boom) {
			t.Errorf("input %q: error not sticky: %v", input, err2)
		}
	}
}

// endless yields an LF transaction with a data section of n lines of
// 70000 octets each, generated on the fly.
type endless struct {
	head, line, tail []byte
	n                int
	buf              []byte
}

func (g *endless) Read(p []byte) (int, error) {
	if len(g.buf) == 0 {
		switch {
		case g.head != nil:
			g.buf, g.head = g.head, nil
		case g.n > 0:
			g.buf = g.line
			g.n--
		case g.tail != nil:
			g.buf, g.tail = g.tail, nil
		default:
			return 0, io.EOF
		}
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// TestMemoryFlat reads a 140 MB message and checks that the reader
// allocates almost nothing: it must not hold the data.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 140 MB")
	}
	const lines = 2000
	line := append(bytes.Repeat([]byte{'.'}, 70000), '\n')
	g := &endless{
		head: []byte("MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n"),
		line: line, n: lines,
		tail: []byte(".\n"),
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := NewReader(g)
	e, err := r.Next()
	runtime.ReadMemStats(&after)
	if err != nil || e.Msg == nil {
		t.Fatalf("Next: %+v, %v", e, err)
	}
	if want := int64(lines * (len(line) - 1)); e.Msg.Size != want {
		t.Errorf("Size %d, want %d", e.Msg.Size, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("reading %d MB allocated %d octets", lines*len(line)>>20, alloc)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("after the message: %v, want io.EOF", err)
	}
}
