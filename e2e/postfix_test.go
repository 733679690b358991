//go:build e2e

package e2e

// Postfix's smtp-sink as a second real receiver. .ci/run unpacks the
// postfix package (it conflicts with exim4, so it is not installed) into
// $ETRNFLUSH_SMTP_SINK; the tests run usr/sbin/smtp-sink from there on a
// free loopback port, with one fault switch at a time, and check each
// outcome against smtp-sink(1) and etrnflush(8): exit status, what is left
// in the spool, what is in the failed folder, the status= of every log
// line, and that every message smtp-sink took is in its -d dump byte for
// byte (or, for a server without 8BITMIME, converted to 7-bit MIME that
// decodes to the same bytes).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime/quotedprintable"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// smtpSinkDefaultDir is where .ci/run unpacks the postfix package when
// ETRNFLUSH_SMTP_SINK is not set.
const smtpSinkDefaultDir = "/opt/etrnflush-smtp-sink"

// needSmtpSink returns the smtp-sink binary and the directory of its
// shared libraries, or skips the test (fails it when CI=true).
func needSmtpSink(t testing.TB) (bin, libDir string) {
	t.Helper()
	dir := os.Getenv("ETRNFLUSH_SMTP_SINK")
	if dir == "" {
		dir = smtpSinkDefaultDir
	}
	bin = filepath.Join(dir, "usr", "sbin", "smtp-sink")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, filepath.Join(dir, "usr", "lib", "postfix")
	}
	msg := "smtp-sink not found in " + dir + ": run .ci/run (apt-get download postfix; dpkg-deb -x) or set ETRNFLUSH_SMTP_SINK"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return "", ""
}

// smtpSink is one running smtp-sink.
type smtpSink struct {
	addr  string
	dumps string // the -d directory
	cmd   *exec.Cmd
	done  chan struct{} // closed when the process has exited
	out   *syncBuffer   // its standard error (fatal errors, warnings)
}

// syncBuffer is a bytes.Buffer that the process's output copier and the
// test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startSmtpSink starts smtp-sink with flags on 127.0.0.1 and a free port,
// dumping every transaction with -d into a directory of its own, and stops
// it when the test ends. As root it must drop to another user (-u); it
// runs as nobody then, and the dump directory is nobody's.
func startSmtpSink(t *testing.T, flags ...string) *smtpSink {
	t.Helper()
	bin, libDir := needSmtpSink(t)
	base, err := os.MkdirTemp("", "smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove %s: %v", base, err)
		}
	})
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dumps := filepath.Join(base, "dumps")
	if err := os.Mkdir(dumps, 0o755); err != nil {
		t.Fatal(err)
	}
	var asUser []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("smtp-sink must not run as root and there is no user nobody: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dumps, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"-u", "nobody"}
	}
	faultAtConnect := false
	for i, f := range flags {
		if i > 0 && slices.Contains([]string{"-q", "-Q", "-r", "-f"}, flags[i-1]) && strings.Contains(strings.ToLower(f), "connect") || f == "-P" {
			faultAtConnect = true
		}
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s := &smtpSink{addr: fmt.Sprintf("127.0.0.1:%d", port), dumps: dumps, done: make(chan struct{}), out: &syncBuffer{}}
		name := fmt.Sprintf("sink-%d.example", port)
		args := append(append(slices.Clone(asUser), flags...), "-h", name, "-d", filepath.Join(dumps, "%M."), s.addr, "64")
		s.cmd = exec.Command(bin, args...)
		s.cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libDir)
		s.cmd.Stdout = s.out
		s.cmd.Stderr = s.out
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		go func() {
			_ = s.cmd.Wait() // the exit is checked through done and out
			close(s.done)
		}()
		if err := s.waitListening(name, faultAtConnect); err != nil {
			lastErr = err
			s.stop()
			if strings.Contains(s.out.String(), "in use") || strings.HasPrefix(err.Error(), "another server") {
				continue // lost the port to someone else: another one
			}
			t.Fatal(err)
		}
		t.Cleanup(func() {
			s.stop()
			if t.Failed() {
				t.Logf("smtp-sink on %s said: %s", s.addr, s.out.String())
			}
		})
		t.Logf("smtp-sink %s on %s", strings.Join(flags, " "), s.addr)
		return s
	}
	t.Fatalf("smtp-sink would not start: %v", lastErr)
	return nil
}

