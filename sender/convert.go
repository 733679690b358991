package sender

import (
	"errors"
	"fmt"
	"io"

	"etrnflush/sender/sevenbit"
)

// sevenBit returns how to open m's content for a server without 8BITMIME
// (RFC 6152): re-encoded as 7-bit MIME, as Postfix does, so that 8-bit
// octets never reach a server that did not agree to take them. It reads
// the content once to plan the conversion; err is set when the message
// cannot be converted (8-bit header fields, 8-bit data inside a base64
// part, nesting too deep) and must be refused. converted is false when
// the content needs no change.
func sevenBit(m *Message) (open func() (io.ReadCloser, error), converted bool, err error) {
	rc, err := m.Open()
	if err != nil {
		return nil, false, fmt.Errorf("open content: %w", err)
	}
	plan, err := sevenbit.Scan(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close content: %w", cerr)
	}
	if err != nil {
		return nil, false, err
	}
	if !plan.Converts() {
		return m.Open, false, nil
	}
	open = func() (io.ReadCloser, error) {
		src, err := m.Open()
		if err != nil {
			return nil, err
		}
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			w := sevenbit.NewWriter(pw, plan)
			_, err := io.Copy(w, src)
			if err == nil {
				err = w.Close()
			}
			if cerr := src.Close(); err == nil && cerr != nil {
				err = cerr
			}
			// A nil error ends the reader's stream with EOF.
			pw.CloseWithError(err)
		}()
		return &pipeReader{PipeReader: pr, done: done}, nil
	}
	return open, true, nil
}

// pipeReader is the converted stream. Closing it early stops the
// converting goroutine (its next write fails) and waits for it, so that
// the source is closed before Close returns.
type pipeReader struct {
	*io.PipeReader
	done chan struct{}
}

func (p *pipeReader) Close() error {
	err := p.PipeReader.Close()
	<-p.done
	return err
}

// unconvertible tells a message that cannot be made 7-bit from a failure
// to read it.
func unconvertible(err error) bool {
	for _, e := range []error{sevenbit.ErrHeader8Bit, sevenbit.ErrUnconvertible, sevenbit.ErrNesting,
		sevenbit.ErrHeaderTooLong, sevenbit.ErrUnlabeled8Bit} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
