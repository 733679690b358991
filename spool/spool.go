// Package spool finds, claims, rewrites and removes the mail Exim holds
// for one host, so that the flush engine only ever sees messages and hands
// back per-recipient outcomes.
//
// Four layouts are handled: one BSMTP file Exim appends to (appendfile
// "file" with use_bsmtp), which is claimed under Exim's own locks by
// renaming it to a private work file, and three directories of entries
// Exim writes once: one BSMTP message per file ("directory" with
// use_bsmtp), mailstore .env/.msg pairs and a maildir. Mail is removed
// only after every recipient got a final answer, and every change is
// durable before Settle returns, so a crash at any instant loses nothing
// and at worst resends the messages that were in flight.
package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"etrnflush/bsmtp"
)

// Options says which spool to open and how.
type Options struct {
	Path   string      // the host's spool: an appended BSMTP file, or a directory (BSMTP files, mailstore, maildir)
	Host   string      // validated, lower-cased host name (for the host lock name)
	Format string      // "auto" | "bsmtp" | "mailstore" | "maildir"
	DryRun bool        // read-only: no claim, no lock file, no writes; Settle is a no-op
	Report func(Event) // quarantine and notices go here (the engine logs them); never nil after Open

	// Mailstore: how many lines Exim's mailstore_prefix and
	// mailstore_suffix put before and after the envelope in each .env.
	MailstorePrefixLines, MailstoreSuffixLines int
	// Maildir: where the envelope is, "exim" ("" too: Return-path: and
	// Envelope-to: on top) or "delivered-to" (qmail style Return-Path:
	// and Delivered-To:, DeliveredToPrefix stripped from the recipient).
	MaildirEnvelope   string
	DeliveredToPrefix string
}

// Event tells the engine about something worth a log line that is not a
// delivery outcome. Kind is "quarantine", "orphan", "notice", "claim" or
// "layout" (what format = "auto" found). For "claim", Reason is the work
// file the spool file was renamed to.
type Event struct {
	Kind   string
	ID     string
	Reason string
	Size   int64
}

// Message is one transaction to replay. To holds only the recipients that
// still need a final answer.
type Message struct {
	ID string // stable within one version of its file: where the spool finds it
	// Key is the id the admin sees in every log line, listing and dry
	// run: it depends on the message alone, not on the file holding it,
	// so it stays the same across runs and partial rewrites (see keyed).
	Key string
	// MessageID is the Message-ID header field, EximID the id Exim gave
	// the message (from the top Received: field), Received that field's
	// date; each empty when the first KeyPrefix octets do not hold it.
	MessageID, EximID string
	Received          time.Time
	From              string
	To                []string
	Size              int64
	// WireSize is the size with CRLF line ends, not dot-stuffed (RFC
	// 1870), when the parse already knows it; 0 when not.
	WireSize int64
	EightBit bool
	Open     func() (io.ReadCloser, error) // content, unstuffed, line ends as stored
	// ModTime is the modification time of the entry holding the message:
	// for an appended file, its last append (so never earlier than the
	// message's arrival), which expiry may use as a lower bound.
	ModTime time.Time
	// Time is ModTime for a one-message-per-file layout and zero for an
	// appended file, whose time says nothing of this message: what a
	// listing shows as the message's own age.
	Time time.Time

	ref *msgRef
}

// msgRef is what Settle needs to find the message again.
type msgRef struct {
	owner    any               // *workFile (appended file) or *unit (entry of a directory)
	off      int64             // entry start
	env      bsmtp.Envelope    // as stored, all recipients
	idx      []int             // index in env.To of each Message.To
	prev     []byte            // status per env.To before this run's outcome
	section  *io.SectionReader // stuffed data
	crlf     bool
	settled  bool
	dataSize int64
	// plain, when set, gives the content as it is to be sent (mailstore,
	// maildir); section is then that content, not dot-stuffed.
	plain func() io.Reader
	held  *heldContent // the content in memory (bsmtp-file, small messages)
}

// Outcome is the final state of one recipient after a delivery attempt.
type Outcome int

const (
	Keep   Outcome = iota // no final answer: try again later
	Sent                  // 2xx after the final dot
	Failed                // 5xx: permanent; a copy goes to the failed folder
)

