//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// injection is one message handed to the writer Exim.
type injection struct {
	from string
	to   []string
	data []byte
}

// roundTripCorpus is the varied corpus of the round trip: the fixture inputs
// (several recipients, null sender, 8-bit, dot lines with lone dots, headers
// only, zero bytes, no final newline, CRLF input, 5000-octet lines, 1 MiB,
// NUL) plus a message with UTF-8 addresses.
func roundTripCorpus(t *testing.T, host string) []injection {
	t.Helper()
	alice := "alice@sender.example"
	rcpt := func(local ...string) []string {
		var to []string
		for _, l := range local {
			to = append(to, l+"@"+host)
		}
		return to
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "exim", "inputs", name+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	corpus := []injection{
		{alice, rcpt("bob"), read("01-simple")},
		{alice, append(rcpt("bob", "carol"), "Dave.Mixed@"+strings.ToUpper(host)), read("02-multi-rcpt")},
		{"", rcpt("postmaster"), read("03-null-sender")},
		{alice, rcpt("bob"), read("04-8bit")},
		{alice, rcpt("bob", "carol"), read("05-dots")},
		{alice, rcpt("bob"), read("06-headers-only")},
		{alice, rcpt("bob"), read("07-zero-bytes")},
		{alice, rcpt("bob"), read("08-no-final-newline")},
		{alice, rcpt("bob"), read("09-crlf")},
		{alice, rcpt("bob"), read("10-long-lines")},
		{alice, rcpt("bob"), read("11-1mb")},
		{alice, rcpt("bob"), read("12-nul-byte")},
		{"jörg@sender.example", append(rcpt("用户"), "bob@"+host), []byte(
			"From: Jörg <jörg@sender.example>\nTo: 用户@" + host + "\nSubject: SMTPUTF8 ünïcödé\n" +
				"Message-ID: <rt-utf8@sender.example>\nMIME-Version: 1.0\n" +
				"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nBody: 你好\n.\n")},
	}
	return corpus
}

// TestEximRoundTrip: mail written by a real Exim (both spool layouts) is
// flushed by etrnflush into a real Exim and arrives byte for byte, with its
// envelope, the right ESMTP parameters, and nothing left behind.
func TestEximRoundTrip(t *testing.T) {
	for _, layout := range []string{"file", "dir"} {
		t.Run(layout, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			s := r.startSink(t)
			w := r.newWriter(t)
			host := layout + ".rt.example"
			path := w.filePath(host)
			if layout == "dir" {
				path = w.dirPath(host)
			}
			corpus := roundTripCorpus(t, host)
			for _, in := range corpus {
				if err := w.inject(in.from, in.to, in.data); err != nil {
					t.Fatal(err)
				}
			}
			want := spoolMessages(t, path)
			if len(want) != len(corpus) {
				t.Fatalf("the writer Exim stored %d messages, want %d", len(want), len(corpus))
			}

			start := time.Now()
			_, stderr, code := runEtrnflush(t, "--spool", path, "--to", s.addr(), "--tls", "none",
				"--helo", "test.example", host)
			t.Logf("flush of %d messages took %s", len(want), time.Since(start).Round(time.Millisecond))
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			s.waitReplayed(t, want)
			if n := strings.Count(stderr, "status=sent"); n != len(want) {
				t.Errorf("%d log lines with status=sent, want %d:\n%s", n, len(want), stderr)
			}
			if !regexp.MustCompile(`event=summary host=` + regexp.QuoteMeta(host) + ` sent=` +
				fmt.Sprint(len(want)) + ` deferred=0 failed=0 quarantined=0`).MatchString(stderr) {
				t.Errorf("no summary line for %d sent messages:\n%s", len(want), stderr)
			}
			assertNoMailLeft(t, path)
		})
	}
}

