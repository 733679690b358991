package bounce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// sendTimeout bounds one run of the command: a local MTA that hangs must
// not hold the host's flush (and its lock) for ever.
const sendTimeout = 2 * time.Minute

// Send runs argv with rcpt appended as its last argument, without a shell,
// and writes msg to its standard input. The message is whole before the
// command starts (a DSN is small: the original's header block is capped):
// a sendmail that exits 0 at the end of its input would otherwise send a
// truncated DSN when building it failed half way. Send returns nil only
// if the command exited 0: until then the caller keeps the undelivered
// message. The error carries the exit status and the first part of what
// the command wrote to stderr.
func Send(ctx context.Context, argv []string, rcpt string, msg []byte) error {
	if len(argv) == 0 {
		return errors.New("sendmail: empty command")
	}
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	args := append(append([]string(nil), argv[1:]...), rcpt)
	cmd := exec.CommandContext(ctx, argv[0], args...)
	var stderr capped
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("sendmail: %w", err)
	}
	if err := cmd.Start(); err != nil {
		_ = stdin.Close() // nothing was written; the start error matters
		return fmt.Errorf("sendmail: %w", err)
	}
	_, werr := stdin.Write(msg)
	if cerr := stdin.Close(); cerr != nil && werr == nil {
		werr = cerr
	}
	err = cmd.Wait()
	if err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		if msg != "" {
			return fmt.Errorf("%s: %w: %s", argv[0], err, msg)
		}
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	if werr != nil {
		// The command exited 0 without reading all of the DSN: it
		// cannot have taken the whole message. (A write error is no
		// reason to wait less: Wait reaps the command either way.)
		return fmt.Errorf("%s: writing the DSN: %w", argv[0], werr)
	}
	return nil
}

// capped keeps the first 512 octets written to it.
type capped struct{ b bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := 512 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.b.String() }