// Spool is an opened host spool.
type Spool interface {
	// Layout names what was found, for the log: "bsmtp-file",
	// "bsmtp-dir", "mailstore", "maildir" or "none".
	Layout() string
	// Next returns the next message, oldest first, and io.EOF when there
	// are no more. Damage met on the way is quarantined and reported.
	Next() (*Message, error)
	// Settle records the outcome for each of m.To. When it returns, the
	// record survives a kill of the process; a power failure may undo
	// the last few records of an appended-file spool (see
	// journalSyncEvery), which sends those messages again, never loses
	// them. Messages must be settled in the order Next returned them, but
	// Next may run ahead.
	Settle(m *Message, out []Outcome, reason string) error
	// Close finishes: work files are compacted or removed. It must be
	// called, also after an error.
	Close() error
}

// LayoutError means the spool is not in a layout this version handles,
// or not in the one configured. Found is what is there: "mixed",
// "unknown", or a layout name.
type LayoutError struct {
	Path   string
	Found  string
	Reason string
}

func (e *LayoutError) Error() string {
	return fmt.Sprintf("spool %s: %s", e.Path, e.Reason)
}

// Names of our files beside the spool; see the package notes.
func workPrefix(base string) string { return ".etrnflush-" + privName(base) + "." }
func quarantineDir(d, base string) string {
	return filepath.Join(d, ".etrnflush-"+privName(base)+".quarantine")
}
func failedDir(d, base string) string {
	return filepath.Join(d, ".etrnflush-"+privName(base)+".failed")
}

// maxPrivName keeps ".etrnflush-NAME.<20 digits>.journal" and its
// temporary file ("." + that + ".tmp-RANDOM") within the 255-octet limit
// of a file name (a host name may have 253 octets).
const maxPrivName = 150

// privName is name, or for a name too long to carry our prefix and
// suffixes, its first part and a digest of the whole.
func privName(name string) string { return shorten(name, maxPrivName) }

// shorten keeps name if it has at most max octets, else its first part and
// a digest of the whole: distinct names stay distinct and the result is
// the same on every run.
func shorten(name string, max int) string {
	if len(name) <= max {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:8])
	return name[:max-len(h)-1] + "~" + h
}

// Open detects the layout at o.Path and returns a Spool for it. A missing
// path is an empty spool, unless earlier runs left work files beside it.
// Every message it returns carries its stable Key (see keyed).
func Open(o Options) (Spool, error) {
	s, err := openLayout(o)
	if err != nil {
		return nil, err
	}
	return &keyed{Spool: s, seen: map[string]int{}}, nil
}

