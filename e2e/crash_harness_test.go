//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

// The crash harness: a recording SMTP server that can SIGKILL the child at a
// chosen command, spools written for the crash tests, and the loop that kills
// and reruns until the spool is clean, checking that nothing was lost and
// that duplicates stay within the in-flight window.

// recorder is an in-process SMTP server (fakesmtp's) that accepts every
// recipient its policy does not refuse (nil: all of them), records every
// message it accepted with the recipients it accepted, and can SIGKILL the
// etrnflush child at a chosen point of the dialogue.
type recorder struct {
	addr   string
	srv    *fakesmtp.Server
	policy rcptPolicy // set before the server starts; never changed

	mu       sync.Mutex
	mails    int        // MAIL commands since arm
	datas    int        // DATA commands since arm
	partials int        // DATA commands since arm of transactions with a 4xx recipient
	refusals int        // 5xx replies to RCPT since arm
	point    *killPoint // armed kill point; nil: none (or already fired)
	fired    *killPoint // the point that fired in this run, if any
	kill     func()     // kills the current child and waits until it is dead
}

// rcptPolicy returns the error to answer RCPT TO:<to> with on its
// attempt-th offer (1 for the first, counted over all runs), or nil to
// accept it.
type rcptPolicy func(to string, attempt int) *smtp.SMTPError

type killKind int

// killPoint is where a run is killed. With partial set, n counts only the
// transactions in which some recipient got a 4xx (killMidBody,
// killBeforeReply and killAfterReply): the 250 to their dot leaves the
// message partly sent, which the journal must record as such.
type killPoint struct {
	kind    killKind
	n       int
	bytes   int64
	delay   time.Duration
	partial bool
}

func (p *killPoint) String() string {
	if p == nil {
		return "no kill"
	}
	which := ""
	if p.partial {
		which = "partly deferred "
	}
	switch p.kind {
	case killAfterMail:
		return fmt.Sprintf("kill after MAIL #%d", p.n)
	case killMidBody:
		return fmt.Sprintf("kill after %d octets of %smessage #%d", p.bytes, which, p.n)
	case killBeforeReply:
		return fmt.Sprintf("kill before the 250 to %sdot #%d", which, p.n)
	case killAfterReply:
		return fmt.Sprintf("kill %s after the 250 to %sdot #%d", p.delay, which, p.n)
	case killAfterRefusal:
		return fmt.Sprintf("kill %s after the 5xx to refused RCPT #%d", p.delay, p.n)
	}
	return fmt.Sprintf("kill %s after start", p.delay)
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	return newPolicyRecorder(t, nil)
}

// newPolicyRecorder is newRecorder with a policy for RCPT replies.
func newPolicyRecorder(t *testing.T, policy rcptPolicy) *recorder {
	t.Helper()
	r := &recorder{policy: policy}
	r.srv = &fakesmtp.Server{
		Domain:  "recorder.example",
		Timeout: 30 * time.Second,
		Tune: func(srv *smtp.Server) {
			srv.MaxLineLength = 0 // no limit: BSMTP lines may be longer than SMTP allows
			srv.MaxMessageBytes = 0
			srv.EnableSMTPUTF8 = true
			// The error log stays discarded: killed clients make it
			// complain; that is the point.
		},
		// A killed client's half message is not taken.
		DiscardTruncated: true,
		OnMail:           r.onMail,
		OnRcpt:           r.onRcpt,
		OnData:           r.onData,
	}
	r.addr = fakesmtp.Run(t, r.srv)
	return r
}

// messages returns what the recorder accepted, with the LF line ends of
// the spool data (the client sent CRLF).
func (r *recorder) messages() []envMsg {
	var out []envMsg
	for _, m := range r.srv.Messages() {
		out = append(out, envMsg{From: m.From, To: m.To, Data: bytes.ReplaceAll(m.Data, []byte("\r\n"), []byte("\n"))})
	}
	return out
}

// rcptOffers returns how often each address was offered in RCPT.
func (r *recorder) rcptOffers() map[string]int { return r.srv.RcptOffers() }

// arm sets the kill point and the kill function for the next child run.
func (r *recorder) arm(p *killPoint, kill func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mails, r.datas, r.partials, r.refusals, r.point, r.kill, r.fired = 0, 0, 0, 0, p, kill, nil
}