// waitListening waits until this smtp-sink answers on its port. Another
// test's process may have taken the same free port first (this one then
// exits with "Address already in use"), so the greeting must carry this
// sink's -h name; with a fault switch at connect there is no such
// greeting, and staying alive for 300 ms after the port answered is the
// proof (a failed bind is fatal at once).
func (s *smtpSink) waitListening(name string, faultAtConnect bool) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("smtp-sink exited at start: %s", s.out.String())
		default:
		}
		if faultAtConnect {
			if canConnect(s.addr) {
				select {
				case <-s.done:
					return fmt.Errorf("smtp-sink exited at start: %s", s.out.String())
				case <-time.After(300 * time.Millisecond):
					return nil
				}
			}
		} else if greeting(s.addr) != "" {
			if g := greeting(s.addr); g != "220 "+name && !strings.HasPrefix(g, "220 "+name+" ") {
				return fmt.Errorf("another server answers on %s: %q (smtp-sink said: %s)", s.addr, g, s.out.String())
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("smtp-sink not listening on %s after 15s: %s", s.addr, s.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// greeting connects to addr and returns the first reply line, "" if none.
func greeting(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer func() { _ = c.Close() }() // a probe
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	l, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(l, "\r\n")
}

func (s *smtpSink) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM) // it may be exiting already
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill() // last resort; done follows
		<-s.done
	}
}

// settle makes sure smtp-sink has finished with the sessions etrnflush
// held, so that the dumps of transactions it abandoned are gone: it
// handles one client at a time in one event loop, and it removes an
// unfinished dump in the same step as it closes the session. A probe
// session of its own (greeting, QUIT) is served only after that. A sink
// that has exited (-M) or drops connections is settled anyway.
func (s *smtpSink) settle() {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return
	}
	defer func() { _ = c.Close() }() // a probe
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return
	}
	if _, err := io.WriteString(c, "QUIT\r\n"); err != nil {
		return
	}
	_, _ = br.ReadString('\n')
}

// sinkDump is one -d dump: smtp-sink's own header lines and the content.
type sinkDump struct {
	name     string
	proto    string   // X-Client-Proto
	mailArgs string   // X-Mail-Args
	rcptArgs []string // X-Rcpt-Args
	data     []byte   // the content as received, LF line ends
}

// dumped returns every dump smtp-sink finished. The format (smtp-sink(1),
// DUMP FILE FORMAT): X-Client-Addr, X-Client-Proto, X-Helo-Args,
// X-Mail-Args, X-Rcpt-Args..., a three-line Received header, the content
// with CR removed and dot-stuffing undone, then one empty line. The dump
// of a transaction that did not end is removed by smtp-sink when it sees
// the session end, which a delayed reply (-w) puts off: such a dump is
// waited for to go, for 10 s.
func (s *smtpSink) dumped(t *testing.T) []sinkDump {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.settle()
		ents, err := os.ReadDir(s.dumps)
		if err != nil {
			t.Fatal(err)
		}
		var out []sinkDump
		var bad []string
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(s.dumps, e.Name()))
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			if err != nil {
				t.Fatal(err)
			}
			d, err := parseSinkDump(b)
			if err != nil {
				bad = append(bad, fmt.Sprintf("dump %s: %v\n%.400q", e.Name(), err, b))
				continue
			}
			d.name = e.Name()
			out = append(out, d)
		}
		exited := false
		select {
		case <-s.done:
			exited = true
		default:
		}
		if len(bad) == 0 || exited || time.Now().After(deadline) {
			for _, b := range bad {
				t.Error(b)
			}
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func parseSinkDump(b []byte) (sinkDump, error) {
	var d sinkDump
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return d, errors.New("no Received header: an unfinished transaction")
		}
		l := string(b[:i])
		b = b[i+1:]
		name, val, _ := strings.Cut(l, ": ")
		switch name {
		case "X-Client-Addr", "X-Helo-Args":
		case "X-Client-Proto":
			d.proto = val
		case "X-Mail-Args":
			d.mailArgs = val
		case "X-Rcpt-Args":
			d.rcptArgs = append(d.rcptArgs, val)
		case "Received":
			// Two continuation lines: "\tby HOST (smtp-sink) with
			// PROTO id ID;" and "\tDATE".
			for range 2 {
				i := bytes.IndexByte(b, '\n')
				if i < 0 || b[0] != '\t' {
					return d, errors.New("Received header cut short")
				}
				b = b[i+1:]
			}
			if !bytes.HasSuffix(b, []byte("\n\n")) {
				return d, errors.New("content does not end with smtp-sink's empty line")
			}
			d.data = b[:len(b)-1]
			return d, nil
		default:
			return d, fmt.Errorf("unexpected smtp-sink header line %q", l)
		}
	}
}