func openLayout(o Options) (Spool, error) {
	if o.Report == nil {
		o.Report = func(Event) {}
	}
	if o.Path == "" {
		return nil, errors.New("spool: empty path")
	}
	o.Path = filepath.Clean(o.Path)
	switch o.Format {
	case "", "auto", "bsmtp", "maildir", "mailstore":
	default:
		return nil, &LayoutError{Path: o.Path, Found: "unknown", Reason: fmt.Sprintf("unknown spool format %q", o.Format)}
	}
	d, b := filepath.Dir(o.Path), filepath.Base(o.Path)
	works, journals, temps, err := listWork(d, b)
	if err != nil {
		return nil, err
	}
	if !o.DryRun {
		// What a killed run left of its atomic writes, here and in our
		// folders; a message directory's are found by its own listing.
		for _, n := range temps {
			if err := removeTemp(d, n, o.Report); err != nil {
				return nil, err
			}
		}
		for _, dir := range []string{failedDir(d, b), quarantineDir(d, b)} {
			if err := removeStaleTemps(dir, ".", o.Report); err != nil {
				return nil, err
			}
		}
	}
	fi, err := os.Lstat(o.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if len(works) == 0 && len(journals) == 0 {
			return noneSpool{}, nil
		}
		return newFileSpool(o, d, b, works, journals, false)
	case err != nil:
		return nil, fmt.Errorf("spool %s: %w", o.Path, err)
	case fi.Mode().IsRegular():
		if o.Format == "maildir" || o.Format == "mailstore" {
			return nil, &LayoutError{Path: o.Path, Found: "bsmtp-file",
				Reason: "is a file, but format is " + o.Format + ", which is a directory"}
		}
		return newFileSpool(o, d, b, works, journals, true)
	case fi.IsDir():
		layout, auto := o.Format, o.Format == "" || o.Format == "auto"
		if auto {
			if layout, err = classifyDir(o.Path); err != nil {
				return nil, err
			}
		}
		if len(works) > 0 {
			return nil, &LayoutError{Path: o.Path, Found: "mixed",
				Reason: fmt.Sprintf("is a directory, but %d work file(s) of an appended-file spool are left in %s", len(works), d)}
		}
		var s *entrySpool
		switch layout {
		case "mailstore":
			s, err = newMailstoreSpool(o, d, b)
		case "maildir":
			s, err = newMaildirSpool(o, d, b)
		default:
			s, err = newDirSpool(o, d, b)
		}
		if err != nil {
			return nil, err
		}
		if auto {
			o.Report(Event{Kind: "layout", ID: b, Reason: s.Layout() + " (detected)"})
		}
		return s, nil
	case len(works) > 0 || len(journals) > 0:
		// Something planted where Exim's file goes; the batches earlier
		// runs claimed are still ours to send (claimPath passes it by).
		return newFileSpool(o, d, b, works, journals, false)
	default:
		return nil, &LayoutError{Path: o.Path, Found: "unknown", Reason: "neither a regular file nor a directory: it is " + typeName(fi.Mode())}
	}
}

// classifyDir tells from the names in a spool directory which of Exim's
// layouts it holds: "bsmtp" (q... files, temp.* ones in the making),
// "mailstore" (.env, .msg and .tmp files) or "maildir" (new/, cur/, tmp/).
// Dot files are ours. Anything else, or signs of two layouts, is an error:
// guessing would send what is not mail, or miss what is. An empty
// directory holds nothing to send in any layout; it counts as bsmtp.
func classifyDir(path string) (string, error) {
	ents, err := os.ReadDir(path)
	if err != nil {
		return "", fmt.Errorf("spool %s: %w", path, err)
	}
	seen := map[string]string{} // layout -> an example entry
	for _, e := range ents {
		n := e.Name()
		var layout string
		switch {
		case strings.HasPrefix(n, "."):
			continue
		case n == "new" || n == "cur" || n == "tmp":
			layout = "maildir"
			n += "/"
		case n == "maildirsize" || n == "maildirfolder":
			layout = "maildir"
		case !e.IsDir() && (strings.HasSuffix(n, ".env") || strings.HasSuffix(n, ".msg") || strings.HasSuffix(n, ".tmp")):
			layout = "mailstore"
		case !e.IsDir() && (strings.HasPrefix(n, "q") || strings.HasPrefix(n, "temp.")):
			layout = "bsmtp"
		default:
			return "", &LayoutError{Path: path, Found: "unknown",
				Reason: fmt.Sprintf("unexpected entry %q: not a BSMTP (q...), mailstore (*.env, *.msg) or maildir (new/, cur/, tmp/) entry; set format if the names are not Exim's defaults", n)}
		}
		if _, ok := seen[layout]; !ok {
			seen[layout] = n
		}
	}
	switch len(seen) {
	case 0:
		return "bsmtp", nil
	case 1:
		for l := range seen {
			return l, nil
		}
	}
	var parts []string
	for _, l := range []string{"bsmtp", "mailstore", "maildir"} {
		if n, ok := seen[l]; ok {
			parts = append(parts, fmt.Sprintf("%s (%s)", l, n))
		}
	}
	return "", &LayoutError{Path: path, Found: "mixed", Reason: "mixes spool layouts: " + strings.Join(parts, ", ")}
}