// disarm ends a child run; lastFired still tells what fired in it.
func (r *recorder) disarm() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.point, r.kill = nil, nil
}

// lastFired is the kill point that fired in the last run (nil: none, or a
// timer).
func (r *recorder) lastFired() *killPoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fired
}

// count bumps a counter; if that reaches the armed point of this kind, it
// disarms it and returns the kill function.
func (r *recorder) count(c *int, kind killKind) (kill func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*c++
	if p := r.point; p == nil || p.kind != kind || p.n != *c {
		return nil
	}
	r.point, r.fired = nil, r.point // fire once
	return r.kill
}

func (r *recorder) onMail(string) error {
	if kill := r.count(&r.mails, killAfterMail); kill != nil {
		kill()
	}
	return nil
}

func (r *recorder) onRcpt(_ *fakesmtp.Txn, to string, attempt int) error {
	r.mu.Lock()
	var refuse *smtp.SMTPError
	if r.policy != nil {
		refuse = r.policy(to, attempt)
	}
	var kill func()
	var delay time.Duration
	if refuse != nil && refuse.Code >= 500 {
		r.refusals++
		if p := r.point; p != nil && p.kind == killAfterRefusal && p.n == r.refusals {
			r.point, r.fired = nil, p
			kill, delay = r.kill, p.delay
		}
	}
	r.mu.Unlock()
	if kill != nil {
		// The 5xx goes out when this returns; the client dies while it
		// handles it (RSET, next recipient, settle, failed copy).
		go func() {
			time.Sleep(delay)
			kill()
		}()
	}
	if refuse != nil {
		return refuse // a 4xx counts in tx.Deferred
	}
	return nil
}

// onData counts the message and, when it is the armed point, kills the
// child in its body or returns the kill to run once it is stored.
func (r *recorder) onData(tx *fakesmtp.Txn, rd io.Reader) (after func(), err error) {
	r.mu.Lock()
	r.datas++
	n, p, kill := r.datas, r.point, r.kill
	if tx.Deferred > 0 {
		r.partials++
	}
	if p != nil && p.partial {
		n = r.partials
	}
	hit := p != nil && p.n == n && (p.kind == killMidBody || p.kind == killBeforeReply || p.kind == killAfterReply) &&
		(!p.partial || tx.Deferred > 0)
	if hit {
		r.point, r.fired = nil, p
	}
	r.mu.Unlock()
	switch {
	case hit && p.kind == killMidBody:
		if _, err := io.CopyN(io.Discard, rd, p.bytes); err != nil && err != io.EOF {
			return nil, err
		}
		kill()
		return nil, errors.New("client killed mid-body")
	case hit && p.kind == killBeforeReply:
		// Stored, but the client dies before it reads the 250: it must
		// send this message again (at worst a duplicate, never a loss).
		return kill, nil
	case hit && p.kind == killAfterReply:
		return func() {
			go func() {
				time.Sleep(p.delay)
				kill()
			}()
		}, nil
	}
	return nil, nil
}

// runChild runs etrnflush with args while p is armed, and tells whether the
// child died of SIGKILL.
func (r *recorder) runChild(t *testing.T, p *killPoint, args []string) (code int, killed bool, stderr string) {
	t.Helper()
	cmd := exec.Command(etrnflushBin, args...)
	cmd.Env = childEnv()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	kill := func() {
		// After Wait this is a no-op: os.Process never signals a reaped pid.
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	}
	r.arm(p, kill)
	if p != nil && p.kind == killTimer {
		timer := time.AfterFunc(p.delay, kill)
		defer timer.Stop()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(runTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("etrnflush (%v) still running after %s; stderr:\n%s", p, runTimeout, errb.String())
	}
	close(exited)
	r.disarm()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		if ws.Signal() != syscall.SIGKILL {
			t.Fatalf("etrnflush died of %v; stderr:\n%s", ws.Signal(), errb.String())
		}
		return -1, true, errb.String()
	}
	return ws.ExitStatus(), false, errb.String()
}

