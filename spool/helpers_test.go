package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a child process that holds an fcntl lock:
// fcntl locks of this process would not exclude its own claim.
func TestMain(m *testing.M) {
	if p := os.Getenv("SPOOL_TEST_HOLD_FCNTL"); p != "" {
		holdFcntl(p)
		return
	}
	os.Exit(m.Run())
}

func holdFcntl(p string) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin) // hold until the parent closes stdin
	os.Exit(0)
}

// startHolder runs a child that holds the fcntl lock on p until the
// returned function is called.
func startHolder(t *testing.T, p string) (release func()) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "SPOOL_TEST_HOLD_FCNTL="+p)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(outp).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("holder: %q %v", line, err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := in.Close(); err != nil {
				t.Error(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

type tmsg struct {
	from string
	to   []string
	body string // unstuffed content
}

func (m tmsg) bsmtp() string {
	var b strings.Builder
	fmt.Fprintf(&b, "MAIL FROM:<%s>\n", m.from)
	for _, r := range m.to {
		fmt.Fprintf(&b, "RCPT TO:<%s>\n", r)
	}
	b.WriteString("DATA\n")
	for _, l := range strings.SplitAfter(m.body, "\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteString(".")
		}
		b.WriteString(l)
	}
	b.WriteString(".\n")
	return b.String()
}

// mkmsgs builds n messages with two recipients each.
func mkmsgs(n int) []tmsg {
	var ms []tmsg
	for i := 0; i < n; i++ {
		ms = append(ms, tmsg{
			from: fmt.Sprintf("s%d@x.example", i),
			to:   []string{fmt.Sprintf("a%d@h.example", i), fmt.Sprintf("b%d@h.example", i)},
			body: fmt.Sprintf("Subject: m%d\n\n.dotted line %d\nbody\n", i, i),
		})
	}
	return ms
}

func join(ms []tmsg) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString(m.bsmtp())
	}
	return b.String()
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

type events struct{ list []Event }

func (e *events) report(ev Event) { e.list = append(e.list, ev) }
func (e *events) kinds() []string {
	var k []string
	for _, ev := range e.list {
		k = append(k, ev.Kind)
	}
	return k
}

func open(t *testing.T, path string, ev *events, dry bool) Spool {
	t.Helper()
	o := Options{Path: path, Host: "h.example", Format: "auto", DryRun: dry}
	if ev != nil {
		o.Report = ev.report
	}
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// got is what one Next yielded, in a form independent of ids.
type got struct {
	from string
	to   string
	body string
}

func content(t *testing.T, m *Message) string {
	t.Helper()
	rc, err := m.Open()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func toGot(t *testing.T, m *Message) got {
	return got{m.From, strings.Join(m.To, ","), content(t, m)}
}

// messages yields s's messages until io.EOF, one Next per step, so that
// a loop body may settle each before the next is read. Any other error
// fails the test.
func messages(t *testing.T, s Spool) iter.Seq[*Message] {
	t.Helper()
	return func(yield func(*Message) bool) {
		for {
			m, err := s.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if !yield(m) {
				return
			}
		}
	}
}

// drainAll yields every message, settles each with out(m) and closes.
func drainAll(t *testing.T, s Spool, out func(*Message) []Outcome) []got {
	t.Helper()
	var gs []got
	for m := range messages(t, s) {
		gs = append(gs, toGot(t, m))
		if err := s.Settle(m, out(m), "550 5.1.1 no such user\r\nsecond line"); err != nil {
			t.Fatalf("Settle: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return gs
}

func all(o Outcome) func(*Message) []Outcome {
	return func(m *Message) []Outcome {
		out := make([]Outcome, len(m.To))
		for i := range out {
			out[i] = o
		}
		return out
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	sort.Strings(n)
	return n
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// fastLocks shortens the claim timings for one test.
func fastLocks(t *testing.T, lockFile, fcntl time.Duration) {
	t.Helper()
	a, b, c, d, e := lockFileTimeout, fcntlTimeout, lockRetryMin, lockRetryMax, growthLockTimeout
	lockFileTimeout, fcntlTimeout, lockRetryMin, lockRetryMax, growthLockTimeout = lockFile, fcntl, 10*time.Millisecond, 20*time.Millisecond, fcntl
	t.Cleanup(func() {
		lockFileTimeout, fcntlTimeout, lockRetryMin, lockRetryMax, growthLockTimeout = a, b, c, d, e
	})
}

func mkfifo(p string) error { return unix.Mkfifo(p, 0o600) }