// listWork finds the work files and journals of base in d, oldest first.
// It also names the temporary files of base's interrupted atomic writes.
func listWork(d, base string) (works, journals []int64, temps []string, err error) {
	ents, err := os.ReadDir(d)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("spool dir %s: %w", d, err)
	}
	p := workPrefix(base)
	for _, e := range ents {
		if n := parseWorkName(p, ".work", e.Name()); n >= 0 {
			works = append(works, n)
		} else if n := parseWorkName(p, ".journal", e.Name()); n >= 0 {
			journals = append(journals, n)
		} else if staleTemp(e, p) && ownWorkTemp(p, e.Name()) {
			temps = append(temps, e.Name())
		}
	}
	// ReadDir sorts by name, and the 20-digit names sort like their numbers.
	return works, journals, temps, nil
}

// ownWorkTemp tells the temporary file of one of our work files or
// journals from another host's: the prefix of "h.example" is also the
// start of "h.example.org"'s, whose run may be writing that file now.
func ownWorkTemp(prefix, name string) bool {
	i := strings.LastIndex(name, tempInfix) // a host name may hold ".tmp-" too
	if i < 0 {
		return false
	}
	stem := name[:i]
	return parseWorkName(prefix, ".work", stem) >= 0 || parseWorkName(prefix, ".journal", stem) >= 0
}

// genTag distinguishes versions of a file whose name stays the same across
// rewrites, so that the ids of different versions rarely collide: its date
// and its inode number. Neither is enough alone: a file system with
// 1-second timestamps (ext4 with 128-octet inodes, ext3, some NFS) gives
// two rewrites in one second the same date, and a freed inode number is
// handed out again. Together they still may collide, so nothing relies on
// an id being unique: the failed and quarantine copies named after it are
// never overwritten (see placeCopy).
// It is a variable so that a test can make every tag collide.
var genTag = func(mtime time.Time, ino uint64) string {
	return strconv.FormatInt(mtime.UnixNano(), 36) + "i" + strconv.FormatUint(ino, 36)
}

// inoOf is the inode number of a file from its FileInfo (0 if unknown).
func inoOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

type noneSpool struct{}

func (noneSpool) Layout() string          { return "none" }
func (noneSpool) Next() (*Message, error) { return nil, io.EOF }
func (noneSpool) Close() error            { return nil }
func (noneSpool) Settle(*Message, []Outcome, string) error {
	return errors.New("spool: settle on an empty spool")
}

// oneLine makes a reason safe for a one-line .why file.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s) + "\n"
}

// checkSettle refuses a Settle that would record the wrong thing: an
// unknown or already settled message, one out of order (head is the
// message due), or outcomes that do not match its recipients.
func checkSettle(m, head *Message, out []Outcome) error {
	if m == nil || m.ref == nil || m.ref.settled {
		return errors.New("spool: settle of an unknown or settled message")
	}
	if head != m {
		return fmt.Errorf("spool: settle of %s out of order", m.ID)
	}
	if len(out) != len(m.To) {
		return fmt.Errorf("spool: settle of %s: %d outcomes for %d recipients", m.ID, len(out), len(m.To))
	}
	return nil
}

// applyOutcomes merges a message's outcomes into its stored statuses and
// sets the refused recipients aside; both layouts then store st if it
// changed. The failed copy comes first: a crash after it and before the
// record refuses the recipient again, which rewrites the same copy.
func applyOutcomes(d, base string, m *Message, out []Outcome, reason string) (st []byte, changed bool, err error) {
	st, failed, changed, err := statusesAfter(m.ref, out)
	if err != nil {
		return nil, false, err
	}
	if err := writeFailed(d, base, m.copyName(), m.ref, failed, reason); err != nil {
		return nil, false, diskFull(fmt.Errorf("settle %s: %w", m.ID, err))
	}
	return st, changed, nil
}

// writeFailed sets the refused recipients of a message aside for the
// admin, with the server's reason, before the spool forgets them.
func writeFailed(d, base, id string, r *msgRef, failed []string, reason string) error {
	if len(failed) == 0 {
		return nil
	}
	env := bsmtp.Envelope{From: r.env.From, To: failed}
	// A message's id does not change while it waits in a work file, and
	// a later run may refuse other recipients of it: name each copy after
	// its recipients too. Should the name still be taken (an id that
	// collides, or the same refusal again after a crash), the copy gets a
	// suffix: a second copy is harmless, a replaced one may be the only
	// copy of a refused message.
	sum := sha256.Sum256([]byte(strings.Join(failed, "\n")))
	id += "-" + hex.EncodeToString(sum[:4])
	err := writeCopy(failedDir(d, base), id, func(w io.Writer) error {
		if r.plain != nil {
			return bsmtp.NewWriter(w).Write(env, r.plain(), r.crlf)
		}
		return bsmtp.NewWriter(w).WriteStuffed(env, io.NewSectionReader(r.section, 0, r.section.Size()), r.crlf)
	}, reason)
	if err != nil {
		return fmt.Errorf("failed copy: %w", err)
	}
	return nil
}

