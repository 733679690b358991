package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"etrnflush/bsmtp"
)

// growthLockTimeout bounds the wait for the fcntl lock on a work file
// before deciding whether it grew (an Exim delivery may be writing).
var growthLockTimeout = 5 * time.Second

// errNothingPending aborts a compaction that found nothing left to keep.
var errNothingPending = errors.New("nothing pending")

const (
	wUnopened = iota
	wParsing
	wExhausted
	wFinished
)

type fileSpool struct {
	o         Options
	d, base   string
	prefix    string
	works     []*workFile
	hasPath   bool // Path existed at Open (the claim is still tried lazily)
	claimed   bool
	lastNanos int64
	fifo      []*item // handed out (messages) or quarantined (damage) but not yet journaled, in order
	closed    bool
	spare     spares // content buffers of settled messages (see heldContent)
}

// workFile is one claimed batch. Its bytes are only ever appended to (by
// a late Exim delivery) or replaced as a whole by compaction.
type workFile struct {
	s       *fileSpool
	path    string
	nanos   int64
	inPlace bool // dry run reading Exim's file itself
	f       *os.File
	idBase  string
	mtime   time.Time // of the claimed file: its last append
	state   int
	rd      *bsmtp.Reader
	held    *heldTee // what rd read, for the content of small messages
	parsed  int64    // end of the last complete entry
	lastLn  int      // line number of the entry that starts at parsed, if known
	jr      *journal
	wk      *walker
	wkFile  *os.File
	out     int   // fifo items of this file: messages not settled, q records not written
	owed    int64 // journal octets reserved for them (see journal.reserve)
	// irregular is set when this run met anything but whole messages
	// settled for good: a recipient kept, damage, a resumed or torn
	// entry, a record not written. Without it, and with the file parsed
	// to its end and nothing in flight, finish knows without re-reading
	// the file that compaction would keep nothing (see finish).
	irregular bool
}

type item struct {
	w   *workFile
	m   *Message // nil: a quarantined region whose q record is due
	off int64
	end int64
	rl  int64 // journal octets owed for its record
}

func newFileSpool(o Options, d, b string, works, journals []int64, hasPath bool) (*fileSpool, error) {
	s := &fileSpool{o: o, d: d, base: b, prefix: workPrefix(b), hasPath: hasPath}
	have := map[int64]bool{}
	for _, n := range works {
		have[n] = true
		s.works = append(s.works, s.newWork(n))
		s.lastNanos = n
	}
	for _, n := range journals {
		if have[n] || o.DryRun {
			continue
		}
		// The work file was removed and the crash came before its journal.
		p := filepath.Join(d, s.prefix+fmt.Sprintf("%020d", n)+".journal")
		if err := removeIfExists(p); err != nil {
			return nil, err
		}
		o.Report(Event{Kind: "orphan", ID: fmt.Sprintf("%020d", n), Reason: "removed journal without work file " + p})
	}
	return s, nil
}

func (s *fileSpool) newWork(nanos int64) *workFile {
	return &workFile{s: s, nanos: nanos, path: filepath.Join(s.d, workName(s.prefix, nanos))}
}

func (s *fileSpool) Layout() string { return "bsmtp-file" }

func (s *fileSpool) Next() (*Message, error) {
	if s.closed {
		return nil, errors.New("spool: next after close")
	}
	for {
		var w *workFile
		for _, x := range s.works {
			if x.state < wExhausted {
				w = x
				break
			}
		}
		if w == nil {
			if s.claimed {
				return nil, io.EOF
			}
			s.claimed = true
			if err := s.claimPath(); err != nil {
				return nil, err
			}
			continue
		}
		m, err := w.next()
		if errors.Is(err, errNotRegular) && w.state == wUnopened {
			// The work file or its journal is a symlink, a FIFO or
			// the like: not ours to read, and no reason to keep the
			// other batches from going out.
			w.state = wFinished
			s.o.Report(Event{Kind: "notice", ID: filepath.Base(w.path), Reason: "skipped: " + err.Error()})
			continue
		}
		if err != nil {
			return nil, err
		}
		if m != nil {
			rl := recordLen(m.ref.off, len(m.ref.env.To))
			if !s.o.DryRun {
				if err := w.jr.reserve(w.owed + rl); err != nil {
					// Not handed out: it stays pending, and nothing
					// is sent that could not be recorded.
					w.out--
					return nil, err
				}
			}
			w.owed += rl
			s.fifo = append(s.fifo, &item{w: w, m: m, off: m.ref.off, rl: rl})
			return m, nil
		}
		if err := s.drain(); err != nil {
			return nil, err
		}
		if err := w.maybeFinish(); err != nil {
			return nil, err
		}
	}
}

