package main

// The Exim harness: a real Exim 4.96 as the writer of BSMTP spools (the ISP
// side), as the receiving server (the sink) and as the ETRN server, each
// started unprivileged on loopback from the configs in testdata/rig. Also the
// test-only oracle: a strict little BSMTP parser that shares no code with
// package bsmtp, so a bug there cannot hide itself here.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needExim returns the Exim binary, or skips the test (fails it when
// CI=true: CI must never silently skip the real-MTA tests).
func needExim(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/exim", "/usr/sbin/exim4"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	const msg = "exim not installed: apt-get install exim4-daemon-heavy"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// rig is one test's Exim setup: a state directory the Exim user can use,
// holding private copies of the rig configs.
type rig struct {
	exim        string
	dir         string
	user, group string
	uid, gid    int
	n           int // for unique sub-directory names
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{exim: needExim(t)}
	if err := r.lookupUser(); err != nil {
		t.Fatal(err)
	}
	r.dir = t.TempDir()
	// Exim drops to its user, which must reach the configs (it re-execs
	// itself and reads them again) and the state below: t.TempDir's parent
	// is 0700.
	for _, d := range []string{filepath.Dir(r.dir), r.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"sink.conf", "writer.conf", "etrn.conf", "etrn-hook.sh"} {
		b, err := os.ReadFile(filepath.Join("testdata", "rig", name))
		if err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(r.dir, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// lookupUser picks the user Exim runs as: as root the Debian package's
// Debian-exim (or a plain "exim"); as anybody else, that user, since an
// unprivileged Exim cannot change to another.
func (r *rig) lookupUser() error {
	var u *user.User
	var err error
	if os.Geteuid() == 0 {
		for _, name := range []string{"Debian-exim", "exim"} {
			if u, err = user.Lookup(name); err == nil {
				break
			}
		}
	} else {
		u, err = user.Current()
	}
	if err != nil {
		return fmt.Errorf("exim user: %w", err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return fmt.Errorf("exim group: %w", err)
	}
	r.user, r.group = u.Username, g.Name
	if r.uid, err = strconv.Atoi(u.Uid); err != nil {
		return err
	}
	if r.gid, err = strconv.Atoi(u.Gid); err != nil {
		return err
	}
	return nil
}

// mkdir makes a fresh state sub-directory owned by the Exim user.
func (r *rig) mkdir(t *testing.T, prefix string) string {
	t.Helper()
	r.n++
	d := filepath.Join(r.dir, fmt.Sprintf("%s-%d", prefix, r.n))
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, r.uid, r.gid); err != nil {
		t.Fatal(err)
	}
	return d
}

func (r *rig) userDefines() []string {
	return []string{"-DRIG_USER=" + r.user, "-DRIG_GROUP=" + r.group}
}

// daemon is one Exim daemon started by a test.
type daemon struct {
	dir  string // its state directory (spool, log, ...)
	port int
	pid  int
}

func (d *daemon) addr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

// startDaemon runs `exim -C conf defines... -bdf -oP pidfile` on a free port
// (passed through portMacro) and waits until it answers. -bdf keeps it in the
// foreground as our own child: it inherits no descriptor above 2 (Go opens
// everything close-on-exec; Exim would hand any inherited one on to every
// command it runs), and cleanup signals exactly that PID.
func (r *rig) startDaemon(t *testing.T, conf, dir, portMacro string, defines ...string) *daemon {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		d, err := r.tryDaemon(t, conf, dir, portMacro, port, defines)
		if err == nil {
			return d
		}
		lastErr = err // most likely the port was taken in between
	}
	t.Fatalf("exim daemon %s did not start: %v", conf, lastErr)
	return nil
}

func (r *rig) tryDaemon(t *testing.T, conf, dir, portMacro string, port int, defines []string) (*daemon, error) {
	pidFile := filepath.Join(dir, "daemon.pid")
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	outPath := filepath.Join(dir, fmt.Sprintf("daemon-%d.out", port))
	out, err := os.Create(outPath)
	if err != nil {
		return nil, err
	}
	args := []string{"-C", filepath.Join(r.dir, conf), fmt.Sprintf("-D%s=%d", portMacro, port)}
	args = append(args, r.userDefines()...)
	args = append(args, defines...)
	args = append(args, "-bdf", "-oP", pidFile)
	cmd := exec.Command(r.exim, args...)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Start()
	if cerr := out.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", r.exim, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // its status is of no interest: we stop it ourselves
		close(exited)
	}()
	d := &daemon{dir: dir, port: port, pid: cmd.Process.Pid}
	stop := func() {
		if err := syscall.Kill(d.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("stop exim pid %d: %v", d.pid, err)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("exim pid %d ignored SIGTERM for 10s; killing it", d.pid)
			_ = syscall.Kill(d.pid, syscall.SIGKILL)
			<-exited
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(outPath)
			return nil, fmt.Errorf("exim exited at start: %s%s", b, eximLogs(dir))
		default:
		}
		if pidOK(pidFile, d.pid) && canConnect(d.addr()) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("exim daemon %s logs:%s", conf, eximLogs(dir))
				}
			})
			return d, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("exim pid %d not answering on %s after 15s%s", d.pid, d.addr(), eximLogs(dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

func pidOK(pidFile string, pid int) bool {
	b, err := os.ReadFile(pidFile)
	return err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(pid)
}

func canConnect(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close() // a probe: nothing was written
	return true
}

// eximLogs returns the tail of the main and panic logs under dir/log.
func eximLogs(dir string) string {
	var sb strings.Builder
	for _, name := range []string{"mainlog", "paniclog", "rejectlog"} {
		b, err := os.ReadFile(filepath.Join(dir, "log", name))
		if err != nil {
			continue
		}
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		fmt.Fprintf(&sb, "\n--- %s/log/%s:\n%s", dir, name, b)
	}
	return sb.String()
}

// sink is the receiving Exim (testdata/rig/sink.conf).
type sink struct {
	*daemon
	r *rig
}

func (r *rig) startSink(t *testing.T) *sink {
	t.Helper()
	dir := r.mkdir(t, "sink")
	d := r.startDaemon(t, "sink.conf", dir, "SINK_PORT", "-DSINK_DIR="+dir)
	return &sink{daemon: d, r: r}
}

// waitDelivered waits until the sink has n messages in its maildir and
// nothing left in its queue, then returns them; more than n is an error,
// and so is a protocol error or dropped session in the sink's log.
func (s *sink) waitDelivered(t *testing.T, n int) []envMsg {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		files := maildirFiles(t, filepath.Join(s.dir, "maildir"))
		queued := queuedMessages(t, filepath.Join(s.dir, "spool"))
		if len(files) >= n && queued == 0 {
			if len(files) > n {
				t.Errorf("sink holds %d messages, want %d", len(files), n)
			}
			s.assertSinkLogClean(t)
			return s.read(t, files)
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink: %d of %d messages delivered, %d queued after 60s%s", len(files), n, queued, eximLogs(s.dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// delivered returns what the sink holds now (once its queue is empty),
// and fails the test if the sink logged a protocol error.
func (s *sink) delivered(t *testing.T) []envMsg {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for queuedMessages(t, filepath.Join(s.dir, "spool")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sink queue not empty after 60s%s", eximLogs(s.dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.assertSinkLogClean(t)
	return s.read(t, maildirFiles(t, filepath.Join(s.dir, "maildir")))
}

func (s *sink) read(t *testing.T, files []string) []envMsg {
	t.Helper()
	var msgs []envMsg
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := parseSinkMessage(b)
		if err != nil {
			t.Fatalf("sink message %s: %v", f, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func maildirFiles(t *testing.T, md string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(md, "new"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range ents {
		files = append(files, filepath.Join(md, "new", e.Name()))
	}
	return files
}

// queuedMessages counts the messages in an Exim spool: one -H file each.
func queuedMessages(t *testing.T, spoolDir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(spoolDir, "input"), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file Exim just removed, or no input dir yet
			}
			return err
		}
		if strings.HasSuffix(p, "-H") {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

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

// writer is the ISP-side Exim writing BSMTP spools (testdata/rig/writer.conf).
type writer struct {
	r   *rig
	dir string
}

func (r *rig) newWriter(t *testing.T) *writer {
	t.Helper()
	return &writer{r: r, dir: r.mkdir(t, "writer")}
}

// filePath is the appended BSMTP file Exim writes for host (file_hosts).
func (w *writer) filePath(host string) string { return filepath.Join(w.dir, "out", host) }

// dirPath is the one-message-per-file directory for host (dir_hosts).
func (w *writer) dirPath(host string) string { return filepath.Join(w.dir, "outdir", host) }

// inject submits one message the way a local program hands mail to Exim
// (-odi: delivered into the spool file before exim returns; -oi: a lone dot
// is data). It is safe for concurrent use and reports instead of failing,
// so goroutines can call it.
func (w *writer) inject(from string, to []string, msg []byte) error {
	if from == "" {
		from = "<>"
	}
	args := []string{"-C", filepath.Join(w.r.dir, "writer.conf"), "-DWRITER_DIR=" + w.dir}
	args = append(args, w.r.userDefines()...)
	args = append(args, "-odi", "-oi", "-f", from)
	args = append(args, to...)
	cmd := exec.Command(w.r.exim, args...)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("exim -odi -f %s %v: %w\n%s", from, to, err, out)
	}
	return nil
}

// flushQueue delivers whatever the writer had to defer (a lock it could not
// get in time), so a test can tell "deferred by Exim" from "lost".
func (w *writer) flushQueue(t *testing.T) {
	t.Helper()
	args := []string{"-C", filepath.Join(w.r.dir, "writer.conf"), "-DWRITER_DIR=" + w.dir}
	args = append(args, w.r.userDefines()...)
	args = append(args, "-qff")
	if out, err := exec.Command(w.r.exim, args...).CombinedOutput(); err != nil {
		t.Fatalf("exim -qff: %v\n%s", err, out)
	}
	if n := queuedMessages(t, filepath.Join(w.dir, "spool")); n != 0 {
		t.Fatalf("writer Exim still holds %d messages after -qff%s", n, eximLogs(w.dir))
	}
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

// privateFiles lists etrnflush's files next to the spool base name: work
// files, journals, temp files, and every entry of the quarantine and failed
// folders (keyed by kind).
func privateFiles(t *testing.T, dir, base string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return got
	}
	if err != nil {
		t.Fatal(err)
	}
	prefix := ".etrnflush-" + base + "."
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-"):
			got["tmp"] = append(got["tmp"], n)
		case !strings.HasPrefix(n, prefix):
		case strings.HasSuffix(n, ".work"):
			got["work"] = append(got["work"], filepath.Join(dir, n))
		case strings.HasSuffix(n, ".journal"):
			got["journal"] = append(got["journal"], filepath.Join(dir, n))
		case n == prefix+"quarantine" || n == prefix+"failed":
			kind := strings.TrimPrefix(n, prefix)
			sub, err := os.ReadDir(filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sub {
				got[kind] = append(got[kind], filepath.Join(dir, n, s.Name()))
			}
		}
	}
	return got
}

// assertNoMailLeft checks that no message is left anywhere: the spool path
// is gone or empty, and no work file, journal, temp file, quarantined or
// failed message exists. The host lock file may stay.
func assertNoMailLeft(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		t.Fatal(err)
	case fi.IsDir():
		ents, err := os.ReadDir(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			t.Errorf("left in spool directory: %s", e.Name())
		}
	case fi.Size() != 0:
		t.Errorf("spool file %s still holds %d octets", path, fi.Size())
	}
	for kind, files := range privateFiles(t, filepath.Dir(path), filepath.Base(path)) {
		t.Errorf("left behind (%s): %v", kind, files)
	}
}

// snapTree maps every path under dir to its type, mode and content
// digest, to prove that something changed nothing.
func snapTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(h[:])
		}
		snap[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func diffTrees(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, d := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("%s: %s disappeared", what, p)
		} else if a != d {
			t.Errorf("%s: %s changed: %s -> %s", what, p, d, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// TestEximETRNHostRejects: the ETRN argument reaches etrnflush verbatim
// through a real Exim (exim.md surprise 2). A hostile value must be refused
// (exit 64) before any file is created; a good one must run. The good one
// also shows that a run under Exim's umask 0 creates nothing group- or
// world-writable (surprise 4).
func TestEximETRNHostRejects(t *testing.T) {
	r := newRig(t)
	dir := r.mkdir(t, "etrn")
	state := filepath.Join(dir, "state")
	spoolDir := filepath.Join(state, "spool")
	for _, d := range []string{state, spoolDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, r.uid, r.gid); err != nil {
			t.Fatal(err)
		}
	}
	logFile := filepath.Join(state, "etrnflush.log")
	conf := fmt.Sprintf("spool_dir = %q\nlog = %q\ntimeout = \"10s\"\n", spoolDir, logFile)
	if err := os.WriteFile(filepath.Join(state, "etrnflush.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etrn-any"), []byte("*: any\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := r.startDaemon(t, "etrn.conf", dir, "ETRN_PORT",
		"-DETRN_DIR="+dir, "-DETRN_HOOK="+filepath.Join(r.dir, "etrn-hook.sh"), "-DETRN_BIN="+etrnflushBin)
	calls := filepath.Join(state, "calls.log")

	// The good name first: it proves the whole path (Exim, hook, etrnflush)
	// works, so that the refusals below cannot pass by never running.
	etrn(t, d.addr(), "@Good.Example")
	got := waitCalls(t, calls, 1)
	if got[0].arg != "@Good.Example" || got[0].code != "0" {
		t.Fatalf("ETRN @Good.Example: hook saw %+v, want exit 0", got[0])
	}
	logb, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("etrnflush wrote no log file under Exim: %v", err)
	}
	if !strings.Contains(string(logb), "host=good.example") {
		t.Errorf("log has no line for host=good.example (the name folded):\n%s", logb)
	}
	err = filepath.WalkDir(state, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if p != calls && p != state && p != spoolDir && fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("created under umask 0 with mode %v: %s", fi.Mode(), p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	before := snapTree(t, state)
	hostile := []string{
		"../escape", "../../escape", "a/b", "/abs", "two words", "a..b", ".hidden",
		"-x", "--spool=/tmp", "#", "@", "x;touch pwned", "dot.", "a\\b",
		strings.Repeat("a", 64) + ".example",
		strings.Repeat("abcdefghi.", 25) + "example", // 259 octets
	}
	for _, h := range hostile {
		etrn(t, d.addr(), h)
	}
	got = waitCalls(t, calls, 1+len(hostile))[1:]
	seen := map[string]call{}
	for _, c := range got {
		seen[c.arg] = c
	}
	for _, h := range hostile {
		c, ok := seen[h]
		switch {
		case !ok:
			t.Errorf("ETRN %q: the hook never saw this argument (calls: %+v)", h, got)
		case c.code != "64":
			t.Errorf("ETRN %q: etrnflush exited %s, want 64; it said: %s", h, c.code, c.out)
		case !strings.HasPrefix(h, "-") && !strings.Contains(c.out, "invalid host"):
			t.Errorf("ETRN %q: output %q does not say invalid host", h, c.out)
		}
	}
	after := snapTree(t, state)
	delete(before, calls)
	delete(after, calls)
	delete(before, logFile) // the log may record the refusals
	delete(after, logFile)
	diffTrees(t, "hostile ETRN arguments", before, after)
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		t.Error("a file named escape was created above the state directory")
	}
}

// etrn sends one ETRN over a fresh SMTP session and expects Exim's 250
// (Exim replies before the command has even started, exim.md d.3).
func etrn(t *testing.T, addr, arg string) {
	t.Helper()
	if code, l := etrnReply(t, addr, arg); code/100 != 2 {
		t.Fatalf("%q: %q", "ETRN "+arg, l)
	}
}

type call struct{ code, arg, out string }

// waitCalls waits until the hook has recorded n calls.
func waitCalls(t *testing.T, path string, n int) []call {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		var calls []call
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l == "" {
				continue
			}
			f := strings.SplitN(l, "\t", 3)
			if len(f) != 3 {
				t.Fatalf("bad line in %s: %q", path, l)
			}
			calls = append(calls, call{f[0], f[1], f[2]})
		}
		if len(calls) >= n {
			return calls
		}
		if time.Now().After(deadline) {
			t.Fatalf("hook ran %d times, want %d, after 60s: %+v", len(calls), n, calls)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
