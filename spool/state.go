package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LastFlush is what a host's state file says of its last flush: when it
// ended, its exit status and its counts. The JSON names are a stable
// interface (list --json shows the object as it is).
type LastFlush struct {
	Time        time.Time `json:"time"`
	Exit        int       `json:"exit"`
	Messages    int       `json:"messages"`
	Sent        int       `json:"sent"`
	Deferred    int       `json:"deferred"`
	Failed      int       `json:"failed"`
	Quarantined int       `json:"quarantined"`
	Uncertain   int       `json:"uncertain"`
	Partial     int       `json:"partial"`
	Bytes       int64     `json:"bytes"`
	ElapsedMS   int64     `json:"elapsed_ms"`
	Unreachable bool      `json:"unreachable"`
	Error       string    `json:"error,omitempty"`
}

// maxState bounds what is read of a state file: it is a few hundred
// octets, and anything larger was not written by us.
const maxState = 64 << 10

// statePath is host's state file in dir, beside its lock file.
func statePath(dir, host string) string {
	return filepath.Join(dir, ".etrnflush-"+privName(host)+".last")
}

// WriteLastFlush replaces host's state file in dir, atomically (a reader
// sees the old state or the new one, never half), as the current user:
// a flush runs as the spool's owner. The rename replaces a symbolic link
// planted there instead of writing through it. A temporary file left by
// a run killed mid-write is removed first.
func WriteLastFlush(dir, host string, l LastFlush) error {
	p := statePath(dir, host)
	if err := removeStaleTemps(dir, strings.TrimSuffix(tempPattern(p), "*"), func(Event) {}); err != nil {
		return err
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return WriteFileAtomic(p, 0o600, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// ReadLastFlush reads host's state file in dir; nil when there is none.
// A symbolic link or anything but a regular file there is refused.
func ReadLastFlush(dir, host string) (*LastFlush, error) {
	p := statePath(dir, host)
	f, err := openRegular(p, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", p, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxState))
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", p, err)
	}
	var l LastFlush
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("state file %s: %w", p, err)
	}
	return &l, nil
}