// writeCopy stores a BSMTP copy and its reason under dir/STEM.{bsmtp,why},
// STEM being id or, if that name holds another copy, id with a suffix
// (see placeCopy): no copy ever replaces another. The same copy written
// again (a redo after a crash between the copy and the record that makes
// it unnecessary) is recognised by its content and not written twice.
func writeCopy(dir, id string, body func(io.Writer) error, why string) error {
	if err := mkdirPrivate(dir); err != nil {
		return err
	}
	reason := func(w io.Writer) error {
		_, err := io.WriteString(w, oneLine(why))
		return err
	}
	return placeCopy(dir, id, func(stem string) error {
		if _, err := writeOrSame(filepath.Join(dir, stem+".bsmtp"), body); err != nil {
			return err
		}
		_, err := writeOrSame(filepath.Join(dir, stem+".why"), reason)
		return err
	})
}

// maxCopySuffix bounds the suffixes tried for one copy's name.
const maxCopySuffix = 1000

// placeCopy calls write with the stems id, id~1, id~2, ... until it does
// not fail with os.ErrExist (the name holds something else).
func placeCopy(dir, id string, write func(stem string) error) error {
	id = privName(id) // an id from a long spool file name must still fit
	for n := 0; n < maxCopySuffix; n++ {
		stem := id
		if n > 0 {
			stem = id + "~" + strconv.Itoa(n)
		}
		err := write(stem)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return err
	}
	return fmt.Errorf("%s: %d copies named %s already", dir, maxCopySuffix, id)
}

// writeOrSame writes path through writeFileNew unless it exists. An
// existing file with exactly the content produce makes is taken as this
// very write, done before (created is false); anything else there is
// os.ErrExist and is left alone.
func writeOrSame(path string, produce func(io.Writer) error) (created bool, err error) {
	err = writeFileNew(path, 0o600, produce)
	if !errors.Is(err, os.ErrExist) {
		return err == nil, err
	}
	same, serr := sameContent(path, produce)
	if serr != nil {
		return false, serr
	}
	if !same {
		return false, err
	}
	return false, nil
}

// sameContent reports whether the regular file at path holds exactly
// what produce writes, comparing digests so that neither is held in
// memory.
func sameContent(path string, produce func(io.Writer) error) (bool, error) {
	f, err := openRegular(path, os.O_RDONLY, 0)
	if errors.Is(err, errNotRegular) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	have := sha256.New()
	_, err = io.Copy(have, f)
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	want := sha256.New()
	if err := produce(want); err != nil {
		return false, err
	}
	return bytes.Equal(have.Sum(nil), want.Sum(nil)), nil
}

// statusesAfter merges this run's outcome into the stored statuses and
// lists the failed recipients.
func statusesAfter(r *msgRef, out []Outcome) (st []byte, failed []string, changed bool, err error) {
	st = append([]byte(nil), r.prev...)
	for i, o := range out {
		j := r.idx[i]
		var c byte
		switch o {
		case Keep:
			c = 'k'
		case Sent:
			c = 's'
		case Failed:
			c = 'f'
			failed = append(failed, r.env.To[j])
		default:
			return nil, nil, false, fmt.Errorf("settle: unknown outcome %d", o)
		}
		if st[j] != c {
			changed = true
		}
		st[j] = c
	}
	return st, failed, changed, nil
}

// pendingOf lists the indices still to deliver under status st (nil st:
// all of them).
func pendingOf(n int, st string) []int {
	var idx []int
	for i := 0; i < n; i++ {
		if st == "" || len(st) != n || st[i] == 'k' {
			idx = append(idx, i)
		}
	}
	return idx
}
