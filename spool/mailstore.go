package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"etrnflush/bsmtp"
)

// mailstore is Exim's mailstore_format directory: a message is the pair
// BASE.env (envelope) + BASE.msg (the message as is). Exim writes BASE.tmp
// and BASE.msg and renames BASE.tmp to BASE.env last, so a pair is
// complete exactly when its .env exists; a .tmp is Exim's and never
// touched. Removal takes the .env first: a crash in between leaves an
// orphan .msg, which is reported and left alone, never an envelope
// without its data.
type mailstore struct{}

// maxEnvFile bounds what a .env may hold: the most recipients a BSMTP
// transaction may have, each as long as an address may be, plus room for
// the prefix and suffix lines.
const maxEnvFile = bsmtp.MaxRecipients*(bsmtp.MaxAddress+1) + 1<<20

func newMailstoreSpool(o Options, d, b string) (*entrySpool, error) {
	return newEntrySpool(o, d, b, mailstore{})
}

func (mailstore) layout() string { return "mailstore" }

// msAux is what a mailstore unit needs to rewrite or remove its pair.
type msAux struct {
	env, msg string // paths
	envelope mailstoreEnvelope
}

func (mailstore) list(s *entrySpool) ([]candidate, error) {
	var cs []candidate
	envs, tmps := map[string]bool{}, map[string]bool{}
	var msgs []string
	err := listDir(s.o.Path, s.o, func(n string, mtime int64) error {
		switch {
		case strings.HasSuffix(n, ".env"):
			base := strings.TrimSuffix(n, ".env")
			cs = append(cs, candidate{base, mtime})
			envs[base] = true
		case strings.HasSuffix(n, ".msg"):
			msgs = append(msgs, strings.TrimSuffix(n, ".msg"))
		case strings.HasSuffix(n, ".tmp"):
			tmps[strings.TrimSuffix(n, ".tmp")] = true
		default:
			s.o.Report(Event{Kind: "notice", ID: n, Reason: "skipped: not a mailstore file (.env, .msg, .tmp) in " + s.o.Path})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, base := range msgs {
		// With a .tmp, Exim is still writing the pair.
		if !envs[base] && !tmps[base] {
			s.o.Report(Event{Kind: "orphan", ID: base + ".msg",
				Reason: "message data without envelope (" + base + ".env is missing; a removal or a delivery was interrupted); left alone"})
		}
	}
	return cs, nil
}

func (mailstore) open(s *entrySpool, c candidate) (*unit, string, error) {
	a := &msAux{env: filepath.Join(s.o.Path, c.name+".env"), msg: filepath.Join(s.o.Path, c.name+".msg")}
	ef, efi, err := openEntryFile(a.env)
	if ef == nil {
		if errors.Is(err, errNotRegular) {
			err = nil // changed since the listing; not ours to read
		}
		return nil, "", err
	}
	u := &unit{name: a.env, size: efi.Size(), idBase: c.name + "." + genTag(efi.ModTime(), inoOf(efi)), aux: a}
	var raw []byte
	if efi.Size() <= maxEnvFile {
		raw, err = io.ReadAll(io.LimitReader(ef, maxEnvFile+1))
	}
	if cerr := ef.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", a.env, err)
	}
	if efi.Size() > maxEnvFile || len(raw) > maxEnvFile {
		return u, fmt.Sprintf(".env larger than %d octets", maxEnvFile), nil
	}
	env, why := parseMailstoreEnv(raw, s.o.MailstorePrefixLines, s.o.MailstoreSuffixLines)
	if why != "" {
		return u, ".env: " + why, nil
	}
	a.envelope = env
	f, fi, err := openEntryFile(a.msg)
	switch {
	case errors.Is(err, errNotRegular):
		return u, ".msg is not a regular file", nil
	case err != nil:
		return nil, "", err
	case f == nil:
		return u, ".env without its .msg", nil
	}
	u.f, u.size = f, u.size+fi.Size()
	um, why, err := plainMessage(f, 0, fi.Size())
	if err != nil {
		_ = f.Close() // read-only
		return nil, "", fmt.Errorf("read %s: %w", a.msg, err)
	}
	if why != "" {
		return u, ".msg: " + why, nil
	}
	um.env = env.Envelope
	um.st = pendingStatus(len(env.To))
	u.msgs = []unitMsg{um}
	return u, "", nil
}

// rewrite stores the .env with only the pending recipients, keeping the
// prefix and suffix lines, and its date, so the pair keeps its place.
func (mailstore) rewrite(s *entrySpool, u *unit) error {
	a := u.aux.(*msAux)
	fi, err := os.Stat(a.env)
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", a.env, err)
	}
	env := a.envelope
	env.To = u.msgs[0].pendingTo()
	return writeAtomic(s.o.Path, a.env, 0o600, fi.ModTime(), false, func(w io.Writer) error {
		_, err := w.Write(env.bytes())
		return err
	})
}

// remove takes the .env, the pair's commit point, first and makes that
// durable; a .msg that outlives a crash is only reported, so its own
// removal needs no sync.
func (mailstore) remove(s *entrySpool, u *unit) error {
	a := u.aux.(*msAux)
	if err := os.Remove(a.env); err != nil {
		return fmt.Errorf("remove %s: %w", a.env, err)
	}
	if err := syncDir(s.o.Path); err != nil {
		return err
	}
	if err := os.Remove(a.msg); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", a.msg, err)
	}
	return nil
}

