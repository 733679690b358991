package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"etrnflush/bsmtp"
)

// entrySpool serves the layouts in which the spool is a directory of
// entries that Exim writes once, complete, and never touches again: the
// one-message-per-file BSMTP directory, the mailstore .env/.msg pairs and
// the maildir. No locks are needed; an entry is read when its turn comes,
// settled by rewriting or removing it, and damage moves it to quarantine.
// What differs per layout is behind entryKind.
type entrySpool struct {
	o      Options
	d, b   string
	kind   entryKind
	names  []candidate // entries still to read, oldest first
	fifo   []*Message
	units  []*unit // entries with messages in flight or still to yield
	closed bool
}

// candidate is a complete entry found by the listing.
type candidate struct {
	name  string // the kind's key: a file name, a pair's base, "new/NAME"
	mtime int64  // nanoseconds, for the oldest-first order
}

// entryKind is what one layout supplies to entrySpool.
type entryKind interface {
	layout() string
	// list names the complete entries, in any order, reporting what it
	// passes by.
	list(s *entrySpool) ([]candidate, error)
	// open reads an entry. A nil unit means it is gone; damage means it
	// cannot be read with certainty and goes to quarantine (the unit then
	// names its files but holds no messages).
	open(s *entrySpool, c candidate) (u *unit, damage string, err error)
	// rewrite stores u with only its pending recipients; some are.
	rewrite(s *entrySpool, u *unit) error
	// remove deletes u: nothing in it is pending.
	remove(s *entrySpool, u *unit) error
	// quarantine moves u's files into qd, named after id; the reason is
	// written already.
	quarantine(s *entrySpool, u *unit, qd, id string) error
}

// unit is one opened entry.
type unit struct {
	name   string
	f      *os.File // the message data, open while messages are out
	size   int64    // of the entry, for the quarantine log line
	idBase string
	msgs   []unitMsg
	next   int       // next message to hand out
	out    int       // handed out, not settled
	aux    any       // the kind's own
	mtime  time.Time // the candidate's, for Message.Time and ModTime
}

// unitMsg is one message of an entry.
type unitMsg struct {
	env     bsmtp.Envelope
	off     int64             // where it starts in the entry, for its ID
	data    *io.SectionReader // stuffed (BSMTP) or as it is to be sent
	stuffed bool
	crlf    bool
	noEOL   bool // plain data whose last line lacks a line end
	size    int64
	wire    int64 // size on the wire when known (spool.Message.WireSize)
	eight   bool
	st      []byte // per recipient; 'k' until a final answer
}

func newEntrySpool(o Options, d, b string, kind entryKind) (*entrySpool, error) {
	s := &entrySpool{o: o, d: d, b: b, kind: kind}
	cs, err := kind.list(s)
	if err != nil {
		return nil, err
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].mtime != cs[j].mtime {
			return cs[i].mtime < cs[j].mtime
		}
		return cs[i].name < cs[j].name
	})
	s.names = cs
	return s, nil
}

func (s *entrySpool) Layout() string { return s.kind.layout() }