// writeCrashSpool writes n messages as Exim's appendfile use_bsmtp would
// (LF, dot-stuffed, lone dot) and returns them as they must arrive. Sizes
// vary from a few lines to 1 MiB so kills land in small and large bodies.
func writeCrashSpool(t *testing.T, path string, n int) []envMsg {
	t.Helper()
	msgs := crashMessages(n, func(i int) []string {
		var to []string
		for r := range 1 + i%3 {
			to = append(to, fmt.Sprintf("u%d-%d@crash.example", i, r))
		}
		return to
	})
	writeCrashFile(t, path, msgs)
	return msgs
}

// crashMessages makes n messages; message i goes to rcpts(i). Bodies have
// dot lines, lines starting with a dot and 8-bit octets, and their sizes
// (drawn from a fixed seed) vary from a few lines to 1 MiB.
func crashMessages(n int, rcpts func(i int) []string) []envMsg {
	rnd := rand.New(rand.NewPCG(42, 42))
	var msgs []envMsg
	for i := range n {
		m := envMsg{From: "alice@sender.example", To: rcpts(i)}
		if i%17 == 0 {
			m.From = ""
		}
		var data bytes.Buffer
		fmt.Fprintf(&data, "From: <alice@sender.example>\nSubject: crash %d\nMessage-ID: <crash-%d@test.example>\n\n", i, i)
		size := 100 + rnd.IntN(4000)
		switch {
		case i%50 == 13:
			size = 1 << 20
		case i%25 == 7:
			size = 300 << 10
		}
		for l := 0; data.Len() < size; l++ {
			switch rnd.IntN(12) {
			case 0:
				data.WriteString(".\n")
			case 1:
				fmt.Fprintf(&data, ".line %d starts with a dot\n", l)
			case 2:
				fmt.Fprintf(&data, "8-bit line %d: gr\xc3\xbc\xc3\x9fe\n", l)
			default:
				fmt.Fprintf(&data, "line %d of message %d %s\n", l, i, strings.Repeat("y", rnd.IntN(150)))
			}
		}
		m.Data = data.Bytes()
		msgs = append(msgs, m)
	}
	return msgs
}

// eximBSMTP is msgs as Exim's appendfile use_bsmtp writes them.
func eximBSMTP(msgs []envMsg) []byte {
	var file bytes.Buffer
	for _, m := range msgs {
		fmt.Fprintf(&file, "MAIL FROM:<%s>\n", m.From)
		for _, to := range m.To {
			fmt.Fprintf(&file, "RCPT TO:<%s>\n", to)
		}
		file.WriteString("DATA\n")
		for _, l := range bytes.SplitAfter(m.Data, []byte("\n")) {
			if len(l) > 0 && l[0] == '.' {
				file.WriteByte('.')
			}
			file.Write(l)
		}
		file.WriteString(".\n")
	}
	return file.Bytes()
}

// writeCrashFile writes msgs as the one file of the appended layout.
func writeCrashFile(t *testing.T, path string, msgs []envMsg) {
	t.Helper()
	b := eximBSMTP(msgs)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// The oracle must read back what was meant, or the test proves nothing.
	back, err := parseBSMTP(b)
	if err != nil || len(back) != len(msgs) {
		t.Fatalf("crash spool does not parse back: %d messages, %v", len(back), err)
	}
}