// envelope returns the dump's sender and recipients from the MAIL and RCPT
// arguments.
func (d sinkDump) envelope() (from string, to []string, err error) {
	from, err = angleAddr("MAIL FROM:" + d.mailArgs)
	if err != nil {
		return "", nil, err
	}
	for _, r := range d.rcptArgs {
		a, err := angleAddr("RCPT TO:" + r)
		if err != nil {
			return "", nil, err
		}
		to = append(to, a)
	}
	return from, to, nil
}

// sinkMessages makes n messages for host, told apart by tag; message i
// goes to u<i>@host (and v<i>@host for every third). They hold the lines
// that catch a careless relay: a lone dot, lines starting with one or two
// dots, "From " at the start of a line, trailing white space, a 990-octet
// line and empty lines; the odd ones have 8-bit text (UTF-8) in the body,
// message 4 is about 100 KB, message 0 has the null sender.
func sinkMessages(tag, host string, n int) []envMsg {
	var msgs []envMsg
	for i := range n {
		m := envMsg{From: "alice@sender.example", To: []string{fmt.Sprintf("u%d@%s", i, host)}}
		if i%3 == 1 {
			m.To = append(m.To, fmt.Sprintf("v%d@%s", i, host))
		}
		if i == 0 {
			m.From = ""
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "From: Alice <alice@sender.example>\nTo: %s\nSubject: %s %d\nMessage-ID: <%s-%d@test.example>\n", m.To[0], tag, i, tag, i)
		if i%2 == 1 {
			b.WriteString("MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n")
		}
		b.WriteString("\nfirst line\n.\n.leading dot\n..two dots\nFrom the start of a line\ntrailing space  \ntrailing tab\t\n\n")
		if i%2 == 1 {
			b.WriteString("gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln, \xe2\x82\xac 5\n")
		}
		b.WriteString(strings.Repeat("x", 990) + "\n")
		lines := 3
		if i == 4 {
			lines = 1500
		}
		for l := range lines {
			fmt.Fprintf(&b, "line %d of %s %d: %s\n", l, tag, i, strings.Repeat("y", l%61))
		}
		b.WriteString(".\nlast line\n")
		m.Data = b.Bytes()
		msgs = append(msgs, m)
	}
	return msgs
}

func isEightBit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// sinkResult is what one etrnflush run left.
type sinkResult struct {
	code   int
	stderr string
	status map[string]string // first recipient -> status= of its log line
	// keptUnlogged counts the messages kept by a line of their own
	// ("status=deferred messages=N") when the host could not be reached
	// or the connection ended before they were offered.
	keptUnlogged int
	lines        map[string]string // first recipient -> its log line
	summary      map[string]int    // the summary line's counts
	kept         map[string]envMsg // first recipient -> what the spool still holds
	failed       map[string]failedCopy
}

type failedCopy struct {
	msg envMsg
	why string
}

var (
	logStatusRe  = regexp.MustCompile(` to=<([^>]*)>\S* .*\bstatus=(\w+)`)
	logKeptRe    = regexp.MustCompile(` status=deferred messages=(\d+) `)
	logSummaryRe = regexp.MustCompile(`event=summary host=\S+ sent=(\d+) deferred=(\d+) failed=(\d+) quarantined=(\d+) uncertain=(\d+)`)
)

