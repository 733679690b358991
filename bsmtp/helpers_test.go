package bsmtp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"testing"
)

// readAll returns every entry of input, failing the test on a read error.
func readAll(t testing.TB, input []byte) []Entry {
	t.Helper()
	r := NewReader(bytes.NewReader(input))
	var es []Entry
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next after %d entries: %v", len(es), err)
		}
		es = append(es, e)
		if len(es) > len(input)+1 {
			t.Fatalf("more entries than input octets: Next does not advance")
		}
	}
	return es
}

// checkEntries checks what must hold for any input: the entries cover it
// without gap or overlap, line numbers match, each message's data section
// lies inside its entry, and Size and EightBit describe what Unstuff yields.
func checkEntries(t testing.TB, input []byte, es []Entry) {
	t.Helper()
	var pos int64
	for i, e := range es {
		if e.Start != pos {
			t.Fatalf("entry %d starts at %d, want %d (previous end)", i, e.Start, pos)
		}
		if e.End <= e.Start || e.End > int64(len(input)) {
			t.Fatalf("entry %d: bad range [%d,%d) in %d octets", i, e.Start, e.End, len(input))
		}
		if want := 1 + bytes.Count(input[:e.Start], []byte("\n")); e.Line != want {
			t.Fatalf("entry %d: Line %d, want %d", i, e.Line, want)
		}
		if e.Incomplete && i != len(es)-1 {
			t.Fatalf("entry %d is Incomplete but not last", i)
		}
		pos = e.End
		if e.Inner != nil && (e.Inner.Off <= e.Start || e.Inner.Off >= e.End) {
			t.Fatalf("entry %d: Inner at %d outside (%d,%d)", i, e.Inner.Off, e.Start, e.End)
		}
		if e.Inner != nil && e.Inner.Line != 1+bytes.Count(input[:e.Inner.Off], []byte("\n")) {
			t.Fatalf("entry %d: Inner.Line %d wrong", i, e.Inner.Line)
		}
		if e.Msg == nil {
			if e.Damage == "" {
				t.Fatalf("entry %d: neither message nor damage", i)
			}
			continue
		}
		m := e.Msg
		if e.Damage != "" || e.Incomplete {
			t.Fatalf("entry %d: message with damage %q", i, e.Damage)
		}
		if m.DataStart <= e.Start || m.DataEnd < m.DataStart || m.DataEnd >= e.End {
			t.Fatalf("entry %d: data [%d,%d) outside entry [%d,%d)", i, m.DataStart, m.DataEnd, e.Start, e.End)
		}
		term := string(input[m.DataEnd:e.End])
		if want := map[bool]string{false: ".\n", true: ".\r\n"}[m.CRLF]; term != want {
			t.Fatalf("entry %d: terminator %q, want %q", i, term, want)
		}
		content, err := io.ReadAll(Unstuff(bytes.NewReader(input[m.DataStart:m.DataEnd])))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(content)) != m.Size {
			t.Fatalf("entry %d: Size %d, Unstuff yields %d", i, m.Size, len(content))
		}
		if has8(content) != m.EightBit {
			t.Fatalf("entry %d: EightBit %v, content says %v", i, m.EightBit, !m.EightBit)
		}
	}
	if pos != int64(len(input)) {
		t.Fatalf("entries end at %d, input has %d octets", pos, len(input))
	}
}

// digest is the SHA-256 and length of what r yields.
func digest(t testing.TB, r io.Reader) (string, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// describe is a short, comparable form of an entry for table tests.
func describe(e Entry) string {
	switch {
	case e.Msg != nil:
		crlf := ""
		if e.Msg.CRLF {
			crlf = " crlf"
		}
		return fmt.Sprintf("msg <%s> %v size=%d%s", e.Msg.From, e.Msg.To, e.Msg.Size, crlf)
	case e.Incomplete:
		return "incomplete"
	}
	return "damage"
}
