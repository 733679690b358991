package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"etrnflush/bsmtp"
)

// The journal records, per work file, what happened to each message since
// the file was last rewritten. Each run appends one segment ("run" line)
// whose records are in increasing offset order, so the file can be
// merge-walked with the parse using one cursor per segment, and memory
// stays flat in the number of messages. A later segment overrides an earlier
// one. Records:
//
//	<offset> <one of s,f,k per recipient>   message outcome
//	<offset> q<end>                        region [offset,end) quarantined
//
// The end is kept for q so that a region that grew since (a late append
// after an incomplete tail) is not skipped on the strength of an old copy.

const journalMagic = "etrnflush-journal 1"

// maxRecordLine bounds a journal line: an offset, a space, one status
// octet per recipient and the newline. A buffer of this size reads any
// record a valid message can produce.
const maxRecordLine = 32 + bsmtp.MaxRecipients

type journal struct {
	path     string
	dev, ino uint64
	segs     [][2]int64 // byte ranges of the segments found when loaded
	valid    int64      // length up to the last complete line
	exists   bool
	records  bool // any record, loaded or written in this run
	started  bool // this run's segment marker is written
	f        *os.File
	unsynced int       // records written since the last fsync began
	since    time.Time // when the first of them was written
	// syncing is closed when the background fsync in flight ends (nil:
	// none); syncErr is what it returned, read only after that.
	syncing  chan struct{}
	syncErr  error
	reserved int64  // the file's blocks are allocated up to here (fallocate)
	buf      []byte // appendRecords' line buffer
	noAlloc  bool   // the file system cannot preallocate
}

// A record is in the kernel when appendRecords returns, which is all a
// kill -9 needs. The fsync that makes it survive a power failure is
// shared by up to journalSyncEvery records or journalSyncAfter, runs in
// the background while the flush goes on, and is done again at close:
// one fsync per message halved the throughput, a blocking one every 32
// cost a sixth of a fast flush's time, and one in the background every
// 32 still a tenth of its CPU (about 100 fsyncs for 3,000 messages).
// The worst a lost record can do is send its message again, as for the
// messages in flight; on a slow link the time bound is the one that
// counts. A failed background fsync fails the next record.
const (
	journalSyncEvery = 256
	journalSyncAfter = 200 * time.Millisecond
)

type record struct {
	off int64
	st  string // status chars, or "q<end>"
}

// loadJournal reads path. ok=false with a nil error means there is no
// usable journal for the work file (dev, ino): none, or a stale one.
func loadJournal(path string, dev, ino uint64) (j *journal, stale bool, err error) {
	j = &journal{path: path, dev: dev, ino: ino}
	f, err := openRegular(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return j, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("journal %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("journal %s: close: %w", path, cerr)
		}
	}()
	br := bufio.NewReaderSize(f, maxRecordLine)
	var pos int64
	head, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, fmt.Errorf("journal %s: %w", path, err)
	}
	if !strings.HasSuffix(head, "\n") || !sameInode(strings.TrimSuffix(head, "\n"), ino) {
		// Written for another inode: the work file was rewritten (compacted)
		// after it, so everything it says is already applied.
		return j, true, nil
	}
	pos = int64(len(head))
	j.exists, j.valid = true, pos
	cur := int64(-1)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, false, fmt.Errorf("journal %s: line too long at %d", path, pos)
		}
		if err != nil {
			break // a torn last line without its newline is not a record
		}
		if bytes.Equal(line, []byte("run\n")) {
			if cur >= 0 {
				j.segs = append(j.segs, [2]int64{cur, pos})
			}
			cur = pos + int64(len(line))
		} else if _, ok := parseRecord(line); ok && cur >= 0 {
			j.records = true
		}
		pos += int64(len(line))
		j.valid = pos
	}
	if cur >= 0 {
		j.segs = append(j.segs, [2]int64{cur, j.valid})
	}
	return j, false, nil
}

func journalHeader(dev, ino uint64) string {
	return fmt.Sprintf("%s %d %d", journalMagic, dev, ino)
}

// sameInode checks a journal header against the work file's inode. The
// device number is written for the admin's eyes only: LVM and md devices
// may be renumbered by the very reboot a journal has to survive, while
// the work file and its journal always share a file system.
func sameInode(head string, ino uint64) bool {
	f := strings.Fields(head)
	return len(f) == 4 && f[0]+" "+f[1] == journalMagic && f[3] == strconv.FormatUint(ino, 10)
}