// flushToSink runs etrnflush for host on the spool directory spoolDir
// into s, and reads what it left.
func flushToSink(t *testing.T, s *smtpSink, spoolDir, host string, extra ...string) sinkResult {
	t.Helper()
	args := append([]string{"--spool", spoolDir, "--to", s.addr, "--tls", "none", "--helo", "test.example"}, extra...)
	_, stderr, code := runEtrnflush(t, append(args, host)...)
	t.Logf("etrnflush exit %d; log:\n%s", code, stderr)
	r := sinkResult{code: code, stderr: stderr, status: map[string]string{}, lines: map[string]string{}, summary: map[string]int{},
		kept: map[string]envMsg{}, failed: map[string]failedCopy{}}
	for _, l := range strings.Split(stderr, "\n") {
		if m := logStatusRe.FindStringSubmatch(l); m != nil {
			if old, ok := r.status[m[1]]; ok {
				t.Errorf("two log lines for <%s>: status=%s and status=%s", m[1], old, m[2])
			}
			r.status[m[1]] = m[2]
			r.lines[m[1]] = l
		}
		if m := logKeptRe.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			r.keptUnlogged += n
		}
		if m := logSummaryRe.FindStringSubmatch(l); m != nil {
			for i, k := range []string{"sent", "deferred", "failed", "quarantined", "uncertain"} {
				r.summary[k], _ = strconv.Atoi(m[i+1])
			}
		}
	}
	if len(r.summary) == 0 {
		t.Errorf("no summary line in the log:\n%s", stderr)
	}
	if _, err := os.Stat(spoolDir); err == nil {
		for _, m := range spoolMessages(t, spoolDir) {
			r.kept[m.To[0]] = m
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	fd := filepath.Join(filepath.Dir(spoolDir), ".etrnflush-"+host+".failed")
	ents, err := os.ReadDir(fd)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".bsmtp")
		if !ok {
			continue
		}
		why, err := os.ReadFile(filepath.Join(fd, name+".why"))
		if err != nil {
			t.Errorf("failed folder: %s has no reason: %v", e.Name(), err)
		}
		for _, m := range parseBSMTPFile(t, filepath.Join(fd, e.Name())) {
			if _, dup := r.failed[m.To[0]]; dup {
				t.Errorf("failed folder: <%s> twice", m.To[0])
			}
			r.failed[m.To[0]] = failedCopy{m, string(why)}
		}
	}
	return r
}

// sinkExpect is what a case must end with.
type sinkExpect struct {
	code int
	// The number of messages with each final status= (log lines and
	// summary agree).
	sent, deferred, failed, uncertain int
	// why: a failed copy's reason, and the reply= of a deferred
	// message's log line, name this reply.
	why string
	// refusedDumps: smtp-sink dumps a transaction once it has read the
	// final dot, before it answers it (-r ., -f ., -Q .): a refused or
	// deferred message may then be in the dumps as well, up to this many
	// times (2 where a 421 to the dot has it offered once more in a new
	// session).
	refusedDumps int
	// uncertainDumped: smtp-sink read every dot etrnflush got no reply
	// to (-q ., -M), so each uncertain message is in the dumps once.
	uncertainDumped bool
	// converted: the server has no 8BITMIME (-8, -e): 8-bit messages
	// arrive as 7-bit MIME.
	converted bool
	proto     string // X-Client-Proto, default ESMTP
}