// writeCrashDir writes msgs as Exim's appendfile "directory" with
// use_bsmtp does: one finished q... file per message (names as in
// testdata/exim/bsmtp/dir), oldest first by mtime.
func writeCrashDir(t *testing.T, dir string, msgs []envMsg) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	for i, m := range msgs {
		p := filepath.Join(dir, fmt.Sprintf("q1xXKke-%06d", 770000+i))
		if err := os.WriteFile(p, eximBSMTP([]envMsg{m}), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := t0.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	back := spoolMessages(t, dir)
	if len(back) != len(msgs) {
		t.Fatalf("crash spool directory does not parse back: %d messages, want %d", len(back), len(msgs))
	}
	sameMessages(t, "crash spool directory", msgs, back)
}

// clearStaleEximLock handles a kill while etrnflush held Exim's lock file
// on the appended file: it stays behind, and Exim (and etrnflush) would
// wait 30 minutes for it to go stale. Not a loss; it does what the
// staleness rule would do, and tells whether there was one.
func clearStaleEximLock(t *testing.T, path, what string) bool {
	t.Helper()
	if _, err := os.Lstat(path + ".lock"); err != nil {
		return false
	}
	t.Logf("%s left %s.lock behind; removing it as Exim would after lockfile_timeout", what, path)
	if err := os.Remove(path + ".lock"); err != nil {
		t.Fatal(err)
	}
	return true
}

// withTimerKills appends n kills at random times 5-65ms into a run, seeded
// by seed and the clock so that each test run hits different places.
func withTimerKills(plans []*killPoint, seed uint64, n int) []*killPoint {
	rnd := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	for range n {
		plans = append(plans, &killPoint{kind: killTimer, delay: time.Duration(5+rnd.IntN(60)) * time.Millisecond})
	}
	return plans
}

// killUntilClean runs the child once under each plan, then without one,
// until a run exits 0; each run must exit 0 or be killed, and a few clean
// runs must suffice. A lock file a kill left on path is cleared.
func killUntilClean(t *testing.T, rec *recorder, path string, args []string, plans []*killPoint) (runs, kills, staleLocks int) {
	t.Helper()
	for {
		var p *killPoint
		if runs < len(plans) {
			p = plans[runs]
		} else if runs > len(plans)+3 {
			t.Fatalf("no clean run after %d runs", runs)
		}
		runs++
		code, killed, stderr := rec.runChild(t, p, args)
		if killed {
			kills++
			if clearStaleEximLock(t, path, fmt.Sprintf("run %d (%v)", runs, p)) {
				staleLocks++
			}
			continue
		}
		if code != 0 {
			t.Errorf("run %d (%v): exit %d, want 0 or a kill; stderr:\n%s", runs, p, code, stderr)
			continue
		}
		if p != nil && p.kind != killTimer && p.kind != killAfterReply {
			t.Logf("run %d: %v never fired; the spool ran out first", runs, p)
		}
		return runs, kills, staleLocks
	}
}

// markerRcpts gives message i of a partial-acceptance spool 1 to 4
// recipients at domain, some with a marker that markerPolicy acts on:
// "-defer1" and "-defer2" (451 on the first one or two offers, then 250) and
// "-refuse" (550, always). Every 20th message has all its recipients
// refused (no DATA at all), another every 20th all deferred once.
func markerRcpts(domain string) func(i int) []string {
	return func(i int) []string {
		var to []string
		for r := range 1 + i%4 {
			mark := ""
			switch {
			case i%20 == 9:
				mark = "-refuse"
			case i%20 == 19:
				mark = "-defer1"
			default:
				switch (i*7 + r*5) % 11 {
				case 1, 4:
					mark = "-defer1"
				case 6:
					mark = "-defer2"
				case 8:
					mark = "-refuse"
				}
			}
			to = append(to, fmt.Sprintf("u%d-%d%s@%s", i, r, mark, domain))
		}
		return to
	}
}

// refusedRcpt tells whether markerPolicy refuses to for good.
func refusedRcpt(to string) bool { return strings.Contains(to, "-refuse@") }

// markerPolicy answers the markers of markerRcpts.
func markerPolicy(to string, attempt int) *smtp.SMTPError {
	switch {
	case refusedRcpt(to):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	case strings.Contains(to, "-defer1@") && attempt <= 1, strings.Contains(to, "-defer2@") && attempt <= 2:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	return nil
}

// crashCase is one SIGKILL scenario: a spool layout, what the server
// answers and where the runs are killed.
type crashCase struct {
	name   string
	dir    bool       // one-message-per-file directory instead of the appended file
	n      int        // messages
	policy rcptPolicy // nil: every recipient accepted
	plans  []*killPoint
	timers int // random kill times added to plans
	// minimum number of kills that must land, of them at points after a
	// partly deferred transaction, and after a 5xx to RCPT
	minKills, minPartial, minRefusal int
	// format, when set, is a mailstore or maildir layout (see
	// crash_formats_test.go); dir is then not looked at.
	format *crashFormat
}

// msgRcpt is one recipient of one message (by Message-ID).
type msgRcpt struct{ id, to string }

func runCrashCase(t *testing.T, tc crashCase) {
	dir := t.TempDir()
	host := strings.ReplaceAll(tc.name, "/", "-") + ".crash.example"
	path := filepath.Join(dir, host)
	rcpts := markerRcpts(host)
	if tc.policy == nil {
		rcpts = func(i int) []string {
			var to []string
			for r := range 1 + i%3 {
				to = append(to, fmt.Sprintf("u%d-%d@%s", i, r, host))
			}
			return to
		}
	}
	want := crashMessages(tc.n, rcpts)
	if tc.format != nil {
		tc.format.write(t, path, want)
	} else if tc.dir {
		writeCrashDir(t, path, want)
	} else {
		writeCrashFile(t, path, want)
	}
	rec := newPolicyRecorder(t, tc.policy)
	args := []string{"flush", "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example",
		"--timeout", "20s", "--max-inflight", fmt.Sprint(crashWindow), host}

	plans := withTimerKills(slices.Clone(tc.plans), 11, tc.timers)

	byID := map[string]envMsg{}
	pairs, refused, deferred, mixed := 0, 0, 0, 0
	for _, m := range want {
		byID[m.id()] = m
		pairs += len(m.To)
		r, d := 0, 0
		for _, to := range m.To {
			if refusedRcpt(to) {
				r++
			}
			if strings.Contains(to, "-defer") {
				d++
			}
		}
		refused, deferred = refused+r, deferred+d
		if d > 0 && d < len(m.To) {
			mixed++ // a 250 to its dot leaves it partly sent
		}
	}

	start := time.Now()
	kills, partialKills, refusalKills, staleLocks, runs, unfired := 0, 0, 0, 0, 0, 0
	partialLeft := 0 // kills after which the spool held a message partly settled
	done := false
	for _, p := range plans {
		runs++
		code, killed, stderr := rec.runChild(t, p, args)
		fired := rec.lastFired()
		if killed {
			kills++
			switch {
			case fired == nil:
			case fired.partial:
				partialKills++
			case fired.kind == killAfterRefusal:
				refusalKills++
			}
			if clearStaleEximLock(t, path, fmt.Sprintf("run %d (%v)", runs, p)) {
				staleLocks++
			}
			if tc.partlyDone(t, path, byID) > 0 {
				partialLeft++
			}
			continue
		}
		if p.kind != killTimer && fired == nil {
			unfired++
			t.Logf("run %d: %v never fired (exit %d)", runs, p, code)
		}
		if code != 0 && code != 75 {
			t.Errorf("run %d (%v): exit %d, want 0, 75 or a kill; stderr:\n%s", runs, p, code, stderr)
		}
		if code == 0 {
			done = true // nothing left: the remaining plans have nothing to hit
			break
		}
	}
	// Clean runs until nothing is left: recipients deferred twice need up
	// to two more.
	for clean := 0; !done; clean++ {
		if clean == 4 {
			t.Fatalf("still mail left after %d clean runs", clean)
		}
		runs++
		code, killed, stderr := rec.runChild(t, nil, args)
		switch {
		case killed:
			t.Fatalf("run %d: killed without a kill point", runs)
		case code == 0:
			done = true
		case code != 75:
			t.Fatalf("run %d: exit %d, want 0 or 75; stderr:\n%s", runs, code, stderr)
		}
	}
	elapsed := time.Since(start)
	got := rec.messages()
	offers := rec.rcptOffers()

	// One more run must find nothing to do and offer nothing.
	if code, killed, stderr := rec.runChild(t, nil, args); killed || code != 0 {
		t.Errorf("run after the last: killed=%v exit %d, want 0; stderr:\n%s", killed, code, stderr)
	}
	if n := len(rec.messages()); n != len(got) {
		t.Errorf("run after the last sent %d messages, want none", n-len(got))
	}
	if o := rec.rcptOffers(); !maps.Equal(o, offers) {
		t.Errorf("run after the last offered recipients again")
	}

	arrived := map[msgRcpt]int{}
	dupTxns := 0
	for _, m := range got {
		w, ok := byID[m.id()]
		switch {
		case !ok:
			t.Errorf("received %s, never spooled", m)
			continue
		case !bytes.Equal(w.Data, m.Data):
			t.Errorf("%s arrived changed%s", m.id(), firstDiff(w.Data, m.Data))
		case w.From != m.From:
			t.Errorf("%s: envelope from=<%s>, want <%s>", m.id(), m.From, w.From)
		case tc.policy == nil && !slices.Equal(w.To, m.To):
			t.Errorf("%s: to=%v, want all of %v (nothing was deferred)", m.id(), m.To, w.To)
		}
		dup := false
		for i, to := range m.To {
			if !slices.Contains(w.To, to) || slices.Contains(m.To[:i], to) {
				t.Errorf("%s: recipient <%s> arrived, not one of %v or given twice", m.id(), to, w.To)
				continue
			}
			k := msgRcpt{m.id(), to}
			if arrived[k] > 0 {
				dup = true
			}
			arrived[k]++
		}
		if dup {
			dupTxns++
		}
	}
	dupRcpts, reoffers := 0, 0
	for _, w := range want {
		again := 0 // extra offers of this message's refused recipients
		for _, to := range w.To {
			n := arrived[msgRcpt{w.id(), to}]
			switch {
			case refusedRcpt(to) && n > 0:
				t.Errorf("%s: <%s> was refused with 550 and arrived %d times", w.id(), to, n)
			case refusedRcpt(to):
				again = max(again, offers[to]-1)
			case n == 0:
				t.Errorf("%s: <%s> was lost", w.id(), to)
			case n-1 > kills:
				t.Errorf("%s: <%s> arrived %d times, more than once per kill (%d)", w.id(), to, n, kills)
			default:
				dupRcpts += n - 1
			}
		}
		reoffers += again
	}
	t.Logf("%d messages (%d partly deferred at first), %d recipients (%d refused, %d deferred at first), %d runs, %d SIGKILLs (%d after a partly deferred transaction, %d after a 5xx, %d left Exim's lock file, %d left a partly settled message on disk, %d points never fired), %d transactions received, %s",
		len(want), mixed, pairs, refused, deferred, runs, kills, partialKills, refusalKills, staleLocks, partialLeft, unfired, len(got), elapsed.Round(time.Millisecond))
	t.Logf("%d transactions repeated %d recipient deliveries; refused recipients offered again %d times; %d kills",
		dupTxns, dupRcpts, reoffers, kills)
	if kills < tc.minKills || partialKills < tc.minPartial || refusalKills < tc.minRefusal {
		t.Errorf("kills landed: %d (%d partial, %d after a 5xx), want at least %d (%d, %d)",
			kills, partialKills, refusalKills, tc.minKills, tc.minPartial, tc.minRefusal)
	}
	// Without this the partial kill points prove nothing about the
	// journal (or the rewritten file) holding a partial status.
	if tc.minPartial > 0 && partialLeft == 0 {
		t.Errorf("no kill left a partly settled message on disk: partial statuses were never put to the test")
	}
	// A kill leaves at most the messages in flight (the window) unsettled,
	// so at most that many transactions per kill may repeat what was
	// delivered (or offer again a recipient refused for good).
	if dupTxns > kills*crashWindow {
		t.Errorf("%d transactions repeated delivered recipients, more than the %d kills times the window %d: something settled was resent", dupTxns, kills, crashWindow)
	}
	if reoffers > kills*crashWindow {
		t.Errorf("refused recipients offered again %d times, more than the %d kills times the window %d: a 5xx was not settled", reoffers, kills, crashWindow)
	}

	// A kill inside an atomic rewrite leaves its temporary file; the
	// next run for the host removes it, so the clean runs leave none.
	failed := filepath.Join(dir, ".etrnflush-"+host+".failed")
	if temps := removeTempFiles(t, append([]string{dir, failed, path}, tc.tempDirs(path)...)...); temps > 0 {
		t.Errorf("%d temporary files left behind after the clean runs", temps)
	}
	checkFailedFolder(t, dir, host, byID, refusedRcpt)
	// Checked; what remains must be nothing at all.
	if err := os.RemoveAll(failed); err != nil {
		t.Fatal(err)
	}
	tc.assertNoMailLeft(t, path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), host+".lock") {
			t.Errorf("lock file or hitching post left behind: %s", e.Name())
		}
	}
}

