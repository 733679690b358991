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

// maildir reads new/ and cur/ of a maildir (never tmp/, where deliveries
// are in progress). The envelope is in header fields on top of each
// message: Exim's Return-path: and Envelope-to: (appendfile
// return_path_add, envelope_to_add), or qmail's Return-Path: and
// Delivered-To:. Those fields, and Exim's Delivery-date:, are not part of
// the message that is relayed; the rest is sent octet for octet.
type maildir struct {
	deliveredTo bool
	prefix      string
}

// maxEnvHeader bounds the envelope fields on top of a message, like
// maxEnvFile for a mailstore .env.
const maxEnvHeader = maxEnvFile

func newMaildirSpool(o Options, d, b string) (*entrySpool, error) {
	k := maildir{deliveredTo: o.MaildirEnvelope == "delivered-to", prefix: o.DeliveredToPrefix}
	for _, sub := range []string{"new", "cur", "tmp"} {
		fi, err := os.Lstat(filepath.Join(o.Path, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("spool %s: %w", o.Path, err)
		}
		if !fi.IsDir() {
			// A symlink here could lead anywhere: not followed.
			return nil, &LayoutError{Path: o.Path, Found: "unknown",
				Reason: fmt.Sprintf("maildir's %s is not a directory (%s)", sub, fi.Mode().Type())}
		}
	}
	return newEntrySpool(o, d, b, k)
}

func (maildir) layout() string { return "maildir" }

// mdAux is what a maildir unit needs for a rewrite.
type mdAux struct {
	path   string
	fields []envField
	hdrLen int64
}

func (k maildir) list(s *entrySpool) ([]candidate, error) {
	var cs []candidate
	// Our own temporary files of a rewrite killed midway are in tmp/; the
	// rest of tmp/ is Exim's.
	if !s.o.DryRun {
		if err := removeStaleTemps(filepath.Join(s.o.Path, "tmp"), ".", s.o.Report); err != nil {
			return nil, err
		}
	}
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(s.o.Path, sub)
		if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
			continue
		}
		err := listDir(dir, s.o, func(n string, mtime int64) error {
			cs = append(cs, candidate{sub + "/" + n, mtime})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return cs, nil
}

func (k maildir) open(s *entrySpool, c candidate) (*unit, string, error) {
	p := filepath.Join(s.o.Path, c.name)
	f, fi, err := openEntryFile(p)
	if f == nil {
		if errors.Is(err, errNotRegular) {
			err = nil // changed since the listing; not ours to read
		}
		return nil, "", err
	}
	a := &mdAux{path: p}
	u := &unit{name: p, f: f, size: fi.Size(), idBase: strings.ReplaceAll(c.name, "/", "-") + "." + genTag(fi.ModTime(), inoOf(fi)), aux: a}
	env, fields, n, why, err := readMaildirEnvelope(io.NewSectionReader(f, 0, fi.Size()), k.deliveredTo, k.prefix)
	if err != nil {
		_ = f.Close() // read-only
		return nil, "", fmt.Errorf("read %s: %w", p, err)
	}
	if why != "" {
		return u, why, nil
	}
	a.fields, a.hdrLen = fields, n
	um, why, err := plainMessage(f, n, fi.Size()-n)
	if err != nil {
		_ = f.Close() // read-only
		return nil, "", fmt.Errorf("read %s: %w", p, err)
	}
	if why != "" {
		return u, why, nil
	}
	um.env = env
	um.st = pendingStatus(len(env.To))
	u.msgs = []unitMsg{um}
	return u, "", nil
}

// rewrite writes the message again with only the pending recipients in
// Envelope-to:, the other fields and the message untouched: a temporary
// file in tmp/, renamed over the old name (in new/, or in cur/ where it
// was found, so the replacement is one atomic step), dated like the old
// one so that it keeps its place.
func (k maildir) rewrite(s *entrySpool, u *unit) error {
	if k.deliveredTo {
		// One recipient per file: it is either pending (no change) or
		// settled (removal).
		return errors.New("maildir: a Delivered-To message has one recipient; nothing to rewrite")
	}
	a := u.aux.(*mdAux)
	um := &u.msgs[0]
	tmp := filepath.Join(s.o.Path, "tmp")
	if err := mkdirPrivate(tmp); err != nil {
		return err
	}
	fi, err := u.f.Stat()
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", a.path, err)
	}
	to := um.pendingTo()
	return writeAtomic(tmp, a.path, 0o600, fi.ModTime(), false, func(w io.Writer) error {
		for _, fl := range a.fields {
			raw := fl.raw
			if fl.name == "envelope-to" {
				raw = []byte(fl.rawName + ": " + strings.Join(to, ",\n ") + "\n")
			}
			if _, err := w.Write(raw); err != nil {
				return err
			}
		}
		_, err := io.Copy(w, io.NewSectionReader(um.data, 0, um.data.Size()))
		return err
	})
}

func (maildir) remove(_ *entrySpool, u *unit) error {
	a := u.aux.(*mdAux)
	if err := os.Remove(a.path); err != nil {
		return fmt.Errorf("remove %s: %w", a.path, err)
	}
	return syncDir(filepath.Dir(a.path))
}

func (maildir) quarantine(_ *entrySpool, u *unit, qd, id string) error {
	a := u.aux.(*mdAux)
	if err := moveInto(a.path, qd, id+".eml"); err != nil {
		return err
	}
	return syncDir(filepath.Dir(a.path))
}

// envField is one envelope header field as found on top of a message.
type envField struct {
	name    string // lower case
	rawName string // as written
	raw     []byte // the whole field, continuation lines and line end included
	value   []byte // unfolded, trimmed
}

// readMaildirEnvelope reads the envelope fields on top of a message and
// returns the envelope, the fields and the number of octets they take.
// In Exim style these are Return-path:, Envelope-to: and Delivery-date:
// (any order, each once, names in any case), as the transport writes them
// first; reading stops at the first other field or a repeat. With
// deliveredTo, they are Return-Path: and Delivered-To:, as qmail-local
// writes them; the first Delivered-To: is the one of this delivery, a
// later one is an earlier hop's and part of the message. why says what
// makes the envelope unrecoverable; nothing is guessed.
func readMaildirEnvelope(r io.Reader, deliveredTo bool, prefix string) (env bsmtp.Envelope, fields []envField, n int64, why string, err error) {
	names := map[string]bool{"return-path": true, "envelope-to": true, "delivery-date": true}
	need := "Return-path: and Envelope-to: (the transport needs return_path_add and envelope_to_add)"
	if deliveredTo {
		names = map[string]bool{"return-path": true, "delivered-to": true}
		need = "Return-Path: and Delivered-To:"
	}
	br := bufio.NewReaderSize(r, 64<<10)
	got := map[string]*envField{}
	for {
		fl, ok, ferr := readEnvField(br, names, maxEnvHeader-n)
		if ferr != nil {
			if errors.Is(ferr, errFieldTooLong) {
				return env, nil, 0, fmt.Sprintf("envelope header fields longer than %d octets", maxEnvHeader), nil
			}
			if errors.Is(ferr, errFieldCut) {
				return env, nil, 0, "the file ends inside the envelope header fields (cut short?): its envelope and message are incomplete", nil
			}
			return env, nil, 0, "", ferr
		}
		if !ok || got[fl.name] != nil {
			break
		}
		fields = append(fields, fl)
		got[fl.name] = &fields[len(fields)-1]
		n += int64(len(fl.raw))
	}
	rp := got["return-path"]
	rcpt := got["envelope-to"]
	if deliveredTo {
		rcpt = got["delivered-to"]
	}
	if rp == nil || rcpt == nil {
		return env, nil, 0, "no " + need + " on top of the message: its envelope is unknown", nil
	}
	v := rp.value
	if len(v) < 2 || v[0] != '<' || v[len(v)-1] != '>' {
		return env, nil, 0, fmt.Sprintf("Return-path: %s is not <address>", quoteLine(v)), nil
	}
	if from := v[1 : len(v)-1]; len(from) > 0 {
		if why := checkEnvAddress(from); why != "" {
			return env, nil, 0, "Return-path: " + why, nil
		}
		env.From = string(from)
	}
	if deliveredTo {
		a := rcpt.value
		if len(a) < len(prefix) || !strings.EqualFold(string(a[:len(prefix)]), prefix) {
			return env, nil, 0, fmt.Sprintf("Delivered-To: %s does not start with delivered_to_prefix %q", quoteLine(a), prefix), nil
		}
		a = a[len(prefix):]
		if why := checkEnvAddress(a); why != "" {
			return env, nil, 0, "Delivered-To: " + why, nil
		}
		env.To = []string{string(a)}
		return env, fields, n, "", nil
	}
	to, why := splitEnvelopeTo(rcpt.value)
	if why != "" {
		return env, nil, 0, "Envelope-to: " + why, nil
	}
	env.To = to
	return env, fields, n, "", nil
}

var (
	errFieldTooLong = errors.New("header field too long")
	// errFieldCut: an envelope field without a line end is the end of
	// the file; its last address may be cut, and no message follows.
	errFieldCut = errors.New("header field without line end")
)

// readEnvField reads one header field if its name is in names; ok is
// false (and nothing consumed) when the next line is not such a field.
func readEnvField(br *bufio.Reader, names map[string]bool, limit int64) (fl envField, ok bool, err error) {
	head, err := br.Peek(32)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return fl, false, err
	}
	colon := bytes.IndexByte(head, ':')
	if colon <= 0 || !names[strings.ToLower(string(head[:colon]))] {
		return fl, false, nil
	}
	fl.rawName = string(head[:colon])
	fl.name = strings.ToLower(fl.rawName)
	var raw []byte
	for {
		line, err := readLine(br, limit-int64(len(raw)))
		if err != nil {
			return fl, false, err
		}
		if len(line) == 0 || line[len(line)-1] != '\n' {
			return fl, false, errFieldCut
		}
		raw = append(raw, line...)
		next, perr := br.Peek(1)
		if perr != nil || (next[0] != ' ' && next[0] != '\t') {
			break
		}
	}
	fl.raw = raw
	v := raw[len(fl.rawName)+1:]
	// Unfold: a line end followed by white space is white space.
	v = bytes.ReplaceAll(v, []byte("\r\n"), []byte("\n"))
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	fl.value = bytes.Trim(v, " \t")
	return fl, true, nil
}