// checkSinkRun checks every message of msgs against the run's log, the
// spool, the failed folder and the sink's dumps: a message logged sent is
// gone from the spool and dumped exactly once, intact; one logged failed
// is in the failed folder, intact, with the reply; one logged deferred or
// uncertain is still in the spool as it was; nothing is lost, nothing is
// dumped that was not sent (but where smtp-sink dumps before it answers).
func checkSinkRun(t *testing.T, msgs []envMsg, r sinkResult, dumps []sinkDump, want sinkExpect) {
	t.Helper()
	if r.code != want.code {
		t.Errorf("exit %d, want %d", r.code, want.code)
	}
	counts := map[string]int{"deferred": r.keptUnlogged}
	for _, st := range r.status {
		counts[st]++
	}
	for st, n := range map[string]int{"sent": want.sent, "deferred": want.deferred, "failed": want.failed, "uncertain": want.uncertain} {
		if counts[st] != n {
			t.Errorf("%d log lines with status=%s, want %d", counts[st], st, n)
		}
		if r.summary[st] != n {
			t.Errorf("summary %s=%d, want %d", st, r.summary[st], n)
		}
	}
	if len(r.status)+r.keptUnlogged != len(msgs) {
		t.Errorf("%d messages logged (%d on their own line, %d kept together), want %d",
			len(r.status)+r.keptUnlogged, len(r.status), r.keptUnlogged, len(msgs))
	}
	proto := want.proto
	if proto == "" {
		proto = "ESMTP"
	}
	dumpsOf := map[string][]sinkDump{}
	for _, d := range dumps {
		_, to, err := d.envelope()
		if err != nil || len(to) == 0 {
			t.Errorf("dump %s: envelope %q %q: %v", d.name, d.mailArgs, d.rcptArgs, err)
			continue
		}
		dumpsOf[to[0]] = append(dumpsOf[to[0]], d)
		if d.proto != proto {
			t.Errorf("dump %s: X-Client-Proto %s, want %s", d.name, d.proto, proto)
		}
	}
	for _, m := range msgs {
		key := m.To[0]
		st, logged := r.status[key]
		if !logged && r.keptUnlogged > 0 {
			st = "deferred" // counted in a "messages=N" line
		}
		ds := dumpsOf[key]
		delete(dumpsOf, key)
		kept, isKept := r.kept[key]
		fc, isFailed := r.failed[key]
		switch st {
		case "sent":
			if isKept || isFailed {
				t.Errorf("%s: sent, yet kept=%v failed=%v", m, isKept, isFailed)
			}
			if len(ds) != 1 {
				t.Errorf("%s: sent, dumped %d times", m, len(ds))
			}
		case "failed":
			if isKept || !isFailed {
				t.Errorf("%s: failed, yet kept=%v in failed folder=%v", m, isKept, isFailed)
			} else {
				if !bytes.Equal(fc.msg.Data, m.Data) || fc.msg.From != m.From || !slices.Equal(fc.msg.To, m.To) {
					t.Errorf("%s: failed copy changed: %s%s", m, fc.msg, firstDiff(m.Data, fc.msg.Data))
				}
				if !strings.Contains(fc.why, want.why) {
					t.Errorf("%s: reason %q does not name %q", m, fc.why, want.why)
				}
			}
		case "deferred", "uncertain":
			if l := r.lines[key]; st == "deferred" && logged && !strings.Contains(l, `reply="`+want.why) {
				t.Errorf("%s: log line does not give the reply %q: %s", m, want.why, l)
			}
			if !isKept || isFailed {
				t.Errorf("%s: %s, yet kept=%v failed=%v", m, st, isKept, isFailed)
			} else if !bytes.Equal(kept.Data, m.Data) || kept.From != m.From || !slices.Equal(kept.To, m.To) {
				t.Errorf("%s: kept copy changed: %s%s", m, kept, firstDiff(m.Data, kept.Data))
			}
		default:
			t.Errorf("%s: no status (%q); kept=%v failed=%v", m, st, isKept, isFailed)
		}
		switch {
		case st == "sent":
		case st == "uncertain" && want.uncertainDumped:
			if len(ds) != 1 {
				t.Errorf("%s: uncertain, dumped %d times, want once: smtp-sink read its dot", m, len(ds))
			}
		case st == "uncertain" && len(ds) <= 1:
			// The dot went out and no reply came: smtp-sink may have
			// read it (then it dumped it) or not.
		case len(ds) <= want.refusedDumps:
		case len(ds) > 0:
			t.Errorf("%s: status=%s, yet dumped %d times", m, st, len(ds))
		}
		for _, d := range ds {
			checkDumpContent(t, m, d, want.converted)
		}
	}
	for key, ds := range dumpsOf {
		for _, d := range ds {
			t.Errorf("dump %s for <%s> matches no message of the spool", d.name, key)
		}
	}
}

// checkDumpContent: the dump holds m's envelope and m's content byte for
// byte, or (converted, m 8-bit) m converted to 7-bit MIME.
func checkDumpContent(t *testing.T, m envMsg, d sinkDump, converted bool) {
	t.Helper()
	from, to, err := d.envelope()
	if err != nil {
		t.Errorf("dump %s: %v", d.name, err)
		return
	}
	if from != m.From || !slices.Equal(to, m.To) {
		t.Errorf("dump %s: envelope <%s> %v, want <%s> %v", d.name, from, to, m.From, m.To)
	}
	params := strings.Fields(d.mailArgs)[1:]
	for _, p := range params {
		if strings.HasPrefix(strings.ToUpper(p), "SIZE=") {
			t.Errorf("dump %s: MAIL has %s, but smtp-sink does not offer SIZE", d.name, p)
		}
	}
	eight := isEightBit(m.Data)
	wantBody := ""
	if eight && !converted {
		wantBody = "BODY=8BITMIME"
	}
	if got := strings.Join(params, " "); got != wantBody {
		t.Errorf("dump %s: MAIL parameters %q, want %q", d.name, got, wantBody)
	}
	if !eight || !converted {
		if !bytes.Equal(d.data, m.Data) {
			t.Errorf("dump %s: %s arrived changed%s", d.name, m, firstDiff(m.Data, d.data))
		}
		return
	}
	checkConverted(t, d.name, m.Data, d.data)
}

