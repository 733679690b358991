package sevenbit_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"etrnflush/sender/sevenbit"
)

// convert runs Scan (when plan is set) and a Writer over in, written in
// pieces of at most chunk octets (0: all at once).
func convert(in []byte, plan bool, chunk int) ([]byte, *sevenbit.Plan, error) {
	var p *sevenbit.Plan
	if plan {
		var err error
		if p, err = sevenbit.Scan(bytes.NewReader(in)); err != nil {
			return nil, nil, err
		}
	}
	var out bytes.Buffer
	w := sevenbit.NewWriter(&out, p)
	rest := in
	for len(rest) > 0 {
		n := len(rest)
		if chunk > 0 && n > chunk {
			n = chunk
		}
		if _, err := w.Write(rest[:n]); err != nil {
			return out.Bytes(), p, err
		}
		rest = rest[n:]
	}
	err := w.Close()
	return out.Bytes(), p, err
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

var long8 = strings.Repeat("\xc3\xa9", 60) // 120 octets, 60 characters

var convertCases = []struct {
	name    string
	in      string
	want    string // "" with err set
	postfix bool   // no Scan: decide from the labels, as Postfix does
	err     error
}{
	{
		name: "7-bit message untouched",
		in:   "From: a@x\nSubject: hi\n\nplain = text \n.\n--\n",
		want: "From: a@x\nSubject: hi\n\nplain = text \n.\n--\n",
	},
	{
		name: "unlabelled 8-bit text gets MIME-Version and a label",
		in:   "Subject: a\n\nh\xe9 = .\n.\n",
		want: "Subject: a\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\nh=E9 =3D .\n.\n",
	},
	{
		name: "8bit label replaced in place",
		in:   "MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\nContent-Type: text/plain; charset=utf-8\n\n\xc3\xa9\n",
		want: "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\nContent-Type: text/plain; charset=utf-8\n\n=C3=A9\n",
	},
	{
		name: "folded 8bit label and a second one",
		in:   "Content-Transfer-Encoding:\n  8BIT (really)\nSubject: s\ncontent-transfer-encoding: binary\n\n\xff\n",
		want: "Content-Transfer-Encoding: quoted-printable\nSubject: s\nMIME-Version: 1.0\n\n=FF\n",
	},
	{
		name: "8bit label on 7-bit text kept with a plan",
		in:   "MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\n\nab=c\n",
		want: "MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\n\nab=c\n",
	},
	{
		name: "binary label on 7-bit text converted with a plan too",
		in:   "Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: binary\n\n--b\nContent-Transfer-Encoding: binary\n\nab=c\n--b--\n",
		want: "Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: 7bit\nMIME-Version: 1.0\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\nab=3Dc\n--b--\n",
	},
	{
		name:    "8bit label on 7-bit text converted as Postfix does",
		postfix: true,
		in:      "MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\n\nab=c\n",
		want:    "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\nab=3Dc\n",
	},
	{
		name:    "unlabelled 8-bit without a plan",
		postfix: true,
		in:      "Subject: a\n\nh\xe9\n",
		err:     sevenbit.ErrUnlabeled8Bit,
	},
	{
		name: "trailing white space, tabs, controls and a bare CR",
		in:   "Content-Transfer-Encoding: 8bit\n\n\xe9 \t\nx\ty \na\x00b\rc\x7f\n \n",
		want: "Content-Transfer-Encoding: quoted-printable\nMIME-Version: 1.0\n\n=E9 =09\nx\ty=20\na=00b=0Dc=7F\n=20\n",
	},
	{
		name: "lines starting with dot, dash and From",
		in:   "\n\xe9\n.\n..x\n--b\n-\nFrom me\n",
		want: "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=E9\n.\n..x\n=2D-b\n=2D\nFrom me\n",
	},
	{
		name: "long line gets soft breaks of at most 76",
		in:   "\n" + long8 + "\n",
		want: "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n" +
			// 25 encoded octets fill 75 columns, the soft break the 76th;
			// a break may fall inside a UTF-8 sequence (octets, not
			// characters, are encoded).
			strings.Repeat(strings.Repeat("=C3=A9", 12)+"=C3=\n=A9"+strings.Repeat("=C3=A9", 12)+"=\n", 2) +
			strings.Repeat("=C3=A9", 10) + "\n",
	},
	{
		name: "long 7-bit line inside an 8-bit body",
		in:   "\n\xe9\n" + strings.Repeat("a", 80) + "\n",
		want: "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=E9\n" +
			strings.Repeat("a", 75) + "=\naaaaa\n",
	},
	{
		name: "no final line end",
		in:   "\n\xe9 ",
		want: "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=E9=20",
	},
	{
		name: "already quoted-printable untouched",
		in:   "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\nh=E9 =\nx\n",
		want: "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\nh=E9 =\nx\n",
	},
	{
		name: "quoted-printable with raw 8-bit",
		in:   "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\nh\xe9\n",
		err:  sevenbit.ErrUnconvertible,
	},
	{
		name: "multipart: base64 part untouched, text part converted",
		in: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_b\"\n\n" +
			"preamble\n--=_b\nContent-Type: text/plain; charset=latin1\n\ncaf\xe9\n" +
			"--=_b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n" +
			"--=_b--\nepilogue\n",
		want: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_b\"\n\n" +
			"preamble\n--=_b\nContent-Type: text/plain; charset=latin1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9\n" +
			"--=_b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n" +
			"--=_b--\nepilogue\n",
	},
	{
		name: "folded, quoted boundary and 8bit multipart label",
		in: "Content-Type: multipart/alternative;\n\tcharset=x;\n boundary=\"a b:c\"\nContent-Transfer-Encoding: 8bit\n\n" +
			"--a b:c  \n\n\xe9\n--a b:c--\n",
		want: "Content-Type: multipart/alternative;\n\tcharset=x;\n boundary=\"a b:c\"\nContent-Transfer-Encoding: 7bit\nMIME-Version: 1.0\n\n" +
			"--a b:c  \nContent-Transfer-Encoding: quoted-printable\n\n=E9\n--a b:c--\n",
	},
	{
		name: "boundary that mime.ParseMediaType refuses",
		in:   "Content-Type: multipart/mixed; Boundary=----=_Part_1; stray\n\n------=_Part_1\n\n\xe9\n------=_Part_1--\n",
		want: "Content-Type: multipart/mixed; Boundary=----=_Part_1; stray\nMIME-Version: 1.0\n\n------=_Part_1\nContent-Transfer-Encoding: quoted-printable\n\n=E9\n------=_Part_1--\n",
	},
	{
		name: "8-bit preamble and epilogue",
		in: "Content-Type: multipart/mixed; boundary=b\n\n" +
			"pr\xe9\n--b\xe9\n--b\n\nx\n--b--\n\xff\n",
		want: "Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n" +
			"pr=E9\n=2D-b=E9\n--b\n\nx\n--b--\n=FF\n",
	},
	{
		name: "nested multipart and close delimiter missing",
		in: "Content-Type: multipart/mixed; boundary=outer\n\n" +
			"--outer\nContent-Type: multipart/alternative; boundary=inner\n\n" +
			"--inner\n\n\xe91\n--inner\nContent-Type: text/html\n\n<p>\xe92</p>\n" +
			"--outer\n\n\xe93\n--outer\n\n7bit\n",
		want: "Content-Type: multipart/mixed; boundary=outer\nMIME-Version: 1.0\n\n" +
			"--outer\nContent-Type: multipart/alternative; boundary=inner\n\n" +
			"--inner\nContent-Transfer-Encoding: quoted-printable\n\n=E91\n--inner\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n<p>=E92</p>\n" +
			"--outer\nContent-Transfer-Encoding: quoted-printable\n\n=E93\n--outer\n\n7bit\n",
	},
	{
		name: "delimiter look-alikes are content",
		in:   "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--bb\n--b-\n\xe9\n--b--x\n--b--\n",
		want: "Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\n" +
			"=2D-bb\n=2D-b-\n=E9\n=2D-b--x\n--b--\n",
	},
	{
		name: "message/rfc822 relabelled 7bit, enclosed message converted",
		in: "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n" +
			"Subject: inner\nContent-Type: text/plain; charset=utf-8\n\n\xc3\xa9\n--b--\n",
		want: "Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n--b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 7bit\n\n" +
			"Subject: inner\nContent-Type: text/plain; charset=utf-8\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=C3=A9\n--b--\n",
	},
	{
		name: "multipart/digest parts default to message/rfc822",
		in:   "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\n\xe9\n--d--\n",
		want: "Content-Type: multipart/digest; boundary=d\nMIME-Version: 1.0\n\n--d\n\nSubject: one\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=E9\n--d--\n",
	},
	{
		name: "message/partial with 8-bit",
		in:   "Content-Type: message/partial; id=x; number=1\n\nSubject: \xe9\n",
		err:  sevenbit.ErrUnconvertible,
	},
	{
		name: "multipart without boundary holding 8-bit",
		in:   "Content-Type: multipart/mixed\n\n\xe9\n",
		err:  sevenbit.ErrUnconvertible,
	},
	{
		name: "8-bit top-level header",
		in:   "Subject: caf\xe9\n\nbody\n",
		err:  sevenbit.ErrHeader8Bit,
	},
	{
		name: "8-bit folded header line",
		in:   "Subject: a\n b\xe9\n\nbody\n",
		err:  sevenbit.ErrHeader8Bit,
	},
	{
		name: "8-bit part header",
		in:   "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Disposition: attachment; filename=\"\xe9.txt\"\n\nx\n--b--\n",
		err:  sevenbit.ErrHeader8Bit,
	},
	{
		name: "header ended by a non-field line",
		in:   "Subject: a\nnot a field\n\xe9\n",
		want: "Subject: a\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\nnot a field\n=E9\n",
	},
	{
		name: "header only, no body",
		in:   "Subject: a\nX-Y: z",
		want: "Subject: a\nX-Y: z",
	},
	{
		name: "empty message",
		in:   "",
		want: "",
	},
}

func TestConvert(t *testing.T) {
	for _, tc := range convertCases {
		for _, nl := range []string{"LF", "CRLF"} {
			in, want := tc.in, tc.want
			if nl == "CRLF" {
				in, want = crlf(in), crlf(want)
			}
			for _, chunk := range []int{0, 1, 7} {
				out, _, err := convert([]byte(in), !tc.postfix, chunk)
				if tc.err != nil {
					if !errors.Is(err, tc.err) {
						t.Errorf("%s (%s, chunk %d): err %v, want %v", tc.name, nl, chunk, err, tc.err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s (%s, chunk %d): %v", tc.name, nl, chunk, err)
					continue
				}
				if string(out) != want {
					t.Errorf("%s (%s, chunk %d):\n got %q\nwant %q", tc.name, nl, chunk, out, want)
				}
			}
		}
	}
}

// TestConvertsFalse: Plan.Converts is what lets a sender keep the
// original content (and its SIZE) when nothing needs conversion.
func TestConvertsFalse(t *testing.T) {
	for in, want := range map[string]bool{
		"Subject: a\n\nb\n":                                                  false,
		"Content-Transfer-Encoding: 8bit\n\nb\n":                             false,
		"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n\xe9\n--b--\n":  true,
		"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n\xe9": true,
	} {
		p, err := sevenbit.Scan(strings.NewReader(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if p.Converts() != want {
			t.Errorf("%q: Converts %v, want %v", in, p.Converts(), want)
		}
	}
}

func TestNesting(t *testing.T) {
	var b strings.Builder
	depth := sevenbit.MaxNesting + 1
	for i := 0; i < depth; i++ {
		b.WriteString("Content-Type: multipart/mixed; boundary=b" + strings.Repeat("x", i) + "\n\n--b" + strings.Repeat("x", i) + "\n")
	}
	b.WriteString("\n\xe9\n")
	if _, err := sevenbit.Scan(strings.NewReader(b.String())); !errors.Is(err, sevenbit.ErrNesting) {
		t.Errorf("depth %d: %v, want ErrNesting", depth, err)
	}
	// message/rfc822 levels count too: each is one more header block.
	msg := strings.Repeat("Content-Type: message/rfc822\n\n", sevenbit.MaxNesting) + "\n\xe9\n"
	p, err := sevenbit.Scan(strings.NewReader(msg))
	if err != nil || !p.Converts() {
		t.Errorf("depth %d: %v", sevenbit.MaxNesting, err)
	}
	msg = strings.Repeat("Content-Type: message/rfc822\n\n", sevenbit.MaxNesting+1) + "\n\xe9\n"
	if _, err := sevenbit.Scan(strings.NewReader(msg)); !errors.Is(err, sevenbit.ErrNesting) {
		t.Errorf("depth %d: %v, want ErrNesting", sevenbit.MaxNesting+1, err)
	}
}

func TestHeaderTooLong(t *testing.T) {
	in := "Subject: " + strings.Repeat("a", sevenbit.MaxHeader) + "\n\nb\n"
	if _, err := sevenbit.Scan(strings.NewReader(in)); !errors.Is(err, sevenbit.ErrHeaderTooLong) {
		t.Errorf("got %v, want ErrHeaderTooLong", err)
	}
}

// TestScanMismatch: content that changed between Scan and the Writer is
// refused rather than sent with 8-bit octets.
func TestScanMismatch(t *testing.T) {
	p, err := sevenbit.Scan(strings.NewReader("\nplain\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := sevenbit.NewWriter(io.Discard, p)
	_, err = w.Write([]byte("\npl\xe9in\n"))
	if err == nil {
		err = w.Close()
	}
	if !errors.Is(err, sevenbit.ErrUnlabeled8Bit) {
		t.Errorf("got %v, want ErrUnlabeled8Bit", err)
	}
}

type failWriter struct{}

var errBoom = errors.New("boom")

func (failWriter) Write([]byte) (int, error) { return 0, errBoom }

func TestWriteError(t *testing.T) {
	w := sevenbit.NewWriter(failWriter{}, nil)
	w.Write([]byte("Subject: a\n\n" + strings.Repeat("x\n", 10000)))
	if err := w.Close(); !errors.Is(err, errBoom) {
		t.Errorf("Close: %v, want the underlying error", err)
	}
}

// TestLongLines: lines far beyond the Writer's line piece keep every
// octet, whether passed or encoded.
func TestLongLines(t *testing.T) {
	line := strings.Repeat("0123456789", 1000) // 10000 octets
	in := "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n" + line + "\n--b\n\n\xe9" + line + "\r\n--b--\n"
	out, _, err := convert([]byte(in), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("\n"+line+"\n--b\n")) {
		t.Error("7-bit long line changed")
	}
	for _, l := range bytes.Split(out, []byte("\n")) {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if len(l) > 76 && !bytes.Equal(l, []byte(line)) {
			t.Errorf("line of %d octets: %.40q...", len(l), l)
		}
	}
}
