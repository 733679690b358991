package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"etrnflush/bsmtp"
)

// bsmtpDir is Exim's one-message-per-file directory (appendfile
// "directory" with use_bsmtp). Exim writes each file under a temp.* name
// and links it to its final name when complete, so no locks are needed;
// a finished file is never written by Exim again.
type bsmtpDir struct{}

// maxDirFileMessages bounds the messages read from one file: each is kept
// in memory until the file is settled. Exim writes one message per file
// in this layout; a file with thousands is not Exim's.
var maxDirFileMessages = 10000

// maxDamageReasons bounds the reasons kept for a damaged file.
const maxDamageReasons = 10

func newDirSpool(o Options, d, b string) (*entrySpool, error) {
	return newEntrySpool(o, d, b, bsmtpDir{})
}

func (bsmtpDir) layout() string { return "bsmtp-dir" }

func (bsmtpDir) list(s *entrySpool) ([]candidate, error) {
	var cs []candidate
	err := listDir(s.o.Path, s.o, func(n string, mtime int64) error {
		if !strings.HasPrefix(n, "temp.") {
			cs = append(cs, candidate{n, mtime})
		}
		return nil
	})
	return cs, err
}

// open reads one finished file whole (Exim writes one message per file,
// but more do no harm).
func (bsmtpDir) open(s *entrySpool, c candidate) (*unit, string, error) {
	p := filepath.Join(s.o.Path, c.name)
	f, fi, err := openEntryFile(p)
	if f == nil {
		if errors.Is(err, errNotRegular) {
			err = nil // changed since the listing; it is not ours to read
		}
		return nil, "", err
	}
	u := &unit{name: p, f: f, size: fi.Size(), idBase: c.name + "." + genTag(fi.ModTime(), inoOf(fi))}
	rd := bsmtp.NewReader(io.NewSectionReader(f, 0, fi.Size()))
	var damage []string
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = f.Close() // read-only
			return nil, "", fmt.Errorf("read %s: %w", p, err)
		}
		reason := ""
		switch {
		case e.Inner != nil:
			// Exim writes these files whole under a temp.* name, so this
			// is no torn append of Exim's; the file goes to quarantine
			// whole rather than being cut on a guess.
			reason = fmt.Sprintf("line %d: a BSMTP envelope (MAIL FROM, RCPT TO and DATA lines) at line %d inside the entry", e.Line, e.Inner.Line)
		case e.Msg == nil:
			reason = fmt.Sprintf("line %d: %s", e.Line, e.Damage)
		case e.Msg.HeaderProblem != "":
			reason = fmt.Sprintf("line %d: header block is not RFC 5322 header lines (%s)", e.Line, e.Msg.HeaderProblem)
		}
		if reason != "" {
			damage = append(damage, reason)
			if len(damage) == maxDamageReasons {
				// The file goes to quarantine whole; the rest is not read.
				damage = append(damage, "(not read further)")
				break
			}
			continue
		}
		if len(u.msgs) == maxDirFileMessages {
			u.msgs = nil
			damage = append(damage, fmt.Sprintf("more than %d messages in one file", maxDirFileMessages))
			break
		}
		m := e.Msg
		u.msgs = append(u.msgs, unitMsg{
			env: m.Envelope, off: e.Start, stuffed: true, crlf: m.CRLF, size: m.Size, wire: m.WireSize(), eight: m.EightBit,
			data: io.NewSectionReader(f, m.DataStart, m.DataEnd-m.DataStart),
			st:   pendingStatus(len(m.To)),
		})
	}
	return u, strings.Join(damage, "; "), nil
}

// pendingStatus is the status of n recipients none of which has an answer.
func pendingStatus(n int) []byte {
	return []byte(strings.Repeat("k", n))
}

// rewrite stores what the file still holds: every message not yet settled
// whole, settled ones with their pending recipients.
func (bsmtpDir) rewrite(_ *entrySpool, u *unit) error {
	fi, err := u.f.Stat()
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", u.name, err)
	}
	// Dated like the old file, so that it keeps its place in the order,
	// but one nanosecond later: the ids of the messages, and the names of
	// their failed copies, carry the date (genTag) and the offset, and a
	// kept message moves to the offset of a settled one. With the same
	// date, its refusal in a later run would replace the settled
	// message's failed copy.
	return writeAtomic(filepath.Dir(u.name), u.name, 0o600, fi.ModTime().Add(time.Nanosecond), false, func(w io.Writer) error {
		bw := bsmtp.NewWriter(w)
		for _, um := range u.msgs {
			env := bsmtp.Envelope{From: um.env.From, To: um.pendingTo()}
			if len(env.To) == 0 {
				continue
			}
			if err := bw.WriteStuffed(env, io.NewSectionReader(um.data, 0, um.data.Size()), um.crlf); err != nil {
				return err
			}
		}
		return nil
	})
}

func (bsmtpDir) remove(s *entrySpool, u *unit) error {
	if err := os.Remove(u.name); err != nil {
		return fmt.Errorf("remove %s: %w", u.name, err)
	}
	return syncDir(s.o.Path)
}

func (bsmtpDir) quarantine(s *entrySpool, u *unit, qd, id string) error {
	if _, err := moveNoReplace(u.name, filepath.Join(qd, id+".bsmtp")); err != nil {
		return err
	}
	return syncDir(s.o.Path)
}
