//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Messages as the tests see them (envMsg: envelope and bytes) and the parsers
// that read them back from BSMTP, Exim's spools and a receiving Exim's
// maildir, so that what was written and what arrived can be compared byte for
// byte.

// parseSinkMessage takes the sink's maildir file apart: the envelope from the
// X-Sink-Mail-Cmd / X-Sink-Rcpt-Cmd headers (exim.md surprise 15: the
// command lines, not Exim's protocol labels), and the message as it arrived,
// i.e. without the headers the sink put on top: its X-Sink-*, its one
// Received:, and the Return-path:/Envelope-to:/Delivery-date: of the maildir
// transport. The message's own Received: lines stay.
func parseSinkMessage(b []byte) (envMsg, error) {
	var m envMsg
	var rcptsRev []string
	sawMail, sawReceived := false, false
	for {
		if len(b) == 0 || b[0] == '\n' {
			break
		}
		end := fieldEnd(b)
		field := b[:end]
		name, value, ok := bytes.Cut(field, []byte(":"))
		if !ok {
			return m, fmt.Errorf("header line without colon: %q", firstLine(field))
		}
		lname := strings.ToLower(string(name))
		unfolded := strings.TrimSpace(strings.NewReplacer("\n\t", " ", "\n ", " ", "\n", "").Replace(string(value)))
		switch {
		case lname == "x-sink-mail-cmd":
			from, err := angleAddr(unfolded)
			if err != nil {
				return m, err
			}
			m.From, m.MailCmd, sawMail = from, unfolded, true
		case lname == "x-sink-rcpt-cmd":
			to, err := angleAddr(unfolded)
			if err != nil {
				return m, err
			}
			rcptsRev = append(rcptsRev, to)
		case strings.HasPrefix(lname, "x-sink-"),
			lname == "return-path", lname == "envelope-to", lname == "delivery-date":
		case lname == "received" && !sawReceived:
			sawReceived = true
		default:
			goto done
		}
		b = b[end:]
	}
done:
	if !sawMail || len(rcptsRev) == 0 || !sawReceived {
		return m, fmt.Errorf("no X-Sink-Mail-Cmd, X-Sink-Rcpt-Cmd or Received header on top")
	}
	// :at_start: puts each later RCPT's header above the earlier ones.
	slices.Reverse(rcptsRev)
	m.To = rcptsRev
	m.Data = b
	return m, nil
}

// fieldEnd returns the length of the header field at the start of b,
// continuation lines included.
func fieldEnd(b []byte) int {
	i := 0
	for {
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			return len(b)
		}
		i += nl + 1
		if i >= len(b) || (b[i] != ' ' && b[i] != '\t') {
			return i
		}
	}
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

// angleAddr returns the address between the first < and the next > of an
// SMTP command line such as "MAIL FROM:<a@b> SIZE=12".
func angleAddr(cmd string) (string, error) {
	i := strings.IndexByte(cmd, '<')
	if i < 0 {
		return "", fmt.Errorf("no <address> in %q", cmd)
	}
	j := strings.IndexByte(cmd[i:], '>')
	if j < 0 {
		return "", fmt.Errorf("no <address> in %q", cmd)
	}
	return cmd[i+1 : i+j], nil
}

// envMsg is one message: envelope and content (unstuffed, line ends as
// stored).
type envMsg struct {
	From    string
	To      []string
	Data    []byte
	MailCmd string // the MAIL command as the sink received it (sink only)
}

func (m envMsg) key() string {
	h := sha256.Sum256(m.Data)
	return m.From + "\x00" + strings.Join(m.To, "\x00") + "\x00" + hex.EncodeToString(h[:])
}

func (m envMsg) id() string { return messageID(m.Data) }

func (m envMsg) String() string {
	return fmt.Sprintf("%s from=<%s> to=%v size=%d", m.id(), m.From, m.To, len(m.Data))
}

var messageIDRe = regexp.MustCompile(`(?im)^message-id:[ \t]*(<[^>\n]*>)`)

