package sevenbit_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
)

// part is what a MIME reader makes of one leaf: its place, its type and
// its decoded body.
type part struct {
	path, ctype string
	body        []byte
}

// decode walks a message the way a receiving MUA would, with the standard
// library's readers, and returns its leaves' decoded bodies. Base64 is
// left encoded: the converter must not touch it, so comparing the text
// is the stronger test.
func decode(msg []byte) ([]part, error) {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return nil, err
	}
	var out []part
	err = walk(textproto.MIMEHeader(m.Header), m.Body, "0", &out)
	return out, err
}

func walk(h textproto.MIMEHeader, body io.Reader, path string, out *[]part) error {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		mt = "text/plain"
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		mr := multipart.NewReader(body, params["boundary"])
		for i := 0; ; i++ {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if err := walk(p.Header, p, fmt.Sprintf("%s.%d", path, i), out); err != nil {
				return err
			}
		}
	case mt == "message/rfc822":
		m, err := mail.ReadMessage(body)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return walk(textproto.MIMEHeader(m.Header), m.Body, path+".m", out)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if strings.EqualFold(strings.TrimSpace(h.Get("Content-Transfer-Encoding")), "quoted-printable") {
		for _, l := range bytes.Split(b, []byte("\n")) {
			if l = bytes.TrimSuffix(l, []byte("\r")); len(l) > 76 {
				return fmt.Errorf("%s: quoted-printable line of %d octets", path, len(l))
			}
		}
		if b, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b))); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	*out = append(*out, part{path, mt, b})
	return nil
}

// gen makes random well-formed messages: nested multiparts and
// message/rfc822 parts, leaves with every label and bodies full of what
// quoted-printable must get right.
type gen struct {
	r  *rand.Rand
	nb int
}

var atoms = []string{"a", "b", "Z", " ", "\t", "=", ".", "-", "--", "=41", "\xc3\xa9", "\xe9", "\xff", "\x00", "\x7f", "\r", "From ", "  "}

func (g *gen) line(eight bool) string {
	var b strings.Builder
	n := g.r.Intn(12)
	if g.r.Intn(8) == 0 {
		n = 40 + g.r.Intn(120) // beyond 76 octets
	}
	for i := 0; i < n; i++ {
		a := atoms[g.r.Intn(len(atoms))]
		if !eight && (a[0] >= 0x80 || a == "\x00" || a == "\r") {
			a = "x"
		}
		b.WriteString(a)
	}
	if strings.HasSuffix(b.String(), "\r") {
		// CR LF is a line end either way; on the wire, where the sender
		// turns LF into CR LF, the two cannot be told apart.
		b.WriteString("x")
	}
	return b.String()
}

func (g *gen) text(eight bool) string {
	var lines []string
	for i := g.r.Intn(5); i >= 0; i-- {
		lines = append(lines, g.line(eight))
	}
	return strings.Join(lines, "\n")
}

func (g *gen) entity(depth int, top bool) string {
	var h strings.Builder
	h.WriteString("X-Gen: " + fmt.Sprint(depth) + "\n")
	if top && g.r.Intn(2) == 0 {
		h.WriteString("MIME-Version: 1.0\n")
	}
	switch k := g.r.Intn(10); {
	case depth < 4 && k < 3:
		g.nb++
		bnd := fmt.Sprintf("=_b%d.%d", g.nb, g.r.Intn(1000))
		if g.r.Intn(2) == 0 {
			fmt.Fprintf(&h, "Content-Type: multipart/mixed;\n\tboundary=\"%s\"\n", bnd)
		} else {
			fmt.Fprintf(&h, "Content-Type: multipart/alternative; boundary=\"%s\"; x=y\n", bnd)
		}
		if g.r.Intn(2) == 0 {
			h.WriteString("Content-Transfer-Encoding: 8bit\n")
		}
		var b strings.Builder
		b.WriteString(g.text(true) + "\n")
		for i := g.r.Intn(3); i >= 0; i-- {
			b.WriteString("--" + bnd + "\n" + g.entity(depth+1, false) + "\n")
		}
		b.WriteString("--" + bnd + "--\n" + g.text(true))
		return h.String() + "\n" + b.String()
	case depth < 4 && k < 4:
		h.WriteString("Content-Type: message/rfc822\n")
		if g.r.Intn(2) == 0 {
			h.WriteString("Content-Transfer-Encoding: 8bit\n")
		}
		return h.String() + "\n" + g.entity(depth+1, true)
	case k < 5:
		h.WriteString("Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n")
		return h.String() + "\n" + base64.StdEncoding.EncodeToString([]byte(g.text(true)))
	case k < 6:
		var b bytes.Buffer
		qw := quotedprintable.NewWriter(&b)
		qw.Write([]byte(g.text(true)))
		qw.Close()
		h.WriteString("Content-Transfer-Encoding: quoted-printable\n")
		return h.String() + "\n" + strings.ReplaceAll(b.String(), "\r\n", "\n")
	default:
		h.WriteString([]string{"", "Content-Type: text/plain; charset=utf-8\n"}[g.r.Intn(2)])
		h.WriteString([]string{"", "Content-Transfer-Encoding: 7bit\n", "Content-Transfer-Encoding: 8bit\n", "Content-Transfer-Encoding: binary\n"}[g.r.Intn(4)])
		return h.String() + "\n" + g.text(g.r.Intn(3) > 0)
	}
}

