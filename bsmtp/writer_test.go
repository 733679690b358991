package bsmtp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// refUnstuff is the obvious unstuffer: split into lines, drop one leading
// dot from each.
func refUnstuff(in []byte) []byte {
	var out []byte
	for len(in) > 0 {
		i := bytes.IndexByte(in, '\n') + 1
		if i == 0 {
			i = len(in)
		}
		l := in[:i]
		in = in[i:]
		if l[0] == '.' {
			l = l[1:]
		}
		out = append(out, l...)
	}
	return out
}

// readSmall reads r with a short buffer, so that lines cross Read calls.
func readSmall(r io.Reader, size int) ([]byte, error) {
	var out []byte
	p := make([]byte, size)
	for {
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func TestUnstuff(t *testing.T) {
	long := strings.Repeat(".", 70000)
	tests := []struct{ in, want string }{
		{"", ""},
		{"abc\n", "abc\n"},
		{".\n", "\n"},
		{"..\n", ".\n"},
		{"...x\n.y\n\n..\r\n", "..x\ny\n\n.\r\n"},
		{"a.\n.b.\n", "a.\nb.\n"},
		{"\x00.\n.\x00\n\xff\n", "\x00.\n\x00\n\xff\n"},
		{"no line end", "no line end"},
		{".", ""},
		{"." + long + "\n." + long, long + "\n" + long},
	}
	for _, tc := range tests {
		for _, size := range []int{1, 2, 3, 7, 4096, 1 << 17} {
			got, err := readSmall(Unstuff(strings.NewReader(tc.in)), size)
			if err != nil || string(got) != tc.want {
				t.Errorf("Unstuff(%.20q) with %d-octet reads = %.20q, %v; want %.20q", tc.in, size, got, err, tc.want)
			}
		}
		got, err := io.ReadAll(Unstuff(iotest.OneByteReader(strings.NewReader(tc.in))))
		if err != nil || string(got) != tc.want {
			t.Errorf("Unstuff(%.20q) one octet at a time = %.20q, %v", tc.in, got, err)
		}
		if ref := refUnstuff([]byte(tc.in)); string(ref) != tc.want {
			t.Errorf("reference disagrees with the table on %.20q", tc.in)
		}
	}
	if err := iotest.TestReader(Unstuff(strings.NewReader("..a\nb\n.c\n")), []byte(".a\nb\nc\n")); err != nil {
		t.Error(err)
	}
}

func TestStuff(t *testing.T) {
	edge := strings.Repeat("x", bufSize-1) // the CR ends the first read buffer
	tests := []struct {
		in, want string
		crlf     bool
		err      string
	}{
		{in: "", want: ""},
		{in: "a\n.\n..b\n\n", want: "a\n..\n...b\n\n"},
		{in: ".x\r\n\r\n", want: "..x\r\n\r\n", crlf: true},
		{in: "bare\rCR\r\n", want: "bare\rCR\r\n", crlf: true},
		{in: "mid\rCR\n", want: "mid\rCR\n"},
		{in: edge + "\r\n", want: edge + "\r\n", crlf: true},
		{in: edge + "\r\n", err: "ends in CRLF"},
		{in: "a\nno end", err: "no line end"},
		{in: "a\r\n", err: "ends in CRLF"},
		{in: "a\n", crlf: true, err: "bare LF"},
		{in: "a\r\nb\n", crlf: true, err: "line 2 ends in a bare LF"},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		err := Stuff(&buf, strings.NewReader(tc.in), tc.crlf)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errData) {
				t.Errorf("Stuff(%q, %v): error %v, want %q", tc.in, tc.crlf, err, tc.err)
			}
		case err != nil || buf.String() != tc.want:
			t.Errorf("Stuff(%q, %v) = %q, %v; want %q", tc.in, tc.crlf, buf.String(), err, tc.want)
		default:
			back, err := io.ReadAll(Unstuff(&buf))
			if err != nil || string(back) != tc.in {
				t.Errorf("Unstuff(Stuff(%q)) = %q, %v", tc.in, back, err)
			}
		}
	}
}