func parseRecord(line []byte) (record, bool) {
	s := strings.TrimSuffix(string(line), "\n")
	sp := strings.IndexByte(s, ' ')
	if sp <= 0 {
		return record{}, false
	}
	off, err := strconv.ParseInt(s[:sp], 10, 64)
	if err != nil || off < 0 {
		return record{}, false
	}
	st := s[sp+1:]
	if st == "" {
		return record{}, false
	}
	if st[0] == 'q' {
		end, err := strconv.ParseInt(st[1:], 10, 64)
		if err != nil || end <= off {
			return record{}, false
		}
		return record{off, st}, true
	}
	for i := 0; i < len(st); i++ {
		if st[i] != 's' && st[i] != 'f' && st[i] != 'k' {
			return record{}, false
		}
	}
	return record{off, st}, true
}

// journalView says what the journal's record (rec, has) for entry e leaves
// of it, the same for a run's walk and for the compaction:
//   - resume > 0: an earlier pass quarantined [e.Start,resume), an
//     incomplete tail, and a late append now reads as part of the same
//     entry; the tail keeps its boundary and reading resumes there;
//   - quarantined: e was quarantined as it stands;
//   - else st: the stored statuses of a message ("" when none).
func journalView(e bsmtp.Entry, rec record, has bool) (resume int64, quarantined bool, st string) {
	if !has {
		return 0, false, ""
	}
	q := rec.quarantinedTo()
	switch {
	case q > e.Start && q < e.End:
		return q, false, ""
	case q == e.End:
		return 0, true, ""
	case q >= 0:
		return 0, false, ""
	}
	return 0, false, rec.st
}

// quarantinedTo returns the end of a q record, or -1.
func (r record) quarantinedTo() int64 {
	if r.st == "" || r.st[0] != 'q' {
		return -1
	}
	end, _ := strconv.ParseInt(r.st[1:], 10, 64) // validated by parseRecord
	return end
}

// walker looks records up for increasing offsets.
type walker struct {
	curs []*cursor
}

type cursor struct {
	br  *bufio.Reader
	rec record
	ok  bool
}

func (c *cursor) advance() {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			c.ok = false
			return
		}
		if r, ok := parseRecord(line); ok {
			c.rec, c.ok = r, true
			return
		}
	}
}

// newWalker opens one cursor per segment on f, which must stay open while
// the walker is used.
func (j *journal) newWalker(f io.ReaderAt) *walker {
	w := &walker{}
	for _, s := range j.segs {
		c := &cursor{br: bufio.NewReaderSize(io.NewSectionReader(f, s[0], s[1]-s[0]), maxRecordLine)}
		c.advance()
		w.curs = append(w.curs, c)
	}
	return w
}

// lookup returns the latest record for off. Offsets must not decrease
// between calls.
func (w *walker) lookup(off int64) (record, bool) {
	var found record
	ok := false
	for _, c := range w.curs {
		for c.ok && c.rec.off < off {
			c.advance()
		}
		if c.ok && c.rec.off == off {
			found, ok = c.rec, true
		}
	}
	return found, ok
}

// openForWalk opens the journal file for a walker; nil when there is none.
func (j *journal) openForWalk() (*os.File, error) {
	if !j.exists || len(j.segs) == 0 {
		return nil, nil
	}
	f, err := openRegular(j.path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.path, err)
	}
	return f, nil
}

// appendRecords records recs (see journalSyncEvery for when they reach
// the disk). The first call in a run creates the
// journal (header written atomically) or cuts off a torn last line, and
// starts a segment; newSegment forces a fresh one (records out of order with
// the current segment).
func (j *journal) appendRecords(recs []record, newSegment bool) error {
	if err := j.open(); err != nil {
		return err
	}
	if err := j.reap(false); err != nil {
		return err
	}
	// Built in a buffer kept across records: one record per message
	// made a Builder, a formatted print and a copy each.
	b := j.buf[:0]
	if !j.started || newSegment {
		b = append(b, "run\n"...)
		j.started = true
	}
	for _, r := range recs {
		b = strconv.AppendInt(b, r.off, 10)
		b = append(b, ' ')
		b = append(b, r.st...)
		b = append(b, '\n')
	}
	j.buf = b
	if _, err := j.f.WriteAt(b, j.valid); err != nil {
		return fmt.Errorf("journal %s: write: %w", j.path, err)
	}
	j.valid += int64(len(b))
	if len(recs) > 0 {
		j.records = true
	}
	if j.unsynced == 0 {
		j.since = time.Now()
	}
	j.unsynced += len(recs)
	if j.syncing == nil && (j.unsynced >= journalSyncEvery || time.Since(j.since) >= journalSyncAfter) {
		j.syncBackground()
	}
	return nil
}