// quarantine moves the .msg first: a crash in between leaves a .env
// without data, which the next run quarantines too.
func (mailstore) quarantine(s *entrySpool, u *unit, qd, id string) error {
	a := u.aux.(*msAux)
	if err := moveInto(a.msg, qd, id+".msg"); err != nil {
		return err
	}
	if err := moveInto(a.env, qd, id+".env"); err != nil {
		return err
	}
	return syncDir(s.o.Path)
}

// mailstoreEnvelope is a parsed .env: the envelope and the site's prefix
// and suffix lines, kept verbatim for a rewrite.
type mailstoreEnvelope struct {
	bsmtp.Envelope
	prefix, suffix [][]byte // lines with their "\n"
}

func (e mailstoreEnvelope) bytes() []byte {
	var b bytes.Buffer
	for _, l := range e.prefix {
		b.Write(l)
	}
	b.WriteString(e.From + "\n")
	for _, t := range e.To {
		b.WriteString(t + "\n")
	}
	for _, l := range e.suffix {
		b.Write(l)
	}
	return b.Bytes()
}

// parseMailstoreEnv reads a .env as Exim writes it: pre prefix lines, the
// bare sender (empty for the null sender), one recipient a line, suf
// suffix lines, every line ending in LF. Exim qualifies every address, so
// each has an '@'; a prefix or suffix line that looks like an address is
// refused, because a wrong line count would then silently drop or invent
// a recipient. why says what is wrong.
func parseMailstoreEnv(raw []byte, pre, suf int) (env mailstoreEnvelope, why string) {
	if len(raw) == 0 {
		return env, "empty"
	}
	if raw[len(raw)-1] != '\n' {
		return env, "last line has no line end"
	}
	lines := bytes.SplitAfter(raw, []byte("\n"))
	lines = lines[:len(lines)-1] // SplitAfter's empty tail
	if len(lines) < pre+2+suf {
		return env, fmt.Sprintf("%d lines, need at least %d (%d prefix, sender, a recipient, %d suffix)", len(lines), pre+2+suf, pre, suf)
	}
	env.prefix, env.suffix = lines[:pre], lines[len(lines)-suf:]
	body := lines[pre : len(lines)-suf]
	for i, l := range append(append([][]byte(nil), env.prefix...), env.suffix...) {
		if looksLikeAddress(bytes.TrimSuffix(l, []byte("\n"))) {
			return env, fmt.Sprintf("prefix or suffix line %d looks like an address (%s): are mailstore_prefix_lines and mailstore_suffix_lines right?", i+1, quoteLine(l))
		}
	}
	// Exim writes an empty line for a prefix that expands to nothing, and
	// no line for one whose expansion is forced to fail. A single empty
	// prefix line is therefore also the null sender of a .env without
	// prefix, and either reading could make a recipient the sender. (With
	// more prefix lines, the others rule one reading out or are refused
	// above.)
	if pre == 1 && len(env.prefix[0]) == 1 {
		return env, "prefix line 1 is empty: an empty prefix before the sender, or the null sender without a prefix? Not guessed"
	}
	from := bytes.TrimSuffix(body[0], []byte("\n"))
	if len(from) > 0 {
		if why := checkEnvAddress(from); why != "" {
			return env, fmt.Sprintf("line %d: sender %s", pre+1, why)
		}
	}
	env.From = string(from)
	if len(body)-1 > bsmtp.MaxRecipients {
		return env, fmt.Sprintf("more than %d recipients", bsmtp.MaxRecipients)
	}
	for i, l := range body[1:] {
		a := bytes.TrimSuffix(l, []byte("\n"))
		if len(a) == 0 {
			return env, fmt.Sprintf("line %d: empty recipient", pre+2+i)
		}
		if why := checkEnvAddress(a); why != "" {
			return env, fmt.Sprintf("line %d: recipient %s", pre+2+i, why)
		}
		env.To = append(env.To, string(a))
	}
	return env, ""
}