// messageID returns the Message-Id of the header section, "" if none.
func messageID(data []byte) string {
	hdr := data
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		hdr = data[:i+1]
	}
	if m := messageIDRe.FindSubmatch(hdr); m != nil {
		return string(m[1])
	}
	return ""
}

// parseBSMTP is the oracle: a strict reader for what Exim's appendfile
// use_bsmtp writes with LF line ends (exim.md a.1): MAIL FROM:<>, one or
// more RCPT TO:<>, DATA, data lines with one dot added to those starting
// with a dot, a lone dot. Anything else is an error.
func parseBSMTP(b []byte) ([]envMsg, error) {
	var msgs []envMsg
	line := 0
	next := func() (string, error) {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return "", fmt.Errorf("line %d: no line end: %.40q", line+1, b)
		}
		l := string(b[:i])
		b = b[i+1:]
		line++
		return l, nil
	}
	for len(b) > 0 {
		l, err := next()
		if err != nil {
			return nil, err
		}
		var m envMsg
		if !strings.HasPrefix(l, "MAIL FROM:<") || !strings.HasSuffix(l, ">") {
			return nil, fmt.Errorf("line %d: want MAIL FROM:<...>, got %.60q", line, l)
		}
		m.From = l[len("MAIL FROM:<") : len(l)-1]
		for {
			if l, err = next(); err != nil {
				return nil, err
			}
			if l == "DATA" {
				break
			}
			if !strings.HasPrefix(l, "RCPT TO:<") || !strings.HasSuffix(l, ">") {
				return nil, fmt.Errorf("line %d: want RCPT TO:<...> or DATA, got %.60q", line, l)
			}
			m.To = append(m.To, l[len("RCPT TO:<"):len(l)-1])
		}
		if len(m.To) == 0 {
			return nil, fmt.Errorf("line %d: DATA without RCPT", line)
		}
		var data bytes.Buffer
		for {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return nil, fmt.Errorf("line %d: data runs to the end without a lone dot", line+1)
			}
			l := b[:i+1]
			b = b[i+1:]
			line++
			if string(l) == ".\n" {
				break
			}
			if l[0] == '.' {
				l = l[1:]
			}
			data.Write(l)
		}
		m.Data = data.Bytes()
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func parseBSMTPFile(t *testing.T, path string) []envMsg {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := parseBSMTP(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return msgs
}

// spoolMessages reads what Exim wrote for a host: the appended file, or
// every finished file of the directory layout (temp.* are Exim's files in
// the making).
func spoolMessages(t *testing.T, path string) []envMsg {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() {
		return parseBSMTPFile(t, path)
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []envMsg
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "temp.") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		msgs = append(msgs, parseBSMTPFile(t, filepath.Join(path, e.Name()))...)
	}
	return msgs
}

// sameMessages reports every difference between two multisets of messages,
// pointing at the first differing octet when a message arrived changed.
func sameMessages(t *testing.T, what string, want, got []envMsg) {
	t.Helper()
	left := map[string]int{}
	for _, m := range got {
		left[m.key()]++
	}
	var missing []envMsg
	for _, m := range want {
		if left[m.key()] > 0 {
			left[m.key()]--
			continue
		}
		missing = append(missing, m)
	}
	var extra []envMsg
	for _, m := range got {
		if left[m.key()] > 0 {
			left[m.key()]--
			extra = append(extra, m)
		}
	}
	for _, m := range missing {
		msg := fmt.Sprintf("%s: missing %s", what, m)
		for _, g := range extra {
			if g.id() == m.id() {
				msg += fmt.Sprintf("\n  arrived as %s%s", g, firstDiff(m.Data, g.Data))
			}
		}
		t.Error(msg)
	}
	for _, g := range extra {
		t.Errorf("%s: unexpected %s", what, g)
	}
}

func firstDiff(want, got []byte) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	if i == len(want) && i == len(got) {
		return ""
	}
	from := max(0, i-40)
	return fmt.Sprintf("\n  first difference at octet %d:\n  want %q\n  got  %q",
		i, want[from:min(len(want), i+40)], got[from:min(len(got), i+40)])
}

