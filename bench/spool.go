package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"etrnflush/bsmtp"
)

// spoolSpec describes a generated BSMTP spool: n messages of about size
// octets each, every one with its own Message-ID (so that no two are
// copies, and coalescing cannot blur the counts), each to rcpts
// recipients. With refuseEvery k > 0, every k-th message (the first
// among them, so that one heads the spool) goes to recipients whose
// address holds refuseMarker.
type spoolSpec struct {
	n           int
	size        int64
	rcpts       int
	refuseEvery int
}

// refuseMarker is what the sink's refuse option looks for.
const refuseMarker = "greylisted"

func (s spoolSpec) refused(i int) bool { return s.refuseEvery > 0 && i%s.refuseEvery == 0 }

// accepted is how many messages a sink refusing refuseMarker takes.
func (s spoolSpec) accepted() int {
	if s.refuseEvery <= 0 {
		return s.n
	}
	return s.n - (s.n+s.refuseEvery-1)/s.refuseEvery
}

// writeSpool writes the spool the way Exim appends it (LF line ends,
// dot-stuffed) and returns its length. Bodies are generated while written:
// a 256 MiB message never exists in memory here either.
func writeSpool(path, host string, s spoolSpec) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w := bsmtp.NewWriter(bw)
	for i := range s.n {
		env := bsmtp.Envelope{From: fmt.Sprintf("sender%d@isp.example", i%7)}
		local := "user"
		if s.refused(i) {
			local = refuseMarker
		}
		for r := range s.rcpts {
			env.To = append(env.To, fmt.Sprintf("%s%d-%d@%s", local, i, r, host))
		}
		if err := w.Write(env, newBody(i, s.size), false); err != nil {
			_ = f.Close() // the write error is the one to report
			return 0, err
		}
	}
	if err := bw.Flush(); err != nil {
		_ = f.Close() // the flush error is the one to report
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close() // the stat error is the one to report
		return 0, err
	}
	return fi.Size(), f.Close()
}

// body generates a message of about size octets: a header section, then
// 78-character lines, some starting with a dot so that stuffing is
// exercised.
type body struct {
	head []byte
	left int64
	line int
	buf  []byte
}

func newBody(i int, size int64) io.Reader {
	head := fmt.Sprintf("From: sender <sender@isp.example>\nTo: user <user@host.example>\nSubject: bench message %d\nMessage-ID: <bench-%d@isp.example>\nDate: Sun, 29 Nov 2026 06:00:00 +0000\n\n", i, i)
	return &body{head: []byte(head), left: max(size-int64(len(head)), 0)}
}

func (b *body) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(b.head) > 0 {
			c := copy(p[n:], b.head)
			b.head = b.head[c:]
			n += c
			continue
		}
		if len(b.buf) == 0 {
			if b.left <= 0 {
				break
			}
			lead := "x"
			if b.line%10 == 3 {
				lead = "."
			}
			l := fmt.Sprintf("%s%07d the quick brown fox jumps over the lazy dog, again and again\n", lead, b.line)
			if int64(len(l)) > b.left {
				l = l[:b.left-1] + "\n"
			}
			b.left -= int64(len(l))
			b.line++
			b.buf = []byte(l)
		}
		c := copy(p[n:], b.buf)
		b.buf = b.buf[c:]
		n += c
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}