// checkEnvAddress applies the BSMTP rules to an address read from a
// mailstore or maildir envelope, and wants the '@' Exim always writes.
// White space is allowed only in quotes: a line such as "X-Suffix: by
// mailstore@isp" is a prefix or suffix line the settings do not count,
// not an address.
func checkEnvAddress(a []byte) string {
	if err := bsmtp.ValidAddress(string(a)); err != nil {
		return err.Error()
	}
	if bytes.IndexByte(a, '@') < 0 {
		return fmt.Sprintf("%s has no '@' (Exim qualifies every address)", quoteLine(a))
	}
	if hasBareSpace(a) {
		return fmt.Sprintf("%s has white space outside quotes (not an address Exim writes)", quoteLine(a))
	}
	return ""
}

// looksLikeAddress: an '@' and no white space.
func looksLikeAddress(l []byte) bool {
	return bytes.IndexByte(l, '@') >= 0 && !bytes.ContainsAny(l, " \t")
}

func quoteLine(b []byte) string {
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) > 80 {
		return fmt.Sprintf("%q...", b[:80])
	}
	return fmt.Sprintf("%q", b)
}

// plainMessage describes the message held as is in [off, off+n) of f: its
// size, whether it has 8-bit octets, and its line ends. Mixed LF and CRLF
// line ends are damage: Exim never writes a CR, so such a file is not
// Exim's and no copy of it could be framed as BSMTP without guessing. It
// reads the data once, in a fixed buffer.
func plainMessage(f *os.File, off, n int64) (um unitMsg, why string, err error) {
	um.data = io.NewSectionReader(f, off, n)
	um.size = n
	br := bufio.NewReaderSize(io.NewSectionReader(f, off, n), 64<<10)
	var lf, crlf bool
	var last byte   // last octet of the previous chunk
	var inLine bool // a chunk of the current line was read already
	for line := 1; ; {
		b, err := br.ReadSlice('\n')
		if !um.eight && has8bit(b) {
			um.eight = true
		}
		switch {
		case err == nil:
			prev := last
			if len(b) >= 2 {
				prev = b[len(b)-2]
			}
			if prev == '\r' {
				crlf = true
			} else {
				lf = true
			}
			if lf && crlf {
				return um, fmt.Sprintf("line %d: mixed LF and CRLF line ends", line), nil
			}
			last, inLine = 0, false
			line++
		case errors.Is(err, bufio.ErrBufferFull):
			last, inLine = b[len(b)-1], true
		case err == io.EOF:
			// A last line that filled the buffer ends in an empty read.
			if len(b) > 0 {
				last, inLine = b[len(b)-1], true
			}
			if inLine && last == '\r' {
				// Neither line end could be added without a guess.
				return um, fmt.Sprintf("line %d: last line ends in a bare CR", line), nil
			}
			um.crlf = crlf
			um.noEOL = inLine
			return um, "", nil
		default:
			return um, "", err
		}
	}
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
