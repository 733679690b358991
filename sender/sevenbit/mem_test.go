package sevenbit_test

import (
	"io"
	"runtime"
	"strings"
	"testing"

	"etrnflush/sender/sevenbit"
)

// bigMessage yields a multipart message of about size octets whose text
// part is 8-bit throughout, without ever holding it.
type bigMessage struct {
	left int
	head string
	line string
	tail string
	buf  string
}

func newBigMessage(size int) *bigMessage {
	return &bigMessage{
		left: size,
		head: "Subject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
		line: strings.Repeat("caf\xc3\xa9 = cr\xc3\xa8me. ", 9) + "\r\n",
		tail: "--b--\r\n",
	}
}

func (m *bigMessage) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(m.buf) == 0 {
			switch {
			case m.head != "":
				m.buf, m.head = m.head, ""
			case m.left > 0:
				m.buf = m.line
				m.left -= len(m.line)
			case m.tail != "":
				m.buf, m.tail = m.tail, ""
			default:
				if n == 0 {
					return 0, io.EOF
				}
				return n, nil
			}
		}
		c := copy(p[n:], m.buf)
		m.buf = m.buf[c:]
		n += c
	}
	return n, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// TestMemoryFlat: Scan and conversion of a 64 MiB 8-bit message allocate
// a small fixed amount, not a share of the message. The budget is far
// below the message and far above the Writer's own buffers (8 KiB out,
// 4 KiB line, the header block), so load or the race detector's
// bookkeeping cannot make it flaky.
func TestMemoryFlat(t *testing.T) {
	const size = 64 << 20
	const budget = 2 << 20
	// Whatever the source and io.Copy allocate is measured alone first
	// and taken out.
	base := allocs(func() { io.Copy(io.Discard, newBigMessage(size)) })

	var plan *sevenbit.Plan
	scan := allocs(func() {
		var err error
		if plan, err = sevenbit.Scan(newBigMessage(size)); err != nil {
			t.Fatal(err)
		}
	})
	if !plan.Converts() {
		t.Fatal("Scan found nothing to convert")
	}
	out := &countWriter{}
	conv := allocs(func() {
		w := sevenbit.NewWriter(out, plan)
		buf := make([]byte, 32<<10)
		if _, err := io.CopyBuffer(w, struct{ io.Reader }{newBigMessage(size)}, buf); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	})
	if out.n < size*3/2 {
		t.Errorf("output of %d octets: not converted?", out.n)
	}
	t.Logf("scan %d, convert %d octets allocated beyond the source's %d; output %d octets", scan-base, conv-base, base, out.n)
	if scan-base > budget || conv-base > budget {
		t.Errorf("allocated %d (Scan) and %d (Writer) octets for a %d-octet message; budget %d", scan-base, conv-base, size, budget)
	}
}

func allocs(f func()) int64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return int64(b.TotalAlloc - a.TotalAlloc)
}