// checkFailedFolder proves that the failed folder holds, in intact BSMTP
// copies each with a .why naming the 550, every refused recipient of
// every message exactly once, and nothing else.
func checkFailedFolder(t *testing.T, dir, host string, byID map[string]envMsg, refused func(string) bool) {
	t.Helper()
	fd := filepath.Join(dir, ".etrnflush-"+host+".failed")
	ents, err := os.ReadDir(fd)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	copies := map[msgRcpt]int{}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".why"):
			if _, err := os.Stat(filepath.Join(fd, strings.TrimSuffix(name, ".why")+".bsmtp")); err != nil {
				t.Errorf("failed folder: %s without its copy", name)
			}
			continue
		case !strings.HasSuffix(name, ".bsmtp"):
			t.Errorf("failed folder: unexpected %s", name)
			continue
		}
		why, err := os.ReadFile(filepath.Join(fd, strings.TrimSuffix(name, ".bsmtp")+".why"))
		if err != nil {
			t.Errorf("failed folder: %s has no reason: %v", name, err)
		} else if !strings.Contains(string(why), "550") {
			t.Errorf("failed folder: %s.why does not name the 550: %q", strings.TrimSuffix(name, ".bsmtp"), why)
		}
		msgs := parseBSMTPFile(t, filepath.Join(fd, name))
		if len(msgs) != 1 {
			t.Errorf("failed folder: %s holds %d messages, want 1", name, len(msgs))
		}
		for _, m := range msgs {
			w, ok := byID[m.id()]
			switch {
			case !ok:
				t.Errorf("failed folder: %s holds %s, never spooled", name, m)
				continue
			case !bytes.Equal(w.Data, m.Data):
				t.Errorf("failed folder: %s: %s changed%s", name, m.id(), firstDiff(w.Data, m.Data))
			case w.From != m.From:
				t.Errorf("failed folder: %s: from=<%s>, want <%s>", name, m.From, w.From)
			}
			for _, to := range m.To {
				if !slices.Contains(w.To, to) || !refused(to) {
					t.Errorf("failed folder: %s: <%s> is not a refused recipient of %s", name, to, m.id())
				}
				copies[msgRcpt{m.id(), to}]++
			}
		}
	}
	n := 0
	for id, w := range byID {
		for _, to := range w.To {
			if !refused(to) {
				continue
			}
			n++
			if c := copies[msgRcpt{id, to}]; c != 1 {
				t.Errorf("failed folder: %s <%s> is there %d times, want once", id, to, c)
			}
		}
	}
	t.Logf("failed folder: %d refused recipients, %d copies", n, len(copies))
}