// checkConverted: got is want as 7-bit MIME: only 7-bit octets, want's
// header fields in their order with Content-Transfer-Encoding now
// quoted-printable, and a body that decodes to want's.
func checkConverted(t *testing.T, name string, want, got []byte) {
	t.Helper()
	if isEightBit(got) {
		t.Errorf("dump %s: 8-bit octets reached a server without 8BITMIME", name)
	}
	wh, wb, _ := bytes.Cut(want, []byte("\n\n"))
	gh, gb, ok := bytes.Cut(got, []byte("\n\n"))
	if !ok {
		t.Errorf("dump %s: no end of header", name)
		return
	}
	var rest []string
	for _, l := range strings.Split(string(gh), "\n") {
		if strings.EqualFold(l, "Content-Transfer-Encoding: quoted-printable") {
			continue
		}
		rest = append(rest, l)
	}
	var wantRest []string
	for _, l := range strings.Split(string(wh), "\n") {
		if !strings.HasPrefix(strings.ToLower(l), "content-transfer-encoding:") {
			wantRest = append(wantRest, l)
		}
	}
	if !slices.Equal(rest, wantRest) {
		t.Errorf("dump %s: header\n%s\nwant the original's with Content-Transfer-Encoding: quoted-printable:\n%s", name, gh, wh)
	}
	dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(gb)))
	if err != nil {
		t.Errorf("dump %s: body is not quoted-printable: %v", name, err)
		return
	}
	// quotedprintable.Reader ends hard line breaks with CRLF.
	dec = bytes.ReplaceAll(dec, []byte("\r\n"), []byte("\n"))
	if !bytes.Equal(dec, wb) {
		t.Errorf("dump %s: body decodes to something else%s", name, firstDiff(wb, dec))
	}
}

// sinkSpool writes msgs as Exim's one-message-per-file BSMTP directory
// for host, and returns its path.
func sinkSpool(t *testing.T, host string, msgs []envMsg) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), host)
	writeCrashDir(t, path, msgs)
	return path
}