// check converts in and asserts what must hold of any output.
func check(t *testing.T, in []byte) []byte {
	t.Helper()
	out, p, err := convert(in, true, 0)
	if err != nil {
		t.Fatalf("convert: %v\n%q", err, in)
	}
	for i, c := range out {
		if c >= 0x80 {
			t.Fatalf("8-bit octet in output at %d:\n%q", i, out)
		}
	}
	if !p.Converts() && !bytes.Equal(in, out) {
		t.Fatalf("nothing to convert, yet output differs:\n in %q\nout %q", in, out)
	}
	// Writes split anywhere give the same octets.
	for _, chunk := range []int{1, 3, 61} {
		o2, _, err := convert(in, true, chunk)
		if err != nil || !bytes.Equal(o2, out) {
			t.Fatalf("chunk %d: %v, output differs", chunk, err)
		}
	}
	// The output is 7-bit, so converting it again changes nothing.
	again, p2, err := convert(out, true, 0)
	if err != nil || p2.Converts() || !bytes.Equal(again, out) {
		t.Fatalf("second conversion: %v, Converts %v, same %v", err, p2 != nil && p2.Converts(), bytes.Equal(again, out))
	}
	return out
}

func TestProperties(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	g := &gen{r: rand.New(rand.NewSource(1))}
	converted, postfixOK := 0, 0
	for i := 0; i < n; i++ {
		msg := g.entity(0, true)
		if i%2 == 1 {
			msg = crlf(msg)
		}
		in := []byte(msg)
		out := check(t, in)
		if !bytes.Equal(in, out) {
			converted++
		}
		want, err := decode(in)
		if err != nil {
			t.Fatalf("decode input: %v\n%q", err, in)
		}
		got, err := decode(out)
		if err != nil {
			t.Fatalf("decode output: %v\n in %q\nout %q", err, in, out)
		}
		sameLeaves(t, in, out, want, got)
		// Without a plan the Writer goes by the labels, as Postfix does;
		// when it does not refuse, the result must decode the same too.
		if out, _, err := convert(in, false, 0); err == nil {
			got, err := decode(out)
			if err != nil {
				t.Fatalf("decode Postfix-mode output: %v\n in %q\nout %q", err, in, out)
			}
			sameLeaves(t, in, out, want, got)
			postfixOK++
		}
	}
	t.Logf("%d of %d changed by conversion; %d went through without a plan too", converted, n, postfixOK)
	if converted < n/3 {
		t.Errorf("only %d of %d messages needed conversion: the generator is too tame", converted, n)
	}
}

func sameLeaves(t *testing.T, in, out []byte, want, got []part) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d leaves, want %d\n in %q\nout %q", len(got), len(want), in, out)
	}
	for j := range want {
		if got[j].path != want[j].path || got[j].ctype != want[j].ctype || !bytes.Equal(got[j].body, want[j].body) {
			t.Fatalf("leaf %s (%s): got %q want %q\n in %q\nout %q", want[j].path, want[j].ctype, got[j].body, want[j].body, in, out)
		}
	}
}
