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

	"golang.org/x/sys/unix"

	"etrnflush/bsmtp"
)

// dirSpool serves Exim's one-message-per-file directory. Exim writes each
// file under a temp.* name and links it to its final name when complete,
// so no locks are needed; a finished file is never written by Exim again.
type dirSpool struct {
	o      Options
	d, b   string
	names  []string // finished files still to read, oldest first
	fifo   []*Message
	files  []*dirFile // files with messages in flight or still to yield
	closed bool
}

type dirFile struct {
	s       *dirSpool
	name    string
	path    string
	f       *os.File
	idBase  string
	entries []dirEntry
	next    int // next entry to hand out
	out     int // handed out, not settled
	dirty   bool
	done    bool
}

type dirEntry struct {
	e  bsmtp.Entry
	st []byte // per recipient; 'k' until a final answer
}

func newDirSpool(o Options, d, b string) (*dirSpool, error) {
	ents, err := os.ReadDir(o.Path)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", o.Path, err)
	}
	type cand struct {
		name  string
		mtime time.Time
	}
	var cs []cand
	for _, e := range ents {
		n := e.Name()
		if !o.DryRun && staleTemp(e, ".") {
			// Ours, from a rewrite a killed run left; Exim writes no
			// dot files here.
			if err := removeTemp(o.Path, n, o.Report); err != nil {
				return nil, err
			}
			continue
		}
		if strings.HasPrefix(n, ".") || strings.HasPrefix(n, "temp.") {
			continue
		}
		// Info is an lstat: a symlink is skipped, never followed.
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("spool %s: %w", o.Path, err)
		}
		if !fi.Mode().IsRegular() {
			o.Report(Event{Kind: "notice", ID: n, Reason: "skipped: not a regular file (" + fi.Mode().Type().String() + ")"})
			continue
		}
		cs = append(cs, cand{n, fi.ModTime()})
	}
	sort.Slice(cs, func(i, j int) bool {
		if !cs[i].mtime.Equal(cs[j].mtime) {
			return cs[i].mtime.Before(cs[j].mtime)
		}
		return cs[i].name < cs[j].name
	})
	s := &dirSpool{o: o, d: d, b: b}
	for _, c := range cs {
		s.names = append(s.names, c.name)
	}
	return s, nil
}

func (s *dirSpool) Layout() string { return "bsmtp-dir" }

func (s *dirSpool) Next() (*Message, error) {
	if s.closed {
		return nil, errors.New("spool: next after close")
	}
	for {
		var df *dirFile
		if n := len(s.files); n > 0 && s.files[n-1].next < len(s.files[n-1].entries) {
			df = s.files[n-1]
		}
		if df == nil {
			if len(s.names) == 0 {
				return nil, io.EOF
			}
			name := s.names[0]
			s.names = s.names[1:]
			var err error
			if df, err = s.openFile(name); err != nil {
				return nil, err
			}
			if df == nil {
				continue
			}
			s.files = append(s.files, df)
		}
		de := &df.entries[df.next]
		df.next++
		msg := de.e.Msg
		var idx []int
		for i, c := range de.st {
			if c == 'k' {
				idx = append(idx, i)
			}
		}
		to := make([]string, len(idx))
		for i, j := range idx {
			to[i] = msg.To[j]
		}
		sec := io.NewSectionReader(df.f, msg.DataStart, msg.DataEnd-msg.DataStart)
		m := &Message{
			ID: df.idBase + "@" + strconv.FormatInt(de.e.Start, 10), From: msg.From, To: to,
			Size: msg.Size, EightBit: msg.EightBit,
			Open: func() (io.ReadCloser, error) {
				return io.NopCloser(bsmtp.Unstuff(io.NewSectionReader(sec, 0, sec.Size()))), nil
			},
			ref: &msgRef{owner: df, off: int64(df.next - 1), env: msg.Envelope, idx: idx, prev: append([]byte(nil), de.st...),
				section: sec, crlf: msg.CRLF, dataSize: sec.Size()},
		}
		df.out++
		s.fifo = append(s.fifo, m)
		return m, nil
	}
}