// removeTempFiles removes etrnflush's temporary files (.NAME.tmp-*)
// from each of dirs that exists, and counts them.
func removeTempFiles(t *testing.T, dirs ...string) int {
	t.Helper()
	n := 0
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") || !strings.Contains(e.Name(), ".tmp-") {
				continue
			}
			t.Logf("temporary file left in %s: %s", d, e.Name())
			if err := os.Remove(filepath.Join(d, e.Name())); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	return n
}

// partlyDone counts the messages the spool now holds as partly settled:
// journal records of the appended layout with a pending recipient beside
// a settled one, or files of the directory layout rewritten with fewer
// recipients than were spooled.
func partlyDone(t *testing.T, path string, dir bool, byID map[string]envMsg) int {
	t.Helper()
	n := 0
	if dir {
		ents, err := os.ReadDir(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || strings.HasPrefix(e.Name(), "temp.") {
				continue
			}
			for _, m := range parseBSMTPFile(t, filepath.Join(path, e.Name())) {
				if w, ok := byID[m.id()]; ok && len(m.To) < len(w.To) {
					n++
				}
			}
		}
		return n
	}
	journals, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".etrnflush-"+filepath.Base(path)+".*.journal"))
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range journals {
		b, err := os.ReadFile(j)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			_, st, ok := strings.Cut(l, " ")
			if ok && strings.Trim(st, "sfk") == "" && strings.Contains(st, "k") && strings.ContainsAny(st, "sf") {
				n++
			}
		}
	}
	return n
}