func (s *entrySpool) Next() (*Message, error) {
	if s.closed {
		return nil, errors.New("spool: next after close")
	}
	for {
		var u *unit
		if n := len(s.units); n > 0 && s.units[n-1].next < len(s.units[n-1].msgs) {
			u = s.units[n-1]
		}
		if u == nil {
			if len(s.names) == 0 {
				return nil, io.EOF
			}
			c := s.names[0]
			s.names[0] = candidate{} // let the name go
			s.names = s.names[1:]
			var err error
			if u, err = s.openUnit(c); err != nil {
				return nil, err
			}
			if u == nil {
				continue
			}
			s.units = append(s.units, u)
		}
		um := &u.msgs[u.next]
		u.next++
		idx := pendingOf(len(um.env.To), string(um.st))
		to := make([]string, len(idx))
		for i, j := range idx {
			to[i] = um.env.To[j]
		}
		sec := um.data
		ref := &msgRef{owner: u, off: int64(u.next - 1), env: um.env, idx: idx, prev: append([]byte(nil), um.st...),
			section: sec, crlf: um.crlf, dataSize: sec.Size()}
		open := func() (io.ReadCloser, error) {
			return io.NopCloser(bsmtp.Unstuff(io.NewSectionReader(sec, 0, sec.Size()))), nil
		}
		if !um.stuffed {
			noEOL, crlf := um.noEOL, um.crlf
			open = func() (io.ReadCloser, error) {
				return io.NopCloser(io.NewSectionReader(sec, 0, sec.Size())), nil
			}
			// The failed copy is BSMTP, whose data must end in a line end;
			// the sender adds the same one on the wire.
			ref.plain = func() io.Reader {
				r := io.Reader(io.NewSectionReader(sec, 0, sec.Size()))
				if noEOL {
					r = io.MultiReader(r, strings.NewReader(map[bool]string{false: "\n", true: "\r\n"}[crlf]))
				}
				return r
			}
		}
		id := u.idBase
		if len(u.msgs) > 1 || um.stuffed {
			id += "@" + strconv.FormatInt(um.off, 10)
		}
		m := &Message{ID: id, From: um.env.From, To: to, Size: um.size, WireSize: um.wire, EightBit: um.eight, Open: open, ref: ref,
			Time: u.mtime, ModTime: u.mtime}
		u.out++
		s.fifo = append(s.fifo, m)
		return m, nil
	}
}

// openUnit reads one entry; damage moves it to quarantine. nil, nil:
// nothing to yield.
func (s *entrySpool) openUnit(c candidate) (*unit, error) {
	u, damage, err := s.kind.open(s, c)
	if err != nil || u == nil {
		return nil, err
	}
	u.mtime = time.Unix(0, c.mtime)
	if damage == "" && len(u.msgs) == 0 {
		damage = "no message in it"
	}
	if damage != "" {
		if u.f != nil {
			_ = u.f.Close() // read-only; nothing to lose
			u.f = nil
		}
		if err := s.quarantineUnit(u, damage); err != nil {
			// One entry that cannot be moved (a full quarantine file
			// system, a FIFO across file systems, permissions) must not
			// keep the others from going out: it stays where it is, is
			// never sent, and the next run tries again.
			s.o.Report(Event{Kind: "notice", ID: privName(u.idBase),
				Reason: "skipped: damaged (" + damage + ") but could not be quarantined, left in place: " + err.Error()})
		}
		return nil, nil
	}
	return u, nil
}