// readLine reads one line with its LF, at most limit octets. A last line
// without LF comes back as it is.
func readLine(br *bufio.Reader, limit int64) ([]byte, error) {
	var line []byte
	for {
		b, err := br.ReadSlice('\n')
		if int64(len(line)+len(b)) > limit {
			return nil, errFieldTooLong
		}
		line = append(line, b...)
		switch {
		case err == nil, errors.Is(err, io.EOF):
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
		default:
			return nil, err
		}
	}
}

// splitEnvelopeTo splits Exim's Envelope-to: value (addresses separated by
// commas, no angle brackets) into addresses. A comma inside a quoted local
// part does not split. White space may only be around an address or in
// quotes: Exim folds after the comma, so "a@x b@y" is a list that lost a
// comma (or a damaged address), and taking it as one address would guess.
func splitEnvelopeTo(v []byte) ([]string, string) {
	var to []string
	var cur []byte
	quoted, esc := false, false
	flush := func() string {
		a := bytes.Trim(cur, " \t")
		cur = cur[:0]
		if len(a) == 0 {
			return "empty address in the list"
		}
		if hasBareSpace(a) {
			return fmt.Sprintf("white space inside %s (a missing comma?)", quoteLine(a))
		}
		if why := checkEnvAddress(a); why != "" {
			return why
		}
		if len(to) == bsmtp.MaxRecipients {
			return fmt.Sprintf("more than %d recipients", bsmtp.MaxRecipients)
		}
		to = append(to, string(a))
		return ""
	}
	for _, c := range v {
		switch {
		case esc:
			esc = false
		case quoted && c == '\\':
			esc = true
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			if why := flush(); why != "" {
				return nil, why
			}
			continue
		}
		cur = append(cur, c)
	}
	if quoted {
		return nil, "unbalanced quote"
	}
	if why := flush(); why != "" {
		return nil, why
	}
	return to, ""
}

// hasBareSpace reports white space outside quotes in a trimmed address.
func hasBareSpace(a []byte) bool {
	quoted, esc := false, false
	for _, c := range a {
		switch {
		case esc:
			esc = false
		case quoted && c == '\\':
			esc = true
		case c == '"':
			quoted = !quoted
		case (c == ' ' || c == '\t') && !quoted:
			return true
		}
	}
	return false
}