// mailstoreMessages reads every complete pair: .env lines (prefix lines,
// sender, recipients, suffix lines) and the .msg as it is.
func mailstoreMessages(t *testing.T, dir string, pre, suf int) []envMsg {
	t.Helper()
	envs, err := filepath.Glob(filepath.Join(dir, "*.env"))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []envMsg
	for _, e := range envs {
		b, err := os.ReadFile(e)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) < pre+2+suf {
			t.Fatalf("%s: %d lines", e, len(lines))
		}
		lines = lines[pre : len(lines)-suf]
		data, err := os.ReadFile(strings.TrimSuffix(e, ".env") + ".msg")
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, envMsg{From: lines[0], To: lines[1:], Data: data})
	}
	return msgs
}

// maildirMessages reads every file of new/ and cur/: the envelope from the
// Return-path:, Envelope-to: and Delivery-date: fields on top, the data
// what follows them.
func maildirMessages(t *testing.T, dir string) []envMsg {
	t.Helper()
	var msgs []envMsg
	for _, sub := range []string{"new", "cur"} {
		files, err := filepath.Glob(filepath.Join(dir, sub, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := parseMaildirTop(b)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			msgs = append(msgs, m)
		}
	}
	return msgs
}

func parseMaildirTop(b []byte) (envMsg, error) {
	var m envMsg
	seen := map[string]bool{}
	for {
		end := fieldEnd(b)
		name, value, ok := bytes.Cut(b[:end], []byte(":"))
		lname := strings.ToLower(string(name))
		if !ok || seen[lname] || (lname != "return-path" && lname != "envelope-to" && lname != "delivery-date") {
			break
		}
		seen[lname] = true
		v := strings.TrimSpace(strings.ReplaceAll(string(value), "\n", ""))
		switch lname {
		case "return-path":
			if !strings.HasPrefix(v, "<") || !strings.HasSuffix(v, ">") {
				return m, fmt.Errorf("Return-path: %q", v)
			}
			m.From = v[1 : len(v)-1]
		case "envelope-to":
			for _, a := range strings.Split(v, ",") {
				m.To = append(m.To, strings.TrimSpace(a))
			}
		}
		b = b[end:]
	}
	if !seen["return-path"] || !seen["envelope-to"] {
		return m, fmt.Errorf("no Return-path: and Envelope-to: on top")
	}
	m.Data = b
	return m, nil
}

// heldMessages reads what etrnflush kept for a BSMTP file spool: the
// file itself if Exim wrote to it again, and every work file.
func heldMessages(t *testing.T, path string) []envMsg {
	t.Helper()
	var msgs []envMsg
	if _, err := os.Stat(path); err == nil {
		msgs = append(msgs, parseBSMTPFile(t, path)...)
	}
	for _, f := range privateFiles(t, filepath.Dir(path), filepath.Base(path))["work"] {
		msgs = append(msgs, parseBSMTPFile(t, f)...)
	}
	return msgs
}

// failedMessages reads the failed folder: each copy with the reason
// etrnflush wrote beside it, keyed by Message-Id.
func failedMessages(t *testing.T, path string) (msgs []envMsg, why map[string]string) {
	t.Helper()
	why = map[string]string{}
	for _, f := range privateFiles(t, filepath.Dir(path), filepath.Base(path))["failed"] {
		switch {
		case strings.HasSuffix(f, ".bsmtp"):
			copies := parseBSMTPFile(t, f)
			b, err := os.ReadFile(strings.TrimSuffix(f, ".bsmtp") + ".why")
			if err != nil {
				t.Errorf("failed copy %s has no reason: %v", f, err)
			}
			for _, m := range copies {
				why[m.id()] = string(b)
			}
			msgs = append(msgs, copies...)
		case strings.HasSuffix(f, ".why"):
		default:
			t.Errorf("unexpected file in the failed folder: %s", f)
		}
	}
	return msgs, why
}
