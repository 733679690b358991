package bsmtp

import (
	"bytes"
	"io"
	"slices"
	"testing"
	"testing/iotest"
)

// FuzzReader checks, for any input, that Next terminates, that the entries
// cover the input without gap or overlap, and that every message it accepts
// is written back by the Writer, both ways, into something that reads as
// the same message.
func FuzzReader(f *testing.F) {
	for _, s := range []string{okLF, okLF2 + okCRLF, "HELO mx\n" + okLF + "XYZZY\n" + okLF2,
		// torn appends: cut in the body, inside a RCPT line
		okLF + okLF2[:len(okLF2)-6] + okLF, okLF2[:30] + okLF} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		es := readAll(t, input)
		checkEntries(t, input, es)
		for i, e := range es {
			if e.Msg == nil {
				continue
			}
			m := e.Msg
			data := input[m.DataStart:m.DataEnd]
			content, err := io.ReadAll(Unstuff(bytes.NewReader(data)))
			if err != nil {
				t.Fatal(err)
			}
			var stuffed, restuffed bytes.Buffer
			if err := NewWriter(&stuffed).WriteStuffed(m.Envelope, bytes.NewReader(data), m.CRLF); err != nil {
				t.Fatalf("entry %d: WriteStuffed refused what the reader accepted: %v", i, err)
			}
			if err := NewWriter(&restuffed).Write(m.Envelope, bytes.NewReader(content), m.CRLF); err != nil {
				t.Fatalf("entry %d: Write refused what the reader accepted: %v", i, err)
			}
			for _, out := range [][]byte{stuffed.Bytes(), restuffed.Bytes()} {
				again := readAll(t, out)
				if len(again) != 1 || again[0].Msg == nil {
					t.Fatalf("entry %d: written %q reads back as %+v", i, out, again)
				}
				b := again[0].Msg
				if b.From != m.From || !slices.Equal(b.To, m.To) || b.CRLF != m.CRLF || b.Size != m.Size || b.EightBit != m.EightBit {
					t.Fatalf("entry %d: %+v read back as %+v", i, m, b)
				}
				got, err := io.ReadAll(Unstuff(bytes.NewReader(out[b.DataStart:b.DataEnd])))
				if err != nil || !bytes.Equal(got, content) {
					t.Fatalf("entry %d: content %q read back as %q, %v", i, content, got, err)
				}
			}
		}
	})
}

// FuzzUnstuff compares Unstuff with the line-splitting reference, reading
// both whole and in small pieces.
func FuzzUnstuff(f *testing.F) {
	for _, s := range []string{"", ".\n", "..x\n.y\n\nz", "a\r\n..\r\n.", "\x00.\n.\xff"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		want := refUnstuff(in)
		got, err := io.ReadAll(Unstuff(iotest.OneByteReader(bytes.NewReader(in))))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Unstuff(%q) = %q, %v; want %q", in, got, err, want)
		}
		got, err = readSmall(Unstuff(bytes.NewReader(in)), int(size)+1)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Unstuff(%q) in %d-octet reads = %q, %v; want %q", in, int(size)+1, got, err, want)
		}
		if got := UnstuffBytes(in); !bytes.Equal(got, want) {
			t.Fatalf("UnstuffBytes(%q) = %q; want %q", in, got, want)
		}
		if got := AppendUnstuffed([]byte("x"), in); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Fatalf("AppendUnstuffed(x, %q) = %q; want x%q", in, got, want)
		}
	})
}
