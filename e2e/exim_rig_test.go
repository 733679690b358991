//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"etrnflush/internal/testcert"
)

// The Exim rig: daemons on free ports under a private configuration, a writer
// Exim that builds spools, and a receiving Exim (the sink) whose log every
// test checks for protocol errors.

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

// makeCert writes a self-signed certificate and its key for sink.example
// into a new state directory the Exim user can read, and returns the two
// paths.
func (r *rig) makeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = testcert.New(t, "sink.example", "127.0.0.1").WriteFiles(t, r.mkdir(t, "tls"))
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chown(f, r.uid, r.gid); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// startSinkWith starts the sink with extra macros (TLS, CHUNKING).
func (r *rig) startSinkWith(t *testing.T, defines ...string) *sink {
	t.Helper()
	dir := r.mkdir(t, "sink")
	d := r.startDaemon(t, "sink.conf", dir, "SINK_PORT", append([]string{"-DSINK_DIR=" + dir}, defines...)...)
	return &sink{daemon: d, r: r}
}

// receptions returns the sink's "<=" log lines.
func (s *sink) receptions(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "log", "mainlog"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " <= ") {
			out = append(out, l)
		}
	}
	return out
}

// sinkLogBad matches the sink log lines that mean a client broke the
// protocol: Exim 4.96 writes "SMTP protocol error in ...", "SMTP
// synchronization error" and "SMTP call from ... dropped: too many syntax
// or protocol errors" (with +smtp_protocol_error +smtp_syntax_error).
var sinkLogBad = regexp.MustCompile(`(?i)protocol error|synchronization error|dropped:`)

// protocolErrors returns the sink's main log lines that record a protocol
// or synchronisation error or a dropped session. It fails the test if
// the sink's config does not log them, so that the oracle cannot go blind.
func (s *sink) protocolErrors(t *testing.T) []string {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join(s.r.dir, "sink.conf"))
	if err != nil {
		t.Fatal(err)
	}
	sel := regexp.MustCompile(`(?m)^log_selector\s*=(.*)$`).FindSubmatch(conf)
	if sel == nil || !strings.Contains(string(sel[1]), "+smtp_protocol_error") || !strings.Contains(string(sel[1]), "+smtp_syntax_error") {
		t.Fatal("sink.conf: log_selector must have +smtp_protocol_error +smtp_syntax_error, or protocol errors go unlogged")
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "log", "mainlog"))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, l := range strings.Split(string(b), "\n") {
		if sinkLogBad.MatchString(l) {
			bad = append(bad, l)
		}
	}
	return bad
}

// assertSinkLogClean: the receiving Exim logged no protocol or
// synchronisation error and dropped no session.
func (s *sink) assertSinkLogClean(t *testing.T) {
	t.Helper()
	if bad := s.protocolErrors(t); len(bad) > 0 {
		t.Errorf("the receiving Exim logged %d protocol/synchronisation errors or dropped sessions:\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
}

// sinkSessions counts the SMTP sessions of a client that said EHLO
// test.example, by the line Exim logs at the end of each ("SMTP connection
// from (test.example) [127.0.0.1] closed by QUIT", "... lost", "SMTP call
// from (test.example) ... dropped: ..."): the
// line at the start names no HELO, and the daemon's start-up probe says
// no EHLO at all.
func (s *sink) sinkSessions(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "log", "mainlog"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "SMTP connection from (test.example) ") +
		strings.Count(string(b), "SMTP call from (test.example) ")
}

// startKeepingSink is startSink with Exim's removal of incoming
// Return-path:, Envelope-to: and Delivery-date: fields turned off: the
// default would hide a replay that sends a spool's envelope fields on.
func (r *rig) startKeepingSink(t *testing.T) *sink {
	t.Helper()
	dir := r.mkdir(t, "sink")
	d := r.startDaemon(t, "sink.conf", dir, "SINK_PORT", "-DSINK_DIR="+dir, "-DSINK_KEEP_ENVELOPE_FIELDS")
	return &sink{daemon: d, r: r}
}

// waitReplayed waits until the sink has delivered want and checks that
// each message arrived intact, with the ESMTP parameters its content needs.
func (s *sink) waitReplayed(t *testing.T, want []envMsg) {
	t.Helper()
	got := s.waitDelivered(t, len(want))
	sameMessages(t, "sink", want, got)
	for _, m := range got {
		checkMailParams(t, m)
	}
}
