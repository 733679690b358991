package sender

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
)

// chunk assembly for CHUNKING (RFC 3030): content goes in BDAT chunks of
// at most chunkSize, assembled in memory because BDAT states its size
// first.

type chunkBuf struct{ b []byte }

func (c *chunkBuf) Write(p []byte) (int, error) { c.b = append(c.b, p...); return len(p), nil }
func (c *chunkBuf) WriteByte(b byte) error      { c.b = append(c.b, b); return nil }

// sendChunked runs one message over PIPELINING and CHUNKING: RSET, MAIL,
// RCPT and the first BDAT chunk go without waiting for any reply. A
// message that fits one chunk is one BDAT n LAST. The later chunks of a
// larger message wait for its MAIL and RCPT replies: a server that took no
// recipient answers the first BDAT of a transaction with a plain 503 but
// counts every further one as a protocol error (Exim drops the session
// after smtp_max_synprot_errors, 3), so a command it must refuse is never
// sent twice in one transaction. Only the message and byte windows, and
// that wait for large messages, make the writer wait.
func (e *engine) sendChunked(t *ptx, rc io.ReadCloser, p params) {
	e.beginTxn(t, p)
	if e.src == nil {
		e.src = bufio.NewReaderSize(nil, 4096)
		e.cbuf.b = make([]byte, 0, chunkSize+2)
	}
	e.src.Reset(rc)
	enc := &encoder{w: &e.cbuf}
	closed := false
	for first := true; !e.dying(); first = false {
		chunk, last, err := e.fill(enc)
		if err == nil && last {
			closed = true
			if cerr := rc.Close(); cerr != nil {
				err = fmt.Errorf("close content: %w", cerr)
			}
		}
		if err != nil {
			// Nothing marks the end yet: the chunks sent are dropped with
			// the RSET before the next MAIL, and the session goes on.
			t.abort = err.Error()
			break
		}
		if !first {
			for !t.envelopeRead() && !e.dying() {
				if !e.wait() {
					break
				}
			}
		}
		e.poll()
		if t.doomed() || e.stopping() {
			// RFC 3030: no more chunks once one failed; none either when
			// no recipient was taken or the caller stopped.
			if t.abort == "" && e.stopping() {
				t.abort = "stopped before the end of the content"
			}
			break
		}
		n := int64(len(chunk))
		for e.bytes > 0 && e.bytes+n > maxInflightBytes && !e.dying() {
			if !e.wait() {
				break
			}
		}
		if e.dying() || !e.writeChunk(t, chunk, last) || last {
			break
		}
	}
	if !closed {
		_ = rc.Close() // abandoned: the outcome does not depend on it
	}
	e.close(t)
	// A message leaves once the buffer fills, or when the writer must
	// wait (a full window, a large message's envelope, the end): small
	// messages share a write instead of costing one each, and the
	// next is read from the spool in microseconds anyway.
	if e.s.bw.Available() < 4096 {
		e.flush()
	}
}

// writeChunk writes one BDAT chunk. For the last one, the end offset is
// noted before the write, as for the dot: a write that fails after the
// last octet left still leaves the outcome open.
func (e *engine) writeChunk(t *ptx, chunk []byte, last bool) bool {
	bw := e.s.bw
	cmd := "BDAT " + strconv.Itoa(len(chunk))
	if last {
		cmd += " LAST"
		t.dotEnd = e.s.dc.total() + int64(bw.Buffered()) + int64(len(cmd)+2+len(chunk))
	}
	e.s.trace("C", cmd)
	if _, err := bw.WriteString(cmd + "\r\n"); err != nil {
		e.writeFailed("bdat", err)
		return false
	}
	if _, err := bw.Write(chunk); err != nil {
		e.writeFailed("bdat", err)
		return false
	}
	n := int64(len(chunk))
	e.bytes += n
	e.s.stats.maxBytes = max(e.s.stats.maxBytes, e.bytes)
	e.expect(expect{kind: eBdat, t: t, n: n, last: last})
	return true
}

// fill assembles the next chunk: content with CRLF line ends, not
// dot-stuffed (RFC 3030), at most chunkSize+2 octets. last is set when the
// content ended.
func (e *engine) fill(enc *encoder) (chunk []byte, last bool, err error) {
	e.cbuf.b = e.cbuf.b[:0]
	tmp := e.s.copyBuf()
	for {
		room := chunkSize - len(e.cbuf.b)
		if room < 2 {
			break
		}
		// Each octet read becomes at most two (LF to CRLF).
		n, rerr := e.src.Read(tmp[:min(room/2, len(tmp))])
		if n > 0 {
			if _, err := enc.Write(tmp[:n]); err != nil {
				return nil, false, err
			}
		}
		if rerr == io.EOF {
			return e.endChunk(enc)
		}
		if rerr != nil {
			return nil, false, fmt.Errorf("read content: %w", rerr)
		}
	}
	if _, err := e.src.Peek(1); err == io.EOF {
		return e.endChunk(enc)
	} else if err != nil {
		return nil, false, fmt.Errorf("read content: %w", err)
	}
	return e.cbuf.b, false, nil
}

func (e *engine) endChunk(enc *encoder) ([]byte, bool, error) {
	if err := enc.finish(); err != nil {
		return nil, false, err
	}
	return e.cbuf.b, true, nil
}