// TestSmtpSinkFaults runs one flush per smtp-sink fault switch (and
// combination of offered extensions), six messages each.
func TestSmtpSinkFaults(t *testing.T) {
	needSmtpSink(t)
	const soft, hard = "450 4.3.0", "500 5.3.0" // smtp-sink's default -b and -B replies
	cases := []struct {
		name  string
		flags []string
		args  []string
		n     int
		want  sinkExpect
	}{
		// Accept-all, with what it offers taken away one by one.
		{name: "accept", want: sinkExpect{sent: 6}},
		{name: "no-pipelining", flags: []string{"-p"}, want: sinkExpect{sent: 6}},
		{name: "no-esmtp", flags: []string{"-e"}, want: sinkExpect{sent: 6, converted: true, proto: "SMTP"}},
		{name: "no-8bitmime", flags: []string{"-8"}, want: sinkExpect{sent: 6, converted: true}},
		{name: "no-enhancedstatuscodes", flags: []string{"-E"}, want: sinkExpect{sent: 6}},
		{name: "one-at-a-time", args: []string{"--max-inflight", "1"}, want: sinkExpect{sent: 6}},

		// -r: a soft (4xx) reply; the message stays for the next run.
		{name: "soft-connect", flags: []string{"-r", "connect"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "soft-ehlo", flags: []string{"-r", "ehlo"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "soft-mail", flags: []string{"-r", "mail"}, want: sinkExpect{code: 75, deferred: 6, why: soft}},
		{name: "soft-rcpt", flags: []string{"-r", "rcpt"}, want: sinkExpect{code: 75, deferred: 6, why: soft}},
		{name: "soft-data", flags: []string{"-r", "data"}, want: sinkExpect{code: 75, deferred: 6, why: soft}},
		{name: "soft-dot", flags: []string{"-r", "."}, want: sinkExpect{code: 75, deferred: 6, why: soft, refusedDumps: 1}},

		// -f: a hard (5xx) reply to MAIL, RCPT or the dot: permanent,
		// into the failed folder, exit 0 ("refused with a 5xx"). To
		// the greeting: nothing was refused, the host was.
		{name: "hard-connect", flags: []string{"-f", "connect"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "hard-ehlo-helo-fallback", flags: []string{"-f", "ehlo"}, want: sinkExpect{sent: 6, converted: true, proto: "SMTP"}},
		{name: "hard-mail", flags: []string{"-f", "mail"}, want: sinkExpect{failed: 6, why: hard}},
		{name: "hard-rcpt", flags: []string{"-f", "rcpt"}, want: sinkExpect{failed: 6, why: hard}},
		{name: "hard-data", flags: []string{"-f", "data"}, want: sinkExpect{failed: 6, why: hard}},
		{name: "hard-dot", flags: []string{"-f", "."}, want: sinkExpect{failed: 6, why: hard, refusedDumps: 1}},

		// -q: the connection closes without a reply. Before the dot:
		// not delivered, kept. After the dot: uncertain, kept.
		{name: "quit-connect", flags: []string{"-q", "connect"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "quit-ehlo", flags: []string{"-q", "ehlo"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "quit-mail", flags: []string{"-q", "mail"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "quit-rcpt", flags: []string{"-q", "rcpt"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "quit-data", flags: []string{"-q", "data"}, want: sinkExpect{code: 75, deferred: 6}},
		{name: "quit-dot", flags: []string{"-q", "."}, want: sinkExpect{code: 75, uncertain: 6, uncertainDumped: true}},

		// -Q: "421 4.0.0 Server closing connection", then the close. A
		// 4xx: kept; each one ends a session. A message answered 421
		// before anything of it could be taken (at RCPT, or at its dot)
		// is offered once more in the next session (sender.Result.
		// Unsent); at the dot smtp-sink has dumped it each time.
		{name: "close-rcpt", flags: []string{"-Q", "rcpt"}, want: sinkExpect{code: 75, deferred: 6, why: "421 4.0.0"}},
		{name: "close-dot", flags: []string{"-Q", "."}, want: sinkExpect{code: 75, deferred: 6, why: "421 4.0.0", refusedDumps: 2}},

		// -A: 550 some time after DATA's 354, without reading on, and
		// the connection closes. The 550 is all etrnflush hears after
		// its dot: permanent; every session ends, so one message a
		// session (6 of --max-connections 10).
		{name: "abort", flags: []string{"-A", "1"}, want: sinkExpect{failed: 6, why: "550 This violates SMTP"}},

		// -w: DATA answered after 2 s. Within --timeout: delivered,
		// slowly. Beyond it: the reply is waited for 1 s, the message
		// kept, the session ended; each one ends a session.
		{name: "slow-data", flags: []string{"-w", "1"}, n: 3, want: sinkExpect{sent: 3}},
		{name: "slow-data-timeout", flags: []string{"-w", "2"}, args: []string{"--timeout", "1s"}, n: 3,
			want: sinkExpect{code: 75, deferred: 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := tc.n
			if n == 0 {
				n = 6
			}
			const host = "sink.example"
			msgs := sinkMessages(tc.name, host, n)
			s := startSmtpSink(t, tc.flags...)
			spool := sinkSpool(t, host, msgs)
			r := flushToSink(t, s, spool, host, tc.args...)
			checkSinkRun(t, msgs, r, s.dumped(t), tc.want)
		})
	}
}

// TestSmtpSinkMessageLimit: smtp-sink -M 5 exits once it has read the
// fifth message's dot, before it answers it (smtp-sink(1): "Terminate
// after receiving count messages"). So the first four are sent, the fifth
// is uncertain (and in the dumps), the process is gone: the reconnect
// etrnflush makes for the rest is refused, and they are kept. A second run
// into a new sink sends what was kept, the fifth again: the one duplicate
// etrnflush(8) allows, nothing lost.
func TestSmtpSinkMessageLimit(t *testing.T) {
	const host = "sink.example"
	msgs := sinkMessages("limit", host, 12)
	s := startSmtpSink(t, "-M", "5")
	spool := sinkSpool(t, host, msgs)
	r := flushToSink(t, s, spool, host)
	first := s.dumped(t)
	checkSinkRun(t, msgs, r, first, sinkExpect{code: 75, sent: 4, uncertain: 1, deferred: 7, uncertainDumped: true})
	if !strings.Contains(r.stderr, "event=reconnect host="+host+" session=2 ") {
		t.Errorf("no reconnect after the sink ended the session")
	}
	if st := r.status[msgs[4].To[0]]; st != "uncertain" {
		t.Errorf("the fifth message: status=%q, want uncertain", st)
	}

	s2 := startSmtpSink(t)
	var rest []envMsg
	for _, m := range msgs {
		if _, ok := r.kept[m.To[0]]; ok {
			rest = append(rest, m)
		}
	}
	r2 := flushToSink(t, s2, spool, host)
	second := s2.dumped(t)
	checkSinkRun(t, rest, r2, second, sinkExpect{sent: 8})
	times := map[string]int{}
	for _, d := range append(first, second...) {
		_, to, err := d.envelope()
		if err == nil && len(to) > 0 {
			times[to[0]]++
		}
	}
	for i, m := range msgs {
		want := 1
		if i == 4 {
			want = 2
		}
		if times[m.To[0]] != want {
			t.Errorf("%s: dumped %d times over both runs, want %d", m, times[m.To[0]], want)
		}
	}
}

// TestSmtpSinkSMTPUTF8: smtp-sink never offers SMTPUTF8 (nor SIZE). A
// message with a non-ASCII sender, or a non-ASCII recipient, can never go
// to it: failed at once with 5.6.7, into the failed folder, exit 0; the
// others are sent (with no SIZE= on MAIL).
func TestSmtpSinkSMTPUTF8(t *testing.T) {
	const host = "sink.example"
	msgs := sinkMessages("utf8", host, 4)
	msgs[1].From = "j\xc3\xbcrgen@sender.example"
	msgs[2].To = []string{"u2@" + host, "fran\xc3\xa7oise@" + host}
	s := startSmtpSink(t)
	spool := sinkSpool(t, host, msgs)
	r := flushToSink(t, s, spool, host)
	checkSinkRun(t, msgs, r, s.dumped(t), sinkExpect{sent: 2, failed: 2, why: "5.6.7"})
}

// TestSmtpSinkEightBit: smtp-sink -8 does not offer 8BITMIME. With the
// default eight_bit = "convert", 8-bit bodies arrive as quoted-printable
// that decodes to the original, 7-bit messages unchanged, and a message
// whose header holds 8-bit octets (cannot be converted) fails with 5.6.3.
// With eight_bit = "refuse" every 8-bit message fails with 5.6.3.
func TestSmtpSinkEightBit(t *testing.T) {
	needSmtpSink(t)
	const host = "sink.example"
	for _, mode := range []string{"convert", "refuse"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			msgs := sinkMessages("8bit-"+mode, host, 4)
			hdr := envMsg{From: "alice@sender.example", To: []string{"u9@" + host},
				Data: []byte("From: alice@sender.example\nSubject: Gr\xc3\xbc\xc3\x9fe\nMessage-ID: <8bit-hdr@test.example>\n\nbody\n")}
			msgs = append(msgs, hdr)
			conf := filepath.Join(t.TempDir(), "etrnflush.toml")
			if err := os.WriteFile(conf, []byte("log = \"stderr\"\nbounce = false\neight_bit = \""+mode+"\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			s := startSmtpSink(t, "-8")
			spool := sinkSpool(t, host, msgs)
			r := flushToSink(t, s, spool, host, "-c", conf)
			want := sinkExpect{sent: 4, failed: 1, why: "5.6.3", converted: true}
			if mode == "refuse" {
				want = sinkExpect{sent: 2, failed: 3, why: "5.6.3", converted: true}
			}
			checkSinkRun(t, msgs, r, s.dumped(t), want)
			for _, m := range msgs {
				l := r.lines[m.To[0]]
				conv := strings.Contains(l, "converted=7bit")
				if wantConv := mode == "convert" && r.status[m.To[0]] == "sent" && isEightBit(m.Data); conv != wantConv {
					t.Errorf("%s: converted=7bit in its log line: %v, want %v: %s", m, conv, wantConv, l)
				}
			}
		})
	}
}
