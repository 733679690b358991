package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"etrnflush/bsmtp"
)

// The transcript yardstick: what the fastest conceivable client does with
// the same spool. All the work a client has to do (parse the spool, undo
// the stuffing, turn LF into CRLF, frame the commands) is done before the
// clock starts; what is timed is the sink taking the session: one
// sendfile of the whole transcript while the replies are read.

// transcriptStats describes a rendered transcript.
type transcriptStats struct {
	msgs, rcpts int
	content     int64 // octets of message content, as the sink counts them
	octets      int64 // the whole transcript
}

// renderTranscript writes one pipelined client session for every message
// of the BSMTP spool: EHLO, then per message MAIL, its RCPTs and one
// "BDAT n LAST" with the content, then QUIT. The spool must be free of
// damage: the yardstick has nothing to set aside.
func renderTranscript(w io.Writer, spool io.ReaderAt, size int64, helo string) (transcriptStats, error) {
	var st transcriptStats
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	fmt.Fprintf(bw, "EHLO %s\r\n", helo)
	r := bsmtp.NewReader(io.NewSectionReader(spool, 0, size))
	var content bytes.Buffer
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, err
		}
		if e.Msg == nil {
			return st, fmt.Errorf("spool damaged at line %d: %s", e.Line, e.Damage)
		}
		m := e.Msg
		content.Reset()
		data := bsmtp.Unstuff(io.NewSectionReader(spool, m.DataStart, m.DataEnd-m.DataStart))
		if err := toCRLF(&content, data, m.CRLF); err != nil {
			return st, err
		}
		mail := fmt.Sprintf("MAIL FROM:<%s>", m.From)
		if m.EightBit {
			mail += " BODY=8BITMIME"
		}
		fmt.Fprintf(bw, "%s\r\n", mail)
		for _, to := range m.To {
			fmt.Fprintf(bw, "RCPT TO:<%s>\r\n", to)
		}
		fmt.Fprintf(bw, "BDAT %d LAST\r\n", content.Len())
		if _, err := bw.Write(content.Bytes()); err != nil {
			return st, err
		}
		st.msgs++
		st.rcpts += len(m.To)
		st.content += int64(content.Len())
	}
	if _, err := io.WriteString(bw, "QUIT\r\n"); err != nil {
		return st, err
	}
	err := bw.Flush()
	st.octets = cw.n
	return st, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// toCRLF copies content, ending every line in CRLF: the wire form of a
// spool written with Exim's default LF line ends.
func toCRLF(dst *bytes.Buffer, src io.Reader, crlf bool) error {
	if crlf {
		_, err := dst.ReadFrom(src)
		return err
	}
	br := bufio.NewReaderSize(src, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			dst.Write(line[:len(line)-1])
			dst.WriteString("\r\n")
		} else {
			dst.Write(line)
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// replayTranscript connects to addr, waits for the greeting (RFC 5321
// forbids talking first, and an Exim that advertises PIPECONNECT answers
// an early EHLO twice), streams the transcript file with one sendfile
// while a goroutine reads the replies, and returns the time from connect
// to the reply to QUIT. Every reply but QUIT's must be 250: a refusal
// would make the yardstick's count wrong, not merely slow.
func replayTranscript(addr string, transcript *os.File, st transcriptStats) (time.Duration, error) {
	if _, err := transcript.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	start := time.Now()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	c := nc.(*net.TCPConn)
	defer func() { _ = c.Close() }() // the session ended with QUIT's reply
	if err := c.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	if code, l, err := readReply(br); err != nil || code != 220 {
		return 0, fmt.Errorf("greeting %q: %v", l, err)
	}
	// EHLO, per message MAIL, RCPTs, BDAT, then QUIT.
	want := 1 + 2*st.msgs + st.rcpts + 1
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= want; i++ {
			code, l, err := readReply(br)
			if err != nil {
				done <- fmt.Errorf("reply %d of %d: %w", i, want, err)
				return
			}
			if i == want {
				if code != 221 {
					err = fmt.Errorf("QUIT: %q", l)
				}
				done <- err
				return
			}
			if code != 250 {
				done <- fmt.Errorf("reply %d of %d: %q", i, want, l)
				return
			}
		}
	}()
	n, err := c.ReadFrom(transcript)
	if err == nil && n != st.octets {
		err = fmt.Errorf("sent %d of %d octets", n, st.octets)
	}
	if err != nil {
		return 0, err
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// readReply reads one reply, multi-line or not, and returns its code and
// last line.
func readReply(br *bufio.Reader) (int, string, error) {
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return 0, l, err
		}
		if len(l) < 4 {
			return 0, l, fmt.Errorf("short reply line %q", l)
		}
		if l[3] == '-' {
			continue
		}
		var code int
		if _, err := fmt.Sscanf(l[:3], "%d", &code); err != nil {
			return 0, l, fmt.Errorf("reply line %q: %w", l, err)
		}
		return code, strings.TrimRight(l, "\r\n"), nil
	}
}