// crashFormat is a mailstore or maildir layout for runCrashCase: how to
// write the spool, and how to read its state back.
type crashFormat struct {
	fc    formatCase
	write func(t *testing.T, path string, msgs []envMsg)
}

// partlyDone counts the messages of tc's spool that a run left with fewer
// recipients than were spooled.
func (tc crashCase) partlyDone(t *testing.T, path string, byID map[string]envMsg) int {
	t.Helper()
	if tc.format == nil {
		return partlyDone(t, path, tc.dir, byID)
	}
	n := 0
	for _, m := range tc.format.fc.messages(t, path) {
		if w, ok := byID[m.id()]; ok && len(m.To) < len(w.To) {
			n++
		}
	}
	return n
}

// tempDirs are where else than beside the spool a rewrite of tc's layout
// puts its temporary files: a maildir's tmp/.
func (tc crashCase) tempDirs(path string) []string {
	if tc.format != nil && tc.format.fc.maildir {
		return []string{filepath.Join(path, "tmp")}
	}
	return nil
}

// assertNoMailLeft: nothing pending is left. In a mailstore a kill
// between the removal of a .env and of its .msg leaves an orphan .msg,
// reported by later runs and left alone by design (the .env is the pair's
// commit point): those are expected, and only those.
func (tc crashCase) assertNoMailLeft(t *testing.T, path string) {
	t.Helper()
	if tc.format == nil {
		assertNoMailLeft(t, path)
		return
	}
	if !tc.format.fc.maildir {
		orphans, err := filepath.Glob(filepath.Join(path, "*.msg"))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range orphans {
			base := strings.TrimSuffix(o, ".msg")
			for _, ext := range []string{".env", ".tmp"} {
				if _, err := os.Lstat(base + ext); err == nil {
					t.Errorf("%s%s left in the spool", base, ext)
				}
			}
			if err := os.Remove(o); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%d orphan .msg files left by kills between the removal of a .env and of its .msg", len(orphans))
	}
	assertFormatSpoolEmpty(t, path)
}

// writeCrashMailstore writes msgs as Exim's mailstore_format does, one
// .env/.msg pair each, oldest first by date.
func writeCrashMailstore(t *testing.T, dir string, msgs []envMsg) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	for i, m := range msgs {
		base := filepath.Join(dir, fmt.Sprintf("1xXKkf-%06d-0c-0001AD", i))
		env := m.From + "\n" + strings.Join(m.To, "\n") + "\n"
		mt := t0.Add(time.Duration(i) * time.Second)
		for _, f := range [][2]string{{".msg", string(m.Data)}, {".env", env}} {
			if err := os.WriteFile(base+f[0], []byte(f[1]), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(base+f[0], mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
	sameMessages(t, "crash mailstore", msgs, mailstoreMessages(t, dir, 0, 0))
}

// writeCrashMaildir writes msgs as Exim's maildir_format with
// return_path_add, envelope_to_add and delivery_date_add does, into new/.
func writeCrashMaildir(t *testing.T, dir string, msgs []envMsg) {
	t.Helper()
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	for i, m := range msgs {
		mt := t0.Add(time.Duration(i) * time.Second)
		p := filepath.Join(dir, "new", fmt.Sprintf("%d.M%dP4670.mx.isp.example", mt.Unix(), i))
		hdr := "Return-path: <" + m.From + ">\nEnvelope-to: " + strings.Join(m.To, ",\n ") +
			"\nDelivery-date: " + mt.Format(time.RFC1123Z) + "\n"
		if err := os.WriteFile(p, append([]byte(hdr), m.Data...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	sameMessages(t, "crash maildir", msgs, maildirMessages(t, dir))
}

// crashWindow is the --max-inflight the crash tests pass: how many
// messages one SIGKILL can leave sent and not settled. Each message is
// still resent at most once per kill. It is kept small so that the bound
// kills × crashWindow stays well below the number of messages, where a
// resent settled message would show.
const crashWindow = 4

const (
	killAfterMail    killKind = iota // right after accepting the n-th MAIL
	killMidBody                      // after `bytes` octets of the n-th message's data
	killBeforeReply                  // n-th message stored, client killed before it sees 250
	killAfterReply                   // 250 for the n-th message sent, kill `delay` later
	killTimer                        // `delay` after the child started, wherever it is
	killAfterRefusal                 // 5xx sent to the n-th refused RCPT, kill `delay` later
)