// claimPath takes Exim's file, or in a dry run reads it where it is.
func (s *fileSpool) claimPath() error {
	fi, err := os.Lstat(s.o.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil && !fi.Mode().IsRegular() {
		// Open let this through because earlier work files are left:
		// those went out; this is not Exim's file.
		s.o.Report(Event{Kind: "notice", ID: s.base, Reason: "skipped: " + s.o.Path + " is " + typeName(fi.Mode()) + ", not Exim's spool file"})
		return nil
	}
	if s.o.DryRun {
		w := &workFile{s: s, path: s.o.Path, inPlace: true}
		s.works = append(s.works, w)
		return nil
	}
	work, size, err := claim(s.o.Path, s.d, s.prefix, s.lastNanos+1, s.o.Report)
	if err != nil {
		return err
	}
	if work == "" {
		return nil
	}
	n := parseWorkName(s.prefix, ".work", filepath.Base(work))
	s.lastNanos = n
	s.works = append(s.works, s.newWork(n))
	s.o.Report(Event{Kind: "claim", ID: fmt.Sprintf("%020d", n), Reason: work, Size: size}) // Reason: the work file
	return nil
}

// drain writes the q records of quarantined regions that are no longer
// behind an unsettled message, keeping each journal segment in order.
func (s *fileSpool) drain() error {
	for len(s.fifo) > 0 && s.fifo[0].m == nil {
		it := s.fifo[0]
		if err := it.w.record(record{it.off, "q" + strconv.FormatInt(it.end, 10)}, false); err != nil {
			return err
		}
		s.fifo = s.fifo[1:]
		it.w.out--
		it.w.owed -= it.rl
		if err := it.w.maybeFinish(); err != nil {
			return err
		}
	}
	return nil
}

// maybeFinish finishes a file once it is read to the end and nothing of
// it is in flight.
func (w *workFile) maybeFinish() error {
	if w.state == wExhausted && w.out == 0 {
		return w.finish(false)
	}
	return nil
}

func (s *fileSpool) Settle(m *Message, out []Outcome, reason string) error {
	var head *Message
	if len(s.fifo) > 0 {
		head = s.fifo[0].m
	}
	if err := checkSettle(m, head, out); err != nil {
		return err
	}
	r := m.ref
	w := r.owner.(*workFile)
	// Whatever happens below, the message is no longer in flight: without
	// a record it counts as fully pending.
	r.settled = true
	if r.held != nil {
		r.held.settle()
	}
	w.owed -= s.fifo[0].rl
	s.fifo = s.fifo[1:]
	w.out--
	if s.o.DryRun {
		return s.drain()
	}
	st, changed, err := applyOutcomes(s.d, s.base, m, out, reason)
	if err != nil {
		w.irregular = true
		return err
	}
	if bytes.IndexByte(st, 'k') >= 0 {
		w.irregular = true
	}
	if changed {
		if err := w.record(record{r.off, string(st)}, false); err != nil {
			return fmt.Errorf("settle %s: %w", m.ID, err)
		}
	}
	if err := s.drain(); err != nil {
		return err
	}
	return w.maybeFinish()
}

func (s *fileSpool) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	// Quarantined regions still behind an unsettled message get their q
	// records now, in a segment of their own.
	seg := map[*workFile]bool{}
	for _, it := range s.fifo {
		if it.m != nil || s.o.DryRun {
			continue
		}
		if err := it.w.record(record{it.off, "q" + strconv.FormatInt(it.end, 10)}, !seg[it.w]); err != nil {
			errs = append(errs, err)
		}
		seg[it.w] = true
	}
	s.fifo = nil
	for _, w := range s.works {
		if w.state == wParsing || w.state == wExhausted {
			if err := w.finish(true); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// open opens the work file and its journal.
func (w *workFile) open() error {
	flag := os.O_RDWR
	if w.s.o.DryRun {
		flag = os.O_RDONLY
	}
	f, err := openRegular(w.path, flag, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", w.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close() // report the fstat error
		return fmt.Errorf("fstat %s: %w", w.path, err)
	}
	ready := func() {
		w.f = f
		w.state = wParsing
		w.readFrom(0, 1)
		w.lastLn = 1
	}
	mtime := time.Unix(st.Mtim.Unix())
	w.mtime = mtime
	if w.inPlace {
		w.idBase = filepath.Base(w.path) + "." + genTag(mtime, st.Ino)
		ready()
		return nil
	}
	w.idBase = fmt.Sprintf("%020d.%s", w.nanos, genTag(mtime, st.Ino))
	jp := w.journalPath()
	jr, stale, err := loadJournal(jp, uint64(st.Dev), st.Ino)
	if err != nil {
		// The file stays unopened: Close then leaves it and its journal
		// for the next run instead of finishing half a state.
		_ = f.Close() // the journal error is the one to report
		return err
	}
	if stale {
		if !w.s.o.DryRun {
			if err := removeIfExists(jp); err != nil {
				_ = f.Close() // report the removal error
				return err
			}
		}
		w.s.o.Report(Event{Kind: "notice", ID: w.idBase, Reason: "removed stale journal " + jp + " (its work file was rewritten)"})
		jr = &journal{path: jp, dev: uint64(st.Dev), ino: st.Ino}
	}
	wkFile, err := jr.openForWalk()
	if err != nil {
		_ = f.Close() // report the journal error
		return err
	}
	w.jr = jr
	w.wkFile = wkFile
	if wkFile != nil {
		w.wk = jr.newWalker(wkFile)
	}
	ready()
	return nil
}

func (w *workFile) journalPath() string {
	return filepath.Join(w.s.d, w.s.prefix+fmt.Sprintf("%020d", w.nanos)+".journal")
}

func (w *workFile) id(off int64) string { return w.idBase + "@" + strconv.FormatInt(off, 10) }

func (w *workFile) lookup(off int64) (record, bool) {
	if w.wk == nil {
		return record{}, false
	}
	return w.wk.lookup(off)
}

// next returns the next message with pending recipients, or nil when the
// file is exhausted (it did not grow under the lock).
func (w *workFile) next() (*Message, error) {
	if w.state == wUnopened {
		if err := w.open(); err != nil {
			return nil, err
		}
	}
	for {
		e, err := w.rd.Next()
		if errors.Is(err, io.EOF) {
			grew, err := w.grew(w.parsed)
			if err != nil {
				return nil, err
			}
			if grew {
				continue
			}
			w.state = wExhausted
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", w.path, err)
		}
		w.held.forget(e.Start)
		rec, has := w.lookup(e.Start)
		resume, quarantined, st := journalView(e, rec, has)
		if resume > 0 {
			w.irregular = true
			ln, err := countLines(w.f, resume)
			if err != nil {
				return nil, err
			}
			w.readFrom(resume, ln)
			w.parsed, w.lastLn = resume, ln
			continue
		}
		if e.Inner != nil && e.Inner.Off > e.Start && !has && e.Inner.InData && !e.Inner.MidLine && !e.Incomplete {
			// An envelope at the start of a line of data: a writer killed
			// right at a line end, or a message quoting an envelope. The
			// two cannot be told apart, and sending the quoted part would
			// mail text to addresses nobody chose: the whole entry, up to
			// its final dot, is quarantined, where nothing is lost.
			what := "the data of the message for " + addrList(e)
			if e.Msg == nil {
				what = "a damaged region (" + e.Damage + ")"
			}
			why := fmt.Sprintf("line %d: %s holds a BSMTP envelope (MAIL FROM, RCPT TO and DATA lines) at the start of line %d: "+
				"a torn append cut at a line end or a message quoting an envelope, which cannot be told apart; the whole entry is quarantined", e.Line, what, e.Inner.Line)
			if err := w.quarantineRegion(e.Start, e.End, e.End, why); err != nil {
				return nil, err
			}
			w.parsed, w.lastLn = e.End, 0
			continue
		}
		if e.Inner != nil && e.Inner.Off > e.Start && !has {
			// A torn append, most likely: never send the fragment, nor
			// anything of the next delivery as part of it. The fragment
			// goes to quarantine and reading resumes at the envelope,
			// where a whole transaction is an ordinary message.
			what := "the data of the message for " + addrList(e)
			if e.Msg == nil {
				what = "a damaged region (" + e.Damage + ")"
			}
			why := fmt.Sprintf("line %d: torn append: %s holds a BSMTP envelope (MAIL FROM, RCPT TO and DATA lines) at line %d; "+
				"the part before it is quarantined and the envelope is read as the start of a message of its own "+
				"(this copy runs on to the end of the entry, octet %d)", e.Line, what, e.Inner.Line, e.End)
			if err := w.quarantineRegion(e.Start, e.Inner.Off, e.End, why); err != nil {
				return nil, err
			}
			w.readFrom(e.Inner.Off, e.Inner.Line)
			w.parsed, w.lastLn = e.Inner.Off, e.Inner.Line
			continue
		}
		if e.Msg != nil && e.Msg.HeaderProblem != "" && !has {
			why := fmt.Sprintf("line %d: message for %s: its header block is not RFC 5322 header lines (%s): "+
				"not written by Exim as one message", e.Line, addrList(e), e.Msg.HeaderProblem)
			if err := w.quarantineRegion(e.Start, e.End, e.End, why); err != nil {
				return nil, err
			}
			w.parsed, w.lastLn = e.End, 0
			continue
		}
		if e.Msg == nil {
			w.irregular = true
			if e.Incomplete {
				grew, err := w.growFrom(e)
				if err != nil {
					return nil, err
				}
				if grew {
					continue
				}
			}
			if !quarantined {
				if err := w.quarantine(e); err != nil {
					return nil, err
				}
			}
			w.parsed, w.lastLn = e.End, 0
			continue
		}
		w.parsed, w.lastLn = e.End, 0
		if quarantined {
			// A whole message set aside (a bad header block, an
			// envelope in its body) by a run that did not get to compact.
			w.irregular = true
			continue
		}
		idx := pendingOf(len(e.Msg.To), st)
		if len(idx) == 0 {
			continue
		}
		w.out++
		return w.message(e, st, idx), nil
	}
}

func (w *workFile) message(e bsmtp.Entry, st string, idx []int) *Message {
	msg := e.Msg
	prev := []byte(st)
	if len(prev) != len(msg.To) {
		prev = make([]byte, len(msg.To))
		for i := range prev {
			prev[i] = 'k'
		}
	}
	sec := io.NewSectionReader(w.f, msg.DataStart, msg.DataEnd-msg.DataStart)
	fromFile := func() (io.ReadCloser, error) {
		return io.NopCloser(bsmtp.Unstuff(io.NewSectionReader(sec, 0, sec.Size()))), nil
	}
	open := fromFile
	var hc *heldContent
	if data := w.held.slice(msg.DataStart, msg.DataEnd); data != nil {
		// Unstuffed once, here: the sender may open the content more
		// than once (a retry in a new session), and it is the same.
		hc = &heldContent{b: bsmtp.AppendUnstuffed(w.s.spare.get(len(data)), data), spare: &w.s.spare}
		open = func() (io.ReadCloser, error) {
			if hc.released {
				return fromFile()
			}
			hc.opens++
			return &heldReader{r: bytes.NewReader(hc.b), hc: hc}, nil
		}
	}
	to := make([]string, len(idx))
	for i, j := range idx {
		to[i] = msg.To[j]
	}
	return &Message{
		ID: w.id(e.Start), From: msg.From, To: to, Size: msg.Size, WireSize: msg.WireSize(), EightBit: msg.EightBit, ModTime: w.mtime,
		Open: open,
		ref:  &msgRef{owner: w, off: e.Start, env: msg.Envelope, idx: idx, prev: prev, section: sec, crlf: msg.CRLF, dataSize: msg.DataEnd - msg.DataStart, held: hc},
	}
}

// readFrom starts parsing at off, the start of line ln.
func (w *workFile) readFrom(off int64, ln int) {
	w.held = &heldTee{r: io.NewSectionReader(w.f, off, 1<<62), base: off, pos: off}
	w.rd = bsmtp.NewReaderAt(w.held, off, ln)
}

// heldTee keeps the octets the parser reads from the current entry on, so
// that a small message's content is handed to the sender from memory: the
// parse has just read it, and reading it from the file again cost a
// system call and a copy per message. A region longer than maxHeld (a
// large message) is not kept; its content is read from the file.
type heldTee struct {
	r    io.Reader
	buf  []byte // the file's octets [base, base+len(buf))
	base int64
	pos  int64 // offset of the next octet read
	off  bool  // over maxHeld since the last forget: nothing is kept
}

// maxHeld bounds what heldTee keeps: the parser's read-ahead (64 KiB)
// and a message of up to maxHeldMsg.
const (
	maxHeldMsg = 64 << 10
	maxHeld    = 4 * maxHeldMsg
)

func (t *heldTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.pos += int64(n)
	if !t.off {
		if len(t.buf)+n > maxHeld {
			t.off, t.buf = true, t.buf[:0]
		} else {
			t.buf = append(t.buf, p[:n]...)
		}
	}
	return n, err
}

// forget drops what lies before off, the start of the entry just read.
func (t *heldTee) forget(off int64) {
	if t.off {
		// What was read since off is gone: keep from what comes next.
		t.off, t.base, t.buf = false, t.pos, t.buf[:0]
		return
	}
	if off <= t.base {
		return
	}
	if off >= t.base+int64(len(t.buf)) {
		t.base, t.buf = t.pos, t.buf[:0]
		return
	}
	n := copy(t.buf, t.buf[off-t.base:])
	t.buf, t.base = t.buf[:n], off
}

// slice returns the file's octets [start,end) when they are held and
// small enough, else nil; they are valid until the next Read.
func (t *heldTee) slice(start, end int64) []byte {
	if t.off || end-start > maxHeldMsg || start < t.base || end > t.base+int64(len(t.buf)) || end <= start {
		return nil
	}
	return t.buf[start-t.base : end-t.base]
}

// heldContent is a message's content in memory. Its buffer goes back to
// the spool's spares, for the next message, once the message is settled
// and every reader of it closed; an Open after that reads the file. A
// buffer a reader was never closed on is left to the collector.
type heldContent struct {
	b        []byte
	spare    *spares
	opens    int // readers not closed yet
	settled  bool
	released bool
}

func (hc *heldContent) settle() {
	hc.settled = true
	hc.release()
}

func (hc *heldContent) release() {
	if hc.released || !hc.settled || hc.opens > 0 {
		return
	}
	hc.released = true
	hc.spare.put(hc.b)
	hc.b = nil
}

// heldReader reads a heldContent; once closed it reads nothing, so that
// it can never see the next message's content in the recycled buffer.
type heldReader struct {
	r  *bytes.Reader
	hc *heldContent
}

var errReadClosed = errors.New("content read after close")

func (r *heldReader) Read(p []byte) (int, error) {
	if r.hc == nil {
		return 0, errReadClosed
	}
	return r.r.Read(p)
}

func (r *heldReader) WriteTo(w io.Writer) (int64, error) {
	if r.hc == nil {
		return 0, errReadClosed
	}
	return r.r.WriteTo(w)
}

func (r *heldReader) Close() error {
	if r.hc != nil {
		hc := r.hc
		r.hc, r.r = nil, nil
		hc.opens--
		hc.release()
	}
	return nil
}

// spares are content buffers of settled messages, reused: a fresh
// allocation per message was most of the bytes a flush allocated, and
// in a short-lived process fresh memory costs page faults too. Every
// Message of a spool is handed out and settled on one goroutine.
type spares struct{ free [][]byte }

// maxSpares bounds the buffers kept: the message window and some.
const maxSpares = 64

func (s *spares) get(n int) []byte {
	for i := len(s.free) - 1; i >= 0; i-- {
		if b := s.free[i]; cap(b) >= n {
			s.free[i] = s.free[len(s.free)-1]
			s.free = s.free[:len(s.free)-1]
			return b[:0]
		}
	}
	return make([]byte, 0, n)
}

func (s *spares) put(b []byte) {
	if len(s.free) < maxSpares && cap(b) <= maxHeldMsg {
		s.free = append(s.free, b)
	}
}

// growFrom handles an incomplete tail: if the file grew under Exim's
// lock, parsing resumes at the start of the tail.
func (w *workFile) growFrom(e bsmtp.Entry) (bool, error) {
	grew, err := w.grewSince(e.End)
	if err != nil || !grew {
		return false, err
	}
	w.readFrom(e.Start, e.Line)
	return true, nil
}

// grew checks, at a clean end, whether a late delivery appended more.
func (w *workFile) grew(at int64) (bool, error) {
	grew, err := w.grewSince(at)
	if err != nil || !grew {
		return false, err
	}
	ln := w.lastLn
	if ln == 0 {
		if ln, err = countLines(w.f, at); err != nil {
			return false, err
		}
	}
	w.readFrom(at, ln)
	return true, nil
}

// grewSince takes the fcntl lock Exim writes under, so that a delivery in
// progress is either complete or not started, and compares the size. A
// dry run takes no lock and trusts what it read.
func (w *workFile) grewSince(at int64) (bool, error) {
	if w.s.o.DryRun {
		return false, nil
	}
	if err := fcntlLock(w.f, growthLockTimeout); err != nil {
		return false, err
	}
	var st unix.Stat_t
	serr := unix.Fstat(int(w.f.Fd()), &st)
	if err := fcntlUnlock(w.f); err != nil {
		return false, err
	}
	if serr != nil {
		return false, fmt.Errorf("fstat %s: %w", w.path, serr)
	}
	return st.Size > at, nil
}

func fcntlUnlock(f *os.File) error {
	lk := unix.Flock_t{Type: unix.F_UNLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		return fmt.Errorf("fcntl unlock %s: %w", f.Name(), err)
	}
	return nil
}

func countLines(r io.ReaderAt, n int64) (int, error) {
	buf := make([]byte, 64<<10)
	lines := 1
	for off := int64(0); off < n; {
		k := int64(len(buf))
		if n-off < k {
			k = n - off
		}
		got, err := r.ReadAt(buf[:k], off)
		for _, c := range buf[:got] {
			if c == '\n' {
				lines++
			}
		}
		off += int64(got)
		if err != nil && off < n {
			return 0, fmt.Errorf("count lines: %w", err)
		}
	}
	return lines, nil
}

// quarantine copies a damaged region aside; its q record follows once the
// messages before it are settled.
func (w *workFile) quarantine(e bsmtp.Entry) error {
	why := fmt.Sprintf("line %d: %s", e.Line, e.Damage)
	if e.Incomplete {
		why += " (incomplete, did not grow under the lock)"
	}
	return w.quarantineRegion(e.Start, e.End, e.End, why)
}

// quarantineRegion quarantines [start,end) of the file: the copy holds
// [start,copyEnd), which may run on past end so that the admin sees all a
// decision was made on.
func (w *workFile) quarantineRegion(start, end, copyEnd int64, why string) error {
	w.irregular = true
	id := w.id(start)
	if w.s.o.DryRun {
		w.s.o.Report(Event{Kind: "quarantine", ID: id, Reason: "would quarantine: " + why, Size: end - start})
		return nil
	}
	// The q record must fit too: without it the next run would
	// quarantine the region again.
	rl := int64(2*len(strconv.FormatInt(end, 10)) + 3 + len("run\n"))
	if err := w.jr.reserve(w.owed + rl); err != nil {
		return fmt.Errorf("quarantine %s: %w", id, err)
	}
	err := writeCopy(quarantineDir(w.s.d, w.s.base), id, func(wr io.Writer) error {
		_, err := io.Copy(wr, io.NewSectionReader(w.f, start, copyEnd-start))
		return err
	}, why)
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", id, err)
	}
	w.s.o.Report(Event{Kind: "quarantine", ID: id, Reason: why, Size: end - start})
	w.owed += rl
	w.s.fifo = append(w.s.fifo, &item{w: w, off: start, end: end, rl: rl})
	w.out++
	return w.s.drain()
}

// addrList names the recipients of a message entry for a reason.
func addrList(e bsmtp.Entry) string {
	if e.Msg == nil {
		return "-"
	}
	var b strings.Builder
	for i, a := range e.Msg.To {
		if i > 0 {
			b.WriteByte(',')
		}
		if i == 3 {
			fmt.Fprintf(&b, "and %d more", len(e.Msg.To)-3)
			break
		}
		b.WriteString("<" + a + ">")
	}
	return b.String()
}

func (w *workFile) record(r record, newSeg bool) error {
	err := w.jr.appendRecords([]record{r}, newSeg)
	if err != nil {
		w.irregular = true
	}
	return err
}

// finish ends this run's use of the work file: removed when nothing is
// pending, compacted when something was settled, else left as it is.
// Unless closing, a file that grew goes back to parsing instead.
func (w *workFile) finish(closing bool) (err error) {
	if w.state == wFinished {
		return nil
	}
	if w.s.o.DryRun {
		w.state = wFinished
		return w.closeFiles()
	}
	if err := fcntlLock(w.f, growthLockTimeout); err != nil {
		if closing {
			// Leave the file and its journal: the next run resumes them.
			w.state = wFinished
			return errors.Join(err, w.closeFiles())
		}
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(w.f.Fd()), &st); err != nil {
		return fmt.Errorf("fstat %s: %w", w.path, err)
	}
	if !closing && st.Size > w.parsed {
		if err := fcntlUnlock(w.f); err != nil {
			return err
		}
		ln, err := countLines(w.f, w.parsed)
		if err != nil {
			return err
		}
		w.readFrom(w.parsed, ln)
		w.state = wParsing
		return nil
	}
	// The fcntl lock stays until closeFiles, so that nothing is appended
	// between the walk and the rename or unlink.
	w.state = wFinished
	defer func() { err = errors.Join(err, w.closeFiles()) }()
	if w.jr == nil {
		return nil
	}
	if !w.jr.records {
		// Created only to reserve room for records that never came:
		// it says nothing, and its preallocated blocks are freed.
		if !w.jr.exists {
			return nil
		}
		if err := w.jr.close(); err != nil {
			return err
		}
		return removeIfExists(w.jr.path)
	}
	if !w.irregular && w.out == 0 && st.Size == w.parsed {
		// Every entry of the file was read in this run and was a message
		// whose every recipient is now sent or failed on record: the
		// compaction would find nothing pending, and re-reading the
		// whole file to learn that cost a tenth of a flush.
		err = errNothingPending
	} else {
		if err := w.jr.reload(); err != nil {
			return err
		}
		err = WriteFileAtomic(w.path, 0o600, func(out io.Writer) error {
			return w.compact(out, st.Size)
		})
	}
	switch {
	case errors.Is(err, errNothingPending):
		if err := os.Remove(w.path); err != nil {
			return fmt.Errorf("remove %s: %w", w.path, err)
		}
		if err := syncDir(w.s.d); err != nil {
			return err
		}
	case err != nil:
		// The journal keeps every outcome: the next run resumes from it.
		return diskFull(fmt.Errorf("compact %s: %w", w.path, err))
	}
	// A crash before this leaves a journal for an inode that no longer
	// exists under the name: it is recognised as stale and removed.
	if err := w.jr.close(); err != nil {
		return err
	}
	return removeIfExists(w.jr.path)
}

// compact writes what is still pending: messages with only their pending
// recipients, and damage not quarantined yet, verbatim.
func (w *workFile) compact(out io.Writer, size int64) (err error) {
	jf, err := w.jr.openForWalk()
	if err != nil {
		return err
	}
	var wk *walker
	if jf != nil {
		defer func() {
			if cerr := jf.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("journal: close: %w", cerr)
			}
		}()
		wk = w.jr.newWalker(jf)
	}
	rd := bsmtp.NewReader(io.NewSectionReader(w.f, 0, size))
	bw := bsmtp.NewWriter(out)
	kept := false
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		var rec record
		has := false
		if wk != nil {
			rec, has = wk.lookup(e.Start)
		}
		resume, quarantined, st := journalView(e, rec, has)
		if resume > 0 {
			rd = bsmtp.NewReaderAt(io.NewSectionReader(w.f, resume, size-resume), resume, 0)
			continue
		}
		if quarantined {
			continue
		}
		if e.Msg == nil {
			kept = true
			if _, err := io.Copy(out, io.NewSectionReader(w.f, e.Start, e.End-e.Start)); err != nil {
				return fmt.Errorf("copy damage: %w", err)
			}
			continue
		}
		idx := pendingOf(len(e.Msg.To), st)
		if len(idx) == 0 {
			continue
		}
		kept = true
		env := bsmtp.Envelope{From: e.Msg.From}
		for _, j := range idx {
			env.To = append(env.To, e.Msg.To[j])
		}
		sec := io.NewSectionReader(w.f, e.Msg.DataStart, e.Msg.DataEnd-e.Msg.DataStart)
		if err := bw.WriteStuffed(env, sec, e.Msg.CRLF); err != nil {
			return fmt.Errorf("write message at %d: %w", e.Start, err)
		}
	}
	if !kept {
		return errNothingPending
	}
	return nil
}

func (w *workFile) closeFiles() error {
	var errs []error
	if w.wkFile != nil {
		if err := w.wkFile.Close(); err != nil {
			errs = append(errs, fmt.Errorf("journal: close: %w", err))
		}
		w.wkFile, w.wk = nil, nil
	}
	if w.jr != nil {
		errs = append(errs, w.jr.close())
	}
	if w.f != nil {
		if err := w.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", w.path, err))
		}
		w.f = nil
	}
	return errors.Join(errs...)
}