// openFile reads one finished file whole (Exim writes one message per
// file). Damage moves the file to quarantine. nil, nil: nothing to yield.
func (s *dirSpool) openFile(name string) (*dirFile, error) {
	p := filepath.Join(s.o.Path, name)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ELOOP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	df := &dirFile{s: s, name: name, path: p, f: f}
	keep := false
	defer func() {
		if !keep {
			_ = f.Close() // read-only; nothing to lose
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("fstat %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	df.idBase = name + "." + genTag(fi.ModTime())
	rd := bsmtp.NewReader(io.NewSectionReader(f, 0, fi.Size()))
	var damage []string
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if e.Msg == nil {
			damage = append(damage, fmt.Sprintf("line %d: %s", e.Line, e.Damage))
			continue
		}
		st := make([]byte, len(e.Msg.To))
		for i := range st {
			st[i] = 'k'
		}
		df.entries = append(df.entries, dirEntry{e: e, st: st})
	}
	if len(df.entries) == 0 && len(damage) == 0 {
		damage = append(damage, "no message in file")
	}
	if len(damage) > 0 {
		return nil, s.quarantineFile(df, fi.Size(), strings.Join(damage, "; "))
	}
	keep = true
	return df, nil
}

// quarantineFile moves a damaged file aside whole: the reason first, so a
// crash leaves at worst a .why whose redo overwrites it.
func (s *dirSpool) quarantineFile(df *dirFile, size int64, why string) error {
	id := df.idBase
	if s.o.DryRun {
		s.o.Report(Event{Kind: "quarantine", ID: id, Reason: "would quarantine: " + why, Size: size})
		return nil
	}
	qd := quarantineDir(s.d, s.b)
	if err := mkdirPrivate(qd); err != nil {
		return err
	}
	err := WriteFileAtomic(filepath.Join(qd, id+".why"), 0o600, func(w io.Writer) error {
		_, err := io.WriteString(w, oneLine(why))
		return err
	})
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", id, err)
	}
	if err := os.Rename(df.path, filepath.Join(qd, id+".bsmtp")); err != nil {
		return fmt.Errorf("quarantine %s: %w", id, err)
	}
	if err := syncDir(qd); err != nil {
		return err
	}
	if err := syncDir(s.o.Path); err != nil {
		return err
	}
	s.o.Report(Event{Kind: "quarantine", ID: id, Reason: why, Size: size})
	return nil
}

func (s *dirSpool) Settle(m *Message, out []Outcome, reason string) error {
	var head *Message
	if len(s.fifo) > 0 {
		head = s.fifo[0]
	}
	if err := checkSettle(m, head, out); err != nil {
		return err
	}
	r := m.ref
	df := r.owner.(*dirFile)
	r.settled = true
	s.fifo = s.fifo[1:]
	df.out--
	if s.o.DryRun {
		return s.release(df)
	}
	st, changed, err := applyOutcomes(s.d, s.b, m, out, reason)
	if err != nil {
		return err
	}
	if changed {
		df.entries[r.off].st = st
		df.dirty = true
		if err := df.rewrite(); err != nil {
			return fmt.Errorf("settle %s: %w", m.ID, err)
		}
	}
	return s.release(df)
}

// rewrite stores what the file still holds: every entry not yet settled
// whole, settled ones with their pending recipients; no file when nothing
// is pending.
func (df *dirFile) rewrite() error {
	var pending bool
	for _, de := range df.entries {
		if strings.IndexByte(string(de.st), 'k') >= 0 {
			pending = true
		}
	}
	if !pending {
		if err := os.Remove(df.path); err != nil {
			return fmt.Errorf("remove %s: %w", df.path, err)
		}
		df.done = true
		return syncDir(df.s.o.Path)
	}
	return WriteFileAtomic(df.path, 0o600, func(w io.Writer) error {
		bw := bsmtp.NewWriter(w)
		for _, de := range df.entries {
			env := bsmtp.Envelope{From: de.e.Msg.From}
			for i, c := range de.st {
				if c == 'k' {
					env.To = append(env.To, de.e.Msg.To[i])
				}
			}
			if len(env.To) == 0 {
				continue
			}
			sec := io.NewSectionReader(df.f, de.e.Msg.DataStart, de.e.Msg.DataEnd-de.e.Msg.DataStart)
			if err := bw.WriteStuffed(env, sec, de.e.Msg.CRLF); err != nil {
				return err
			}
		}
		return nil
	})
}

// release closes a file once all its entries are handed out and settled.
func (s *dirSpool) release(df *dirFile) error {
	if df.out > 0 || df.next < len(df.entries) || df.f == nil {
		return nil
	}
	for i, x := range s.files {
		if x == df {
			s.files = append(s.files[:i], s.files[i+1:]...)
			break
		}
	}
	err := df.f.Close()
	df.f = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", df.path, err)
	}
	return nil
}

func (s *dirSpool) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	// Unsettled and unread entries are still in the files as they were
	// written last: nothing to do but close.
	for _, df := range s.files {
		if df.f != nil {
			if err := df.f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", df.path, err))
			}
			df.f = nil
		}
	}
	s.files, s.fifo = nil, nil
	return errors.Join(errs...)
}