// checkMailParams: BSMTP carries no ESMTP parameters, so the replay must
// derive them (exim.md surprise 6): BODY=8BITMIME for 8-bit data, SMTPUTF8
// for non-ASCII addresses, and never one without cause.
func checkMailParams(t *testing.T, m envMsg) {
	t.Helper()
	eight := slices.ContainsFunc(m.Data, func(b byte) bool { return b >= 0x80 })
	utf8Addr := !isASCII(m.From) || slices.ContainsFunc(m.To, func(a string) bool { return !isASCII(a) })
	cmd := strings.ToUpper(m.MailCmd)
	if got := strings.Contains(cmd, "BODY=8BITMIME"); got != eight {
		t.Errorf("%s: MAIL command %q: BODY=8BITMIME present=%v, data 8-bit=%v", m.id(), m.MailCmd, got, eight)
	}
	if got := strings.Contains(cmd, "SMTPUTF8"); got != utf8Addr {
		t.Errorf("%s: MAIL command %q: SMTPUTF8 present=%v, non-ASCII address=%v", m.id(), m.MailCmd, got, utf8Addr)
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// TestEximScriptedFailures: against the sink's scripted 4xx/5xx answers,
// only 2xx removes a recipient, a 5xx moves it to the failed folder, a 4xx
// keeps it, the exit status says something is left (75), and a rerun with
// nothing fixed keeps exactly the same: every (message, recipient) is in
// exactly one place, nothing is lost.
func TestEximScriptedFailures(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	w := r.newWriter(t)
	const host = "fail.rt.example"
	path := w.filePath(host)
	type msg struct {
		id, from, subject string
		to                []string
		sent, failed      []string // expected outcome by local part
		kept              []string
	}
	msgs := []msg{
		{id: "partial", from: "alice@sender.example", to: []string{"ok1", "reject550a", "defer451a"},
			sent: []string{"ok1"}, failed: []string{"reject550a"}, kept: []string{"defer451a"}},
		{id: "defer-data", from: "alice@sender.example", subject: "SINK-DEFER-DATA", to: []string{"ok2", "ok2b"},
			kept: []string{"ok2", "ok2b"}},
		{id: "reject-data", from: "alice@sender.example", subject: "SINK-REJECT-DATA", to: []string{"ok3"},
			failed: []string{"ok3"}},
		{id: "fine", from: "alice@sender.example", to: []string{"ok4"}, sent: []string{"ok4"}},
		{id: "sender-reject", from: "reject550s@sender.example", to: []string{"ok5"}, failed: []string{"ok5"}},
		{id: "sender-defer", from: "defer451s@sender.example", to: []string{"ok6"}, kept: []string{"ok6"}},
		{id: "all-reject", from: "alice@sender.example", to: []string{"reject550b", "reject550c"},
			failed: []string{"reject550b", "reject550c"}},
	}
	full := func(locals []string) []string {
		var out []string
		for _, l := range locals {
			out = append(out, l+"@"+host)
		}
		return out
	}
	for _, m := range msgs {
		subject := m.subject
		if subject == "" {
			subject = "scripted " + m.id
		}
		data := fmt.Sprintf("From: <%s>\nSubject: %s\nMessage-ID: <%s@test.example>\n\nbody of %s\n.\n..two\n",
			m.from, subject, m.id, m.id)
		if err := w.inject(m.from, full(m.to), []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	orig := map[string]envMsg{}
	for _, m := range spoolMessages(t, path) {
		orig[m.id()] = m
	}
	wantSent, wantFailed, wantKept := map[string][]string{}, map[string][]string{}, map[string][]string{}
	for _, m := range msgs {
		id := "<" + m.id + "@test.example>"
		if len(m.sent) > 0 {
			wantSent[id] = full(m.sent)
		}
		if len(m.failed) > 0 {
			wantFailed[id] = full(m.failed)
		}
		if len(m.kept) > 0 {
			wantKept[id] = full(m.kept)
		}
	}
	args := []string{"flush", "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "test.example", host}

	var failedSnap map[string]string
	for run := 1; run <= 2; run++ {
		_, stderr, code := runEtrnflush(t, args...)
		if code != 75 {
			t.Fatalf("run %d: exit %d, want 75 (something deferred); stderr:\n%s", run, code, stderr)
		}
		sent := byID(t, s.delivered(t), orig, true)
		if !mapsEqual(sent, wantSent) {
			t.Errorf("run %d: sink received %v, want %v", run, sent, wantSent)
		}
		priv := privateFiles(t, filepath.Dir(path), host)
		if len(priv["journal"]) > 0 || len(priv["tmp"]) > 0 || len(priv["quarantine"]) > 0 {
			t.Errorf("run %d: journal, temp or quarantined files left after a clean run: %v", run, priv)
		}
		var kept []envMsg
		for _, f := range priv["work"] {
			kept = append(kept, parseBSMTPFile(t, f)...)
		}
		if got := byID(t, kept, orig, false); !mapsEqual(got, wantKept) {
			t.Errorf("run %d: work files hold %v, want %v", run, got, wantKept)
		}
		var failed []envMsg
		for _, f := range priv["failed"] {
			switch {
			case strings.HasSuffix(f, ".bsmtp"):
				failed = append(failed, parseBSMTPFile(t, f)...)
				why, err := os.ReadFile(strings.TrimSuffix(f, ".bsmtp") + ".why")
				if err != nil {
					t.Errorf("failed copy %s has no reason: %v", f, err)
				} else if !bytes.Contains(why, []byte("550")) {
					t.Errorf("%s.why = %q, want the server's 550 reply", strings.TrimSuffix(f, ".bsmtp"), why)
				}
			case strings.HasSuffix(f, ".why"):
			default:
				t.Errorf("unexpected file in the failed folder: %s", f)
			}
		}
		if got := byID(t, failed, orig, false); !mapsEqual(got, wantFailed) {
			t.Errorf("run %d: failed folder holds %v, want %v", run, got, wantFailed)
		}
		// The failed folder is final: a rerun must neither add to it nor
		// rewrite it.
		snap := snapTree(t, filepath.Join(filepath.Dir(path), ".etrnflush-"+host+".failed"))
		if failedSnap != nil {
			diffTrees(t, "failed folder on rerun", failedSnap, snap)
		}
		failedSnap = snap

		// What a dry run lists is what is left, and listing it changes
		// nothing.
		before := snapTree(t, filepath.Dir(path))
		out, dstderr, dcode := runEtrnflush(t, append([]string{"flush", "--dry-run"}, args[1:]...)...)
		if dcode != 0 {
			t.Errorf("run %d: --dry-run exit %d, want 0; stderr:\n%s", run, dcode, dstderr)
		}
		if got := dryRunList(t, out); !sameSets(got, envelopes(wantKept, orig)) {
			t.Errorf("run %d: --dry-run lists %v, want %v\n%s", run, got, envelopes(wantKept, orig), out)
		}
		diffTrees(t, "--dry-run", before, snapTree(t, filepath.Dir(path)))
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s exists again: etrnflush must never re-create the file Exim appends to", path)
	}
}

// byID maps each message's Message-Id to its recipients, checking on the way
// that its content is still exactly what Exim stored (sink copies carry the
// sink's headers, which parseSinkMessage removed).
func byID(t *testing.T, msgs []envMsg, orig map[string]envMsg, fromSink bool) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for _, m := range msgs {
		o, ok := orig[m.id()]
		switch {
		case !ok:
			t.Errorf("message %s was never injected", m)
		case !bytes.Equal(o.Data, m.Data):
			t.Errorf("message %s changed on the way%s", m, firstDiff(o.Data, m.Data))
		case o.From != m.From:
			t.Errorf("message %s: sender <%s>, stored as <%s>", m.id(), m.From, o.From)
		}
		if _, dup := got[m.id()]; dup && !fromSink {
			t.Errorf("message %s is there twice", m.id())
		}
		got[m.id()] = append(got[m.id()], m.To...)
	}
	return got
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

var dryRunRe = regexp.MustCompile(`^event=would-send host=\S+ id=(\S+) (?:message_id=\S+ )?(?:exim_id=\S+ )?from=<([^>]*)> to=(\S+) size=(\d+)$`)

// dryRunList turns --dry-run output into "from to,to" strings.
func dryRunList(t *testing.T, out string) []string {
	t.Helper()
	var list []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "event=would-send ") {
			continue
		}
		m := dryRunRe.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("--dry-run line not as documented: %q", l)
			continue
		}
		var to []string
		for _, a := range strings.Split(m[3], ",") {
			to = append(to, strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">"))
		}
		list = append(list, m[2]+" "+strings.Join(to, ","))
	}
	return list
}

func envelopes(byID map[string][]string, orig map[string]envMsg) []string {
	var list []string
	for id, to := range byID {
		list = append(list, orig[id].From+" "+strings.Join(to, ","))
	}
	return list
}

func sameSets(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestConcurrentAppend: Exim keeps appending to the host's file (several
// injectors at once, Exim's own locking) while etrnflush runs again and
// again, two runs at a time (the host lock and the "one more pass" request
// in action). Every message must arrive exactly once, intact.
func TestConcurrentAppend(t *testing.T) {
	r := newRig(t)
	w := r.newWriter(t)
	rec := newRecorder(t)
	const host = "conc.rt.example"
	path := w.filePath(host)
	const injectors, perInjector = 4, 55

	want := map[string][]byte{}     // Message-Id -> body
	wantTo := map[string][]string{} // Message-Id -> recipients
	var wantMu sync.Mutex
	var injectErrs []error
	var wg sync.WaitGroup
	start := time.Now()
	for g := range injectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range perInjector {
				id := fmt.Sprintf("<conc-%d-%d@test.example>", g, i)
				var body strings.Builder
				for l := range 1 + rnd.IntN(200) {
					if rnd.IntN(10) == 0 {
						body.WriteString(".")
					}
					fmt.Fprintf(&body, "message %s line %d %s\n", id, l, strings.Repeat("x", rnd.IntN(120)))
				}
				to := []string{fmt.Sprintf("r%d-%d@%s", g, i, host)}
				if i%5 == 0 {
					to = append(to, fmt.Sprintf("s%d-%d@%s", g, i, host))
				}
				msg := fmt.Sprintf("From: <alice@sender.example>\nSubject: conc %d %d\nMessage-ID: %s\n\n%s", g, i, id, body.String())
				err := w.inject("alice@sender.example", to, []byte(msg))
				wantMu.Lock()
				if err != nil {
					injectErrs = append(injectErrs, err)
				} else {
					want[id] = []byte(body.String())
					wantTo[id] = to
				}
				wantMu.Unlock()
			}
		}()
	}
	injected := make(chan struct{})
	go func() {
		wg.Wait()
		close(injected)
	}()

	args := []string{"flush", "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example",
		"--timeout", "30s", host}
	var runMu sync.Mutex
	var runErrs []string
	runs, busy := 0, 0
	flushLoop := func(seed uint64, done <-chan struct{}) {
		rnd := rand.New(rand.NewPCG(seed, 2))
		for {
			select {
			case <-done:
				return
			default:
			}
			_, stderr, code, err := execEtrnflush(args...)
			runMu.Lock()
			runs++
			if strings.Contains(stderr, "event=busy host=") {
				busy++
			}
			if err != nil || code != 0 {
				runErrs = append(runErrs, fmt.Sprintf("exit %d %v\n%s", code, err, stderr))
			}
			runMu.Unlock()
			time.Sleep(time.Duration(rnd.IntN(40)) * time.Millisecond)
		}
	}
	// Exim creates the spool directory with the first delivery. A run
	// before that is a different case (a spool whose directory does not
	// exist yet), not what this test is about.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(filepath.Dir(path)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Exim did not create %s within 30s", filepath.Dir(path))
		}
	}
	var fl sync.WaitGroup
	for i := range 2 {
		fl.Add(1)
		go func() {
			defer fl.Done()
			flushLoop(uint64(i), injected)
		}()
	}
	fl.Wait()
	injectTime := time.Since(start)
	for _, err := range injectErrs {
		t.Error(err)
	}
	w.flushQueue(t) // anything Exim had deferred goes into the file now
	_, stderr, code := runEtrnflush(t, args...)
	if code != 0 {
		t.Fatalf("final run: exit %d; stderr:\n%s", code, stderr)
	}
	runs++
	for _, e := range runErrs {
		t.Errorf("a run during the appends failed: %s", e)
	}
	t.Logf("%d messages injected by %d Exim injectors in %s; %d etrnflush runs (%d found the host busy)",
		len(want), injectors, injectTime.Round(time.Millisecond), runs, busy)
	if len(want) < 200 {
		t.Errorf("only %d messages injected", len(want))
	}

	got := rec.messages()
	count := map[string]int{}
	for _, m := range got {
		count[m.id()]++
		body, ok := want[m.id()]
		if !ok {
			t.Errorf("received a message never injected: %s", m)
			continue
		}
		if _, b, ok := bytes.Cut(m.Data, []byte("\n\n")); !ok || !bytes.Equal(b, body) {
			t.Errorf("%s arrived damaged%s", m.id(), firstDiff(body, b))
		}
		if m.From != "alice@sender.example" || !slices.Equal(m.To, wantTo[m.id()]) {
			t.Errorf("%s: envelope from=<%s> to=%v, want from=<alice@sender.example> to=%v", m.id(), m.From, m.To, wantTo[m.id()])
		}
	}
	for id := range want {
		switch n := count[id]; {
		case n == 0:
			t.Errorf("%s was lost", id)
		case n > 1:
			t.Errorf("%s arrived %d times", id, n)
		}
	}
	assertNoMailLeft(t, path)
}