// quarantineUnit moves a damaged entry aside whole: the reason first, so
// that a crash leaves at worst a .why whose redo overwrites it.
func (s *entrySpool) quarantineUnit(u *unit, why string) error {
	// A maildir name may be long; ours add to it.
	id := privName(u.idBase)
	if s.o.DryRun {
		s.o.Report(Event{Kind: "quarantine", ID: id, Reason: "would quarantine: " + why, Size: u.size})
		return nil
	}
	qd := quarantineDir(s.d, s.b)
	if err := mkdirPrivate(qd); err != nil {
		return err
	}
	var stem string
	err := placeCopy(qd, id, func(st string) error {
		stem = st
		// The reason first: a crash before the move leaves it, and the
		// redo finds it with the same text and uses the same name.
		whyPath := filepath.Join(qd, st+".why")
		created, err := writeOrSame(whyPath, func(w io.Writer) error {
			_, err := io.WriteString(w, oneLine(why))
			return err
		})
		if err != nil {
			return err
		}
		if err := s.kind.quarantine(s, u, qd, st); err != nil {
			if created {
				// A reason without its entry would only mislead.
				_ = os.Remove(whyPath) // best effort; the move error is the one to report
			}
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", id, err)
	}
	if err := syncDir(qd); err != nil {
		return err
	}
	s.o.Report(Event{Kind: "quarantine", ID: stem, Reason: why, Size: u.size})
	return nil
}

func (s *entrySpool) Settle(m *Message, out []Outcome, reason string) error {
	var head *Message
	if len(s.fifo) > 0 {
		head = s.fifo[0]
	}
	if err := checkSettle(m, head, out); err != nil {
		return err
	}
	r := m.ref
	u := r.owner.(*unit)
	r.settled = true
	s.fifo = s.fifo[1:]
	u.out--
	if s.o.DryRun {
		return s.release(u)
	}
	st, changed, err := applyOutcomes(s.d, s.b, m, out, reason)
	if err != nil {
		return err
	}
	if changed {
		u.msgs[r.off].st = st
		if u.pending() {
			err = s.kind.rewrite(s, u)
		} else {
			err = s.kind.remove(s, u)
		}
		if err != nil {
			return fmt.Errorf("settle %s: %w", m.ID, err)
		}
	}
	return s.release(u)
}

// pending reports whether any recipient of u still waits for an answer.
func (u *unit) pending() bool {
	for _, um := range u.msgs {
		if strings.IndexByte(string(um.st), 'k') >= 0 {
			return true
		}
	}
	return false
}

// pendingTo lists the recipients of um still waiting.
func (um *unitMsg) pendingTo() []string {
	var to []string
	for i, c := range um.st {
		if c == 'k' {
			to = append(to, um.env.To[i])
		}
	}
	return to
}

// release closes an entry once all its messages are out and settled.
func (s *entrySpool) release(u *unit) error {
	if u.out > 0 || u.next < len(u.msgs) || u.f == nil {
		return nil
	}
	for i, x := range s.units {
		if x == u {
			s.units = append(s.units[:i], s.units[i+1:]...)
			break
		}
	}
	err := u.f.Close()
	u.f = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", u.name, err)
	}
	return nil
}

func (s *entrySpool) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	// Unsettled and unread messages are still in their entries as last
	// written: nothing to do but close.
	for _, u := range s.units {
		if u.f != nil {
			if err := u.f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", u.name, err))
			}
			u.f = nil
		}
	}
	s.units, s.fifo, s.names = nil, nil, nil
	return errors.Join(errs...)
}

// listDir calls fn for each regular file in dir, in batches so that a
// huge directory is never held in memory twice. Dot files are ours or
// nobody's: our stale temporary files among them are removed (unless
// dry), the rest passed by. Anything not a regular file is reported and
// passed by: a symlink is never followed.
func listDir(dir string, o Options, fn func(name string, mtime int64) error) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", dir, err)
	}
	defer func() { _ = f.Close() }() // read-only listing
	for {
		ents, err := f.ReadDir(4096)
		for _, e := range ents {
			n := e.Name()
			if strings.HasPrefix(n, ".") {
				if !o.DryRun && staleTemp(e, ".") {
					if err := removeTemp(dir, n, o.Report); err != nil {
						return err
					}
				}
				continue
			}
			// Info is an lstat.
			fi, ierr := e.Info()
			if errors.Is(ierr, os.ErrNotExist) {
				continue
			}
			if ierr != nil {
				return fmt.Errorf("spool %s: %w", dir, ierr)
			}
			if !fi.Mode().IsRegular() {
				o.Report(Event{Kind: "notice", ID: n, Reason: "skipped: " + filepath.Join(dir, n) + " is " + typeName(fi.Mode()) + ", not a regular file"})
				continue
			}
			if err := fn(n, fi.ModTime().UnixNano()); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("spool %s: %w", dir, err)
		}
	}
}

// openEntryFile opens a file of an entry for reading without following a
// symlink. nil, nil: it is gone. errNotRegular: it is there but not a
// regular file.
func openEntryFile(p string) (*os.File, os.FileInfo, error) {
	f, err := openRegular(p, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if errors.Is(err, errNotRegular) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", p, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close() // read-only
		return nil, nil, fmt.Errorf("fstat %s: %w", p, err)
	}
	return f, fi, nil
}

// moveInto moves src into qd as name, if src still exists, never
// replacing a file there and copying when qd is on another file system
// (see moveNoReplace).
func moveInto(src, qd, name string) error {
	_, err := moveNoReplace(src, filepath.Join(qd, name))
	return err
}