// syncBackground starts an fsync of what was written so far. While one
// runs, records accumulate for the next.
func (j *journal) syncBackground() {
	done := make(chan struct{})
	j.syncing, j.unsynced = done, 0
	f := j.f
	go func() {
		if err := f.Sync(); err != nil {
			j.syncErr = fmt.Errorf("journal %s: fsync: %w", j.path, err)
		}
		close(done)
	}()
}

// reap collects the background fsync: when it has ended, or with wait
// until it has. Its failure is returned once.
func (j *journal) reap(wait bool) error {
	if j.syncing == nil {
		return nil
	}
	if !wait {
		select {
		case <-j.syncing:
		default:
			return nil
		}
	} else {
		<-j.syncing
	}
	j.syncing = nil
	err := j.syncErr
	j.syncErr = nil
	return err
}

// open creates the journal (header written atomically) if there is none,
// and opens it for appending, cutting off a torn last line.
func (j *journal) open() error {
	if !j.exists {
		hdr := journalHeader(j.dev, j.ino) + "\n"
		err := WriteFileAtomic(j.path, 0o600, func(w io.Writer) error {
			_, err := io.WriteString(w, hdr)
			return err
		})
		if err != nil {
			return fmt.Errorf("create journal: %w", err)
		}
		j.exists, j.valid = true, int64(len(hdr))
	}
	if j.f == nil {
		f, err := openRegular(j.path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("journal %s: %w", j.path, err)
		}
		// Cut a torn line so that our records start on a line of their own.
		if err := f.Truncate(j.valid); err != nil {
			_ = f.Close() // the truncate error is the one to report
			return fmt.Errorf("journal %s: truncate: %w", j.path, err)
		}
		j.f = f
		j.reserved = j.valid
	}
	return nil
}

// reserveSlack is allocated beyond what is owed, so that a reservation is
// a system call every few thousand messages, not one per message.
const reserveSlack = 64 << 10

// reserve makes sure that need more octets of records can be written
// without the file system allocating anything: the journal is created and
// its blocks allocated past its end (fallocate with KEEP_SIZE, so that
// the file's length, and what a reader sees, stay as they are). A message
// is handed out only once its record is sure to fit: a full disk after
// the dial would lose the outcomes of messages already sent, and the next
// run would send them again, and again on every run after.
func (j *journal) reserve(need int64) error {
	if err := j.open(); err != nil {
		return diskFull(fmt.Errorf("no room to record outcomes, so nothing more is sent: %w", err))
	}
	if j.noAlloc || j.reserved-j.valid >= need {
		return nil
	}
	n := need + reserveSlack
	err := preallocate(j.f, j.valid, n)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
		// NFS before 4.2, some FUSE file systems: the journal exists
		// at least, and each record is a short write.
		j.noAlloc = true
		return nil
	case err != nil:
		return diskFull(fmt.Errorf("no room to record outcomes, so nothing more is sent: journal %s: reserve %d octets: %w", j.path, n, err))
	}
	j.reserved = j.valid + n
	return nil
}

// diskFull puts "disk full" in front of an ENOSPC or EDQUOT error, so
// that the admin need not dig for it at the end of a long line.
func diskFull(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("disk full: %w", err)
	}
	return err
}

// recordLen bounds the journal octets a message's record takes, with room
// for a segment marker.
func recordLen(off int64, rcpts int) int64 {
	return int64(len(strconv.FormatInt(off, 10))) + 1 + int64(rcpts) + 1 + int64(len("run\n"))
}

// sync makes the records written so far survive a power failure.
func (j *journal) sync() error {
	if err := j.reap(true); err != nil {
		return err
	}
	if j.f == nil || j.unsynced == 0 {
		return nil
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: fsync: %w", j.path, err)
	}
	j.unsynced = 0
	return nil
}

// reload re-reads the segments, including this run's, for a full walk.
func (j *journal) reload() error {
	nj, stale, err := loadJournal(j.path, j.dev, j.ino)
	if err != nil {
		return err
	}
	if stale {
		return fmt.Errorf("journal %s changed under us", j.path)
	}
	j.segs = nj.segs
	return nil
}

func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	serr := j.sync()
	err := j.f.Close()
	j.f = nil
	if err != nil {
		return errors.Join(serr, fmt.Errorf("journal %s: close: %w", j.path, err))
	}
	return serr
}