func TestWriter(t *testing.T) {
	env := Envelope{From: "a@x", To: []string{"b@y", "c@z"}}
	tests := []struct {
		name    string
		env     Envelope
		data    string
		crlf    bool
		stuffed bool
		want    string
		err     string
		sticky  bool // the failure leaves a partial transaction
	}{
		{name: "LF", env: env, data: "..x\n", want: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nRCPT TO:<c@z>\nDATA\n...x\n.\n"},
		{name: "LF stuffed", env: env, data: "..x\n", stuffed: true, want: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nRCPT TO:<c@z>\nDATA\n..x\n.\n"},
		{name: "CRLF null sender", env: Envelope{To: []string{"b@y"}}, data: "x\r\n", crlf: true,
			want: "MAIL FROM:<>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\n"},
		{name: "empty data", env: env, data: "", want: "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nRCPT TO:<c@z>\nDATA\n.\n"},
		{name: "no recipients", env: Envelope{From: "a@x"}, err: "no recipients"},
		{name: "empty recipient", env: Envelope{From: "a@x", To: []string{""}}, err: "empty address"},
		{name: "CR in sender", env: Envelope{From: "a\r@x", To: []string{"b@y"}}, err: "control character"},
		{name: "LF in recipient", env: Envelope{From: "a@x", To: []string{"b@y>\nDATA"}}, err: "recipient 1"},
		{name: "too many recipients", env: Envelope{To: make([]string, MaxRecipients+1)}, err: "recipients"},
		{name: "dot line in stuffed data", env: env, data: "x\n.\ny\n", stuffed: true, err: "\".\" line", sticky: true},
		{name: "CRLF dot line in stuffed data", env: env, data: ".\r\n", stuffed: true, crlf: true, err: "\".\" line", sticky: true},
		{name: "no final line end", env: env, data: "x", err: "no line end", sticky: true},
		{name: "CRLF in LF data", env: env, data: "x\r\n", err: "ends in CRLF", sticky: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			var err error
			if tc.stuffed {
				err = w.WriteStuffed(tc.env, strings.NewReader(tc.data), tc.crlf)
			} else {
				err = w.Write(tc.env, strings.NewReader(tc.data), tc.crlf)
			}
			if tc.err == "" {
				if err != nil || buf.String() != tc.want {
					t.Fatalf("wrote %q, %v; want %q", buf.String(), err, tc.want)
				}
				es := readAll(t, buf.Bytes())
				checkEntries(t, buf.Bytes(), es)
				if len(es) != 1 || es[0].Msg == nil {
					t.Fatalf("output does not read back as one message: %+v", es)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
			// A bad envelope is refused before anything is written.
			if !tc.sticky && buf.Len() != 0 {
				t.Errorf("wrote %q before refusing the envelope", buf.String())
			}
			err2 := w.Write(env, strings.NewReader("ok\n"), false)
			if tc.sticky && err2 != err {
				t.Errorf("after a partial write: %v, want the sticky %v", err2, err)
			}
			if !tc.sticky && (err2 != nil || !strings.HasSuffix(buf.String(), "ok\n.\n")) {
				t.Errorf("the Writer is unusable after refusing an envelope: %v", err2)
			}
		})
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterWriteError(t *testing.T) {
	for _, room := range []int{0, 10, 40} {
		w := NewWriter(&failWriter{n: room})
		err := w.Write(Envelope{From: "a@x", To: []string{"b@y"}}, strings.NewReader("body\n"), false)
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("room %d: error %v, want disk full", room, err)
		}
	}
}

func TestValidAddress(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"a@b", true},
		{"jörg@x", true},
		{`"john doe"@x`, true},
		{"unqualified", true},
		{strings.Repeat("a", MaxAddress), true},
		{strings.Repeat("a", MaxAddress+1), false},
		{"", false},
		{"a\x00b", false},
		{"a\tb", false},
		{"a\x7fb", false},
		{"a<b", false},
		{"a>b", false},
		{"j\xf6rg@x", false},
	}
	for _, tc := range tests {
		if err := ValidAddress(tc.addr); (err == nil) != tc.ok {
			t.Errorf("ValidAddress(%.30q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}
