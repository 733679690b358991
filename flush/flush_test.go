package flush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"etrnflush/bsmtp"
	"etrnflush/internal/fakesmtp"
	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

// faultSink is the fake server of internal/fakesmtp with one fault per
// key, in fakesmtp.Script's notation: keys "MAIL <from>", "RCPT <to>" and
// "DATA <from>" (the reply to the final dot; go-smtp answers DATA with 354
// itself); values "451", "550" (a reply with that code), "drop-mid" (the
// connection closes halfway through the data), "drop-dot" (it closes
// after the final dot, before the reply) and "slow" (the reply comes
// after the client's timeout).
type faultSink struct {
	faults map[string]string
	slow   time.Duration
	// maxRcpts answers RCPTs past it in a transaction with 452 4.5.3
	// (Exim's recipients_max); maxMails answers the MAIL past it in a
	// session with 421 and closes (smtp_accept_max_per_connection).
	maxRcpts, maxMails int

	srv *fakesmtp.Server
}

// accepted returns "from>to1,to2" per accepted message, sorted (none
// when the sink was not started).
func (b *faultSink) accepted() []string {
	if b.srv == nil {
		return nil
	}
	out := b.srv.Envelopes()
	sort.Strings(out)
	return out
}

func startFaultSink(t *testing.T, be *faultSink) string {
	t.Helper()
	be.srv = &fakesmtp.Server{
		Domain:   "sink.test",
		Timeout:  10 * time.Second,
		Faults:   fakesmtp.Script(be.faults, be.slow),
		MaxRcpts: be.maxRcpts,
		MaxMails: be.maxMails,
	}
	return fakesmtp.Run(t, be.srv)
}

// startGreeter answers every connection with a fixed greeting and closes it.
func startGreeter(t *testing.T, greeting string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greeting)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}

type testMsg struct {
	from string
	to   []string
}

func (m testMsg) String() string { return m.from + ">" + strings.Join(m.to, ",") }

// writeSpool writes msgs as one appended BSMTP file, as Exim would. The
// message at index big gets a body far larger than the socket buffers (-1:
// none), so that a drop mid-DATA reaches the client while it writes.
func writeSpool(t *testing.T, path string, msgs []testMsg, big int) {
	t.Helper()
	var buf bytes.Buffer
	w := bsmtp.NewWriter(&buf)
	for i, m := range msgs {
		n := 5 + i
		if i == big {
			n = 200000
		}
		body := "Subject: message " + m.from + "\n\n" + strings.Repeat("line of text\n.a line with a leading dot\n", n)
		if err := w.Write(bsmtp.Envelope{From: m.from, To: m.to}, strings.NewReader(body), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// leftIn lists what the next run would replay, read through a dry-run
// spool exactly as the next run reads it.
func leftIn(t *testing.T, path string) []string {
	t.Helper()
	sp, err := spool.Open(spool.Options{Path: path, Host: "h.example", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		m, err := sp.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, testMsg{m.From, m.To}.String())
		if err := sp.Settle(m, make([]spool.Outcome, len(m.To)), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// failedIn lists the failed copies and checks each has a reason.
func failedIn(t *testing.T, path string) (msgs, whys []string) {
	t.Helper()
	dir := filepath.Join(filepath.Dir(path), ".etrnflush-"+filepath.Base(path)+".failed")
	files, _ := filepath.Glob(filepath.Join(dir, "*.bsmtp"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		e, err := bsmtp.NewReader(bytes.NewReader(data)).Next()
		if err != nil || e.Msg == nil {
			t.Fatalf("failed copy %s does not parse: %v %q", f, err, e.Damage)
		}
		msgs = append(msgs, testMsg{e.Msg.From, e.Msg.To}.String())
		why, err := os.ReadFile(strings.TrimSuffix(f, ".bsmtp") + ".why")
		if err != nil {
			t.Fatalf("failed copy %s has no reason: %v", f, err)
		}
		whys = append(whys, strings.TrimSpace(string(why)))
	}
	sort.Strings(msgs)
	sort.Strings(whys)
	return msgs, whys
}

func sorted(s ...string) []string {
	sort.Strings(s)
	if len(s) == 0 {
		return nil
	}
	return s
}

// flushTo runs one flush of h.example's spool at path against addr (none
// when empty), with the given timeouts, and returns what it logged too.
func flushTo(path, addr string, timeout time.Duration) (Summary, *bytes.Buffer, error) {
	return flushToN(path, addr, timeout, 0)
}

// flushToN is flushTo with at most maxConns sessions (0: the default).
func flushToN(path, addr string, timeout time.Duration, maxConns int) (Summary, *bytes.Buffer, error) {
	var logBuf bytes.Buffer
	// A window of one (flushWindow) keeps exact which messages a fault
	// finds offered; TestFaultsWindowed runs the default window.
	cfg := Config{
		Host:   "h.example",
		Spool:  spool.Options{Path: path},
		Sender: sender.Options{Helo: "test.example", TLS: sender.TLSNone, Timeout: timeout, DataTimeout: timeout, MaxInflight: flushWindow},
		Log:    logging.NewWriter(&logBuf, true),

		MaxConnections: maxConns,
	}
	if addr != "" {
		cfg.Dests = []string{addr}
	}
	sum, err := Run(context.Background(), cfg)
	return sum, &logBuf, err
}

// TestFaults runs the engine against a server that fails at each stage and
// asserts, for every case, exactly what arrived, what is left in the spool
// for the next run, what went to the failed folder and what the summary
// says.
func TestFaults(t *testing.T) {
	batch := []testMsg{
		{"a@s.example", []string{"a1@h.example"}},
		{"b@s.example", []string{"b1@h.example", "b2@h.example", "b3@h.example"}},
		{"c@s.example", []string{"c1@h.example"}},
	}
	cases := []struct {
		name     string
		faults   map[string]string
		greeting string // when set, the server is a greeter, not go-smtp
		logHas   string // in the log when set
		arrived  []string
		left     []string
		failed   []string
		why      string // in every failed copy's reason
		sum      Summary
		maxConns int
	}{
		{
			name:    "all accepted",
			arrived: sorted(batch[0].String(), batch[1].String(), batch[2].String()),
			sum:     Summary{Sent: 3},
		},
		{
			name:    "MAIL 451",
			faults:  map[string]string{"MAIL b@s.example": "451"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			left:    sorted(batch[1].String()),
			sum:     Summary{Sent: 2, Deferred: 1},
		},
		{
			name:    "MAIL 550",
			faults:  map[string]string{"MAIL b@s.example": "550"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			failed:  sorted(batch[1].String()),
			why:     "550 5.7.1 scripted refusal for MAIL b@s.example",
			sum:     Summary{Sent: 2, Failed: 1},
		},
		{
			name:    "one RCPT 550, one RCPT 451",
			faults:  map[string]string{"RCPT b1@h.example": "550", "RCPT b3@h.example": "451"},
			arrived: sorted(batch[0].String(), "b@s.example>b2@h.example", batch[2].String()),
			left:    sorted("b@s.example>b3@h.example"),
			failed:  sorted("b@s.example>b1@h.example"),
			why:     "550 5.7.1 scripted refusal for RCPT b1@h.example",
			// b is counted once, as partial, and its kept recipient's
			// reply is on its line.
			sum:    Summary{Sent: 2, Partial: 1, PartialLeft: 1},
			logHas: `status=partial sent=<b2@h.example> failed=<b1@h.example> deferred=<b3@h.example> deferred_reply="451 4.3.0 scripted deferral for RCPT b3@h.example" failed_reply="550 `,
		},
		{
			name:    "every RCPT 550",
			faults:  map[string]string{"RCPT b1@h.example": "550", "RCPT b2@h.example": "550", "RCPT b3@h.example": "550"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			failed:  sorted(batch[1].String()),
			why:     "<b1@h.example> 550 5.7.1 scripted refusal for RCPT b1@h.example; <b2@h.example> 550",
			sum:     Summary{Sent: 2, Failed: 1},
		},
		{
			name:    "451 after the dot",
			faults:  map[string]string{"DATA b@s.example": "451"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			left:    sorted(batch[1].String()),
			sum:     Summary{Sent: 2, Deferred: 1},
		},
		{
			name:    "550 after the dot",
			faults:  map[string]string{"DATA b@s.example": "550"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			failed:  sorted(batch[1].String()),
			why:     "550 5.7.1 scripted refusal for DATA b@s.example",
			sum:     Summary{Sent: 2, Failed: 1},
		},
		{
			name:     "421 at the greeting",
			greeting: "421 sink.test too busy, try later\r\n",
			left:     sorted(batch[0].String(), batch[1].String(), batch[2].String()),
			sum:      Summary{Deferred: 3, Unreachable: true},
		},
		{
			// b cannot have been delivered: it is offered again in a new
			// session, which the server drops too; it is then kept, and
			// a third session takes c.
			name:    "dropped mid-DATA",
			faults:  map[string]string{"DATA b@s.example": "drop-mid"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			left:    sorted(batch[1].String()),
			sum:     Summary{Sent: 2, Deferred: 1},
		},
		{
			// b may have been delivered: kept, never offered again in
			// this run; c goes in a new session.
			name:    "dropped right after the dot",
			faults:  map[string]string{"DATA b@s.example": "drop-dot"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			left:    sorted(batch[1].String()),
			sum:     Summary{Sent: 2, Uncertain: 1},
		},
		{
			name:    "reply to RCPT slower than the timeout",
			faults:  map[string]string{"RCPT b2@h.example": "slow"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			left:    sorted(batch[1].String()),
			// BDAT LAST went out behind the RCPTs (pipelined), unanswered:
			// a server that batches its replies may have taken it.
			sum: Summary{Sent: 2, Uncertain: 1},
		},
		{
			name:    "reply to the dot slower than the data timeout",
			faults:  map[string]string{"DATA b@s.example": "slow"},
			arrived: sorted(batch[0].String(), batch[2].String()),
			left:    sorted(batch[1].String()),
			sum:     Summary{Sent: 2, Uncertain: 1},
		},
		{
			name:     "dropped mid-DATA, one session allowed",
			faults:   map[string]string{"DATA b@s.example": "drop-mid"},
			maxConns: 1,
			arrived:  sorted(batch[0].String()),
			left:     sorted(batch[1].String(), batch[2].String()),
			sum:      Summary{Sent: 1, Deferred: 2, Unreachable: true},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := &faultSink{faults: tc.faults, slow: 1500 * time.Millisecond}
			var addr string
			if tc.greeting != "" {
				addr = startGreeter(t, tc.greeting)
			} else {
				addr = startFaultSink(t, be)
			}
			path := filepath.Join(t.TempDir(), "h.example")
			big := -1
			if tc.faults["DATA b@s.example"] == "drop-mid" {
				big = 1
			}
			writeSpool(t, path, batch, big)
			sum, logBuf, err := flushToN(path, addr, 500*time.Millisecond, tc.maxConns)
			if err != nil {
				t.Fatalf("Run: %v\nlog:\n%s", err, logBuf)
			}
			if got := be.accepted(); !reflect.DeepEqual(got, tc.arrived) {
				t.Errorf("arrived %q, want %q", got, tc.arrived)
			}
			if got := leftIn(t, path); !reflect.DeepEqual(got, tc.left) {
				t.Errorf("left in the spool %q, want %q", got, tc.left)
			}
			failed, whys := failedIn(t, path)
			if !reflect.DeepEqual(failed, tc.failed) {
				t.Errorf("failed copies %q, want %q", failed, tc.failed)
			}
			for _, w := range whys {
				if !strings.Contains(w, tc.why) {
					t.Errorf("failed reason %q does not contain %q", w, tc.why)
				}
			}
			// Every recipient is counted once, whatever became of it.
			if n := sum.Rcpts.Total(); n != 5 {
				t.Errorf("summary counts %d recipients (%+v), want the 5 in the spool", n, sum.Rcpts)
			}
			sum.Elapsed, sum.Bytes, sum.Layout, sum.Rcpts = 0, 0, "", RcptCounts{}
			if sum != tc.sum {
				t.Errorf("summary %+v, want %+v", sum, tc.sum)
			}
			if tc.logHas != "" && !strings.Contains(logBuf.String(), tc.logHas) {
				t.Errorf("no %s in the log", tc.logHas)
			}
			// One line per message outcome, plus the summary.
			if n := strings.Count(logBuf.String(), " event=summary "); n != 1 {
				t.Errorf("%d summary lines in the log:\n%s", n, logBuf)
			}
			if t.Failed() {
				t.Logf("log:\n%s", logBuf)
			}
		})
	}
}

// TestLimitsAcrossSessions: a server that takes 3 recipients per
// transaction and 4 messages per session. The wide messages' recipients
// past the limit whose new transaction meets the 421 go in the next
// session of the same run, every recipient exactly once, and messages
// answered while a remainder waits are still recorded in spool order.
func TestLimitsAcrossSessions(t *testing.T) {
	for _, mode := range []string{"chunking", "pipelining", "lockstep"} {
		t.Run(mode, func(t *testing.T) {
			be := &faultSink{maxRcpts: 3, maxMails: 4}
			addr := startFaultSink(t, be)
			path := filepath.Join(t.TempDir(), "h.example")
			var batch []testMsg
			var want []string
			for i := range 12 {
				m := testMsg{from: fmt.Sprintf("m%d@s.example", i)}
				n := 1
				if i%4 == 0 {
					n = 8
				}
				for j := range n {
					m.to = append(m.to, fmt.Sprintf("r%d-%d@h.example", i, j))
					want = append(want, m.from+">"+m.to[j])
				}
				batch = append(batch, m)
			}
			writeSpool(t, path, batch, -1)
			var logBuf bytes.Buffer
			sum, err := Run(context.Background(), Config{
				Host:  "h.example",
				Spool: spool.Options{Path: path},
				Dests: []string{addr},
				Sender: sender.Options{Helo: "test.example", TLS: sender.TLSNone, Timeout: 5 * time.Second,
					NoPipelining: mode == "lockstep", NoChunking: mode == "pipelining"},
				Log:            logging.NewWriter(&logBuf, true),
				MaxPasses:      1,
				MaxConnections: 30,
			})
			if err != nil {
				t.Fatalf("Run: %v\nlog:\n%s", err, logBuf.String())
			}
			var got []string
			for _, a := range be.accepted() {
				from, tos, _ := strings.Cut(a, ">")
				if n := len(strings.Split(tos, ",")); n > 3 {
					t.Errorf("a transaction with %d recipients got through", n)
				}
				for _, to := range strings.Split(tos, ",") {
					got = append(got, from+">"+to)
				}
			}
			sort.Strings(got)
			sort.Strings(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("delivered %d recipient copies, want %d (each once):\n got %q\nwant %q", len(got), len(want), got, want)
			}
			if left := leftIn(t, path); len(left) != 0 {
				t.Errorf("left in the spool: %q", left)
			}
			if sum.Sent != 12 || sum.Deferred != 0 || sum.Partial != 0 || sum.Unreachable {
				t.Errorf("summary %+v, want 12 sent", sum)
			}
			if !strings.Contains(logBuf.String(), "event=remainder") {
				t.Errorf("no remainder was carried to a new session; the test does not test it:\n%s", logBuf.String())
			}
			if t.Failed() {
				t.Logf("log:\n%s", logBuf.String())
			}
		})
	}
}

// TestRerunSendsWhatWasLeft checks that a second run against a healthy
// server delivers exactly what the first run left, and empties the spool.
func TestRerunSendsWhatWasLeft(t *testing.T) {
	batch := []testMsg{
		{"a@s.example", []string{"a1@h.example", "a2@h.example"}},
		{"b@s.example", []string{"b1@h.example"}},
	}
	path := filepath.Join(t.TempDir(), "h.example")
	writeSpool(t, path, batch, -1)
	run := func(faults map[string]string) (Summary, []string) {
		be := &faultSink{faults: faults}
		addr := startFaultSink(t, be)
		sum, logBuf, err := flushTo(path, addr, 5*time.Second)
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, logBuf)
		}
		return sum, be.accepted()
	}
	_, got := run(map[string]string{"RCPT a2@h.example": "451", "MAIL b@s.example": "451"})
	if want := sorted("a@s.example>a1@h.example"); !reflect.DeepEqual(got, want) {
		t.Fatalf("first run delivered %q, want %q", got, want)
	}
	sum, got := run(nil)
	if want := sorted("a@s.example>a2@h.example", "b@s.example>b1@h.example"); !reflect.DeepEqual(got, want) {
		t.Errorf("second run delivered %q, want %q", got, want)
	}
	if sum.Sent != 2 || sum.Left() {
		t.Errorf("second run summary %+v", sum)
	}
	if left := leftIn(t, path); left != nil {
		t.Errorf("spool still holds %q", left)
	}
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != ".etrnflush-h.example.lock" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// TestBusyHostAsksForAnotherPass holds the host lock as a running flush
// would: the second run must not wait, must not touch the spool, and must
// leave the running flush a request for one more pass.
func TestBusyHostAsksForAnotherPass(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h.example")
	writeSpool(t, path, []testMsg{{"a@s.example", []string{"a1@h.example"}}}, -1)
	lock, err := spool.LockHost(dir, "h.example")
	if err != nil {
		t.Fatal(err)
	}
	sum, logBuf, err := flushTo(path, "127.0.0.1:1", time.Second) // never dialled
	if err != nil || !sum.Busy {
		t.Fatalf("Run = %+v, %v; want Busy", sum, err)
	}
	if strings.Contains(logBuf.String(), "summary") {
		t.Errorf("a busy run logged a summary:\n%s", logBuf)
	}
	if !lock.TakeAgain() {
		t.Error("the running flush was not asked for another pass")
	}
	if _, err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the busy run touched the spool: %v", err)
	}
}

// TestMissingSpoolDirectory: nothing was ever held, so nothing to send, and
// no directory is created to hold a lock.
func TestMissingSpoolDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	sum, _, err := flushTo(filepath.Join(dir, "h.example"), "", time.Second)
	if err != nil || sum.Left() || sum.Sent != 0 {
		t.Fatalf("Run = %+v, %v", sum, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the run created %s: %v", dir, err)
	}
}

func TestFailReason(t *testing.T) {
	m := &spool.Message{To: []string{"a@x", "b@x", "c@x"}}
	r550 := sender.Reply{Code: 550, Text: "5.1.1 no such user"}
	r554 := sender.Reply{Code: 554, Text: "5.7.1 policy"}
	cases := []struct {
		name string
		res  sender.Result
		out  []spool.Outcome
		want string
	}{
		{"none failed", sender.Result{Reply: sender.Reply{Code: 250, Text: "ok"}}, []spool.Outcome{spool.Sent, spool.Sent, spool.Keep}, ""},
		{"refused at RCPT, the rest sent", sender.Result{Reply: sender.Reply{Code: 250, Text: "ok"}, RcptReplies: []sender.Reply{r550, {Code: 250}, {Code: 250}}},
			[]spool.Outcome{spool.Failed, spool.Sent, spool.Sent}, "550 5.1.1 no such user"},
		{"refused after the dot", sender.Result{Reply: r554, RcptReplies: []sender.Reply{{Code: 250}, {Code: 250}, {Code: 250}}},
			[]spool.Outcome{spool.Failed, spool.Failed, spool.Failed}, "554 5.7.1 policy"},
		{"different reasons", sender.Result{Reply: r554, RcptReplies: []sender.Reply{r550, {Code: 250}, {Code: 250}}},
			[]spool.Outcome{spool.Failed, spool.Failed, spool.Keep}, "<a@x> 550 5.1.1 no such user; <b@x> 554 5.7.1 policy"},
	}
	for _, tc := range cases {
		if got := failReason(m, tc.res, tc.out); got != tc.want {
			t.Errorf("%s: failReason = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestLogAddrs(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{nil, "-"},
		{[]string{"a@b.example", ""}, "<a@b.example>,<>"},
		{[]string{`"x status=sent"@h.example`}, `<\x22x\x20status=sent\x22@h.example>`},
		{[]string{"caf\u00e9@h.example", "a\\b@h"}, `<caf\xc3\xa9@h.example>,<a\x5cb@h>`},
	}
	for _, c := range cases {
		if got := addrs(c.in); got != c.want {
			t.Errorf("addrs(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	many := make([]string, 25)
	for i := range many {
		many[i] = "r@h"
	}
	if got := addrs(many); !strings.HasSuffix(got, ",<r@h>,+5more") || strings.Count(got, "<r@h>") != maxLogRcpts {
		t.Errorf("addrs of 25 = %s", got)
	}
}

// TestLogIDFromHostileName: in a one-message-per-file directory the id is
// the file's name, which Exim may build from a local part. A name with a
// line break and fields of its own must stay inside its id= field.
func TestLogIDFromHostileName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "h.example")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	name := "q1 status=sent\nhost=h.example id=forged status=sent"
	writeSpool(t, filepath.Join(dir, name), []testMsg{{"a@s.example", []string{"r@h.example"}}}, -1)
	be := &faultSink{faults: map[string]string{"RCPT r@h.example": "451"}}
	sum, logBuf, err := flushTo(dir, startFaultSink(t, be), 5*time.Second)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, logBuf)
	}
	if sum.Deferred != 1 {
		t.Fatalf("summary %+v, want one deferred", sum)
	}
	if strings.Contains(logBuf.String(), " id=forged") {
		t.Errorf("a file name forged a log line:\n%s", logBuf)
	}
	// The id comes from the content, not the name: nothing of the name
	// reaches the outcome line.
	if !regexp.MustCompile(`id=[0-9a-f]{16} `).MatchString(logBuf.String()) {
		t.Errorf("the outcome line has no content id:\n%s", logBuf)
	}
}

// TestStableIDs: a message has one id in the dry run, in the flush that
// delivers part of it, and in the run after, which reads the rewritten
// spool (a compacted work file whose offsets and name changed).
func TestStableIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.example")
	writeSpool(t, path, []testMsg{
		{"a@s.example", []string{"a1@h.example"}},
		{"b@s.example", []string{"b1@h.example", "b2@h.example"}},
		{"c@s.example", []string{"c1@h.example"}},
	}, -1)
	idRe := regexp.MustCompile(`(?m)id=(\S+) .*from=<([^>]*)>`)
	ids := func(text string) map[string]string {
		m := map[string]string{}
		for _, sm := range idRe.FindAllStringSubmatch(text, -1) {
			m[sm[2]] = sm[1]
		}
		return m
	}
	var dry bytes.Buffer
	if _, err := Run(context.Background(), Config{Host: "h.example", Spool: spool.Options{Path: path}, DryRun: true, Out: &dry,
		Log: logging.NewWriter(io.Discard, false)}); err != nil {
		t.Fatal(err)
	}
	want := ids(dry.String())
	if len(want) != 3 {
		t.Fatalf("dry run listed %v:\n%s", want, dry.String())
	}
	be := &faultSink{faults: map[string]string{"RCPT b2@h.example": "451", "RCPT c1@h.example": "451"}}
	_, log1, err := flushTo(path, startFaultSink(t, be), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, log2, err := flushTo(path, startFaultSink(t, &faultSink{}), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first, second := ids(log1.String()), ids(log2.String())
	for from, id := range want {
		if first[from] != id {
			t.Errorf("%s: dry run id %s, flush id %s\n%s", from, id, first[from], log1)
		}
	}
	for _, from := range []string{"b@s.example", "c@s.example"} {
		if second[from] != want[from] {
			t.Errorf("%s: id %s before the rewrite, %s after\n%s", from, want[from], second[from], log2)
		}
	}
	if len(second) != 2 {
		t.Errorf("second run logged %v, want b and c", second)
	}
}

// TestWarnings: the admin is told when tls = may ends in clear text (here
// the server offers no STARTTLS) and when the HELO name is not fully
// qualified; neither stops the mail.
func TestWarnings(t *testing.T) {
	be := &faultSink{}
	addr := startFaultSink(t, be)
	path := filepath.Join(t.TempDir(), "h.example")
	writeSpool(t, path, []testMsg{{"a@s.example", []string{"a1@h.example"}}}, -1)
	var logBuf bytes.Buffer
	sum, err := Run(context.Background(), Config{
		Host:   "h.example",
		Spool:  spool.Options{Path: path},
		Sender: sender.Options{Helo: "shortname", TLS: sender.TLSMay, Timeout: 5 * time.Second},
		Dests:  []string{addr},
		Log:    logging.NewWriter(&logBuf, false),
	})
	if err != nil || sum.Sent != 1 {
		t.Fatalf("Run: %v %+v\n%s", err, sum, &logBuf)
	}
	for _, want := range []string{
		`warning: event=helo-not-fqdn host=h.example helo=shortname reason="not a fully qualified domain name; set helo in the configuration"`,
		`warning: event=tls-failed host=h.example server=` + addr + ` tls=none reason="sending in clear text (tls = may): the server does not offer STARTTLS"`,
	} {
		if !strings.Contains(logBuf.String(), want) {
			t.Errorf("no line %q in the log:\n%s", want, &logBuf)
		}
	}
}

// TestRefusesUs: a server that refuses MAIL FROM for sender after sender
// refuses the relay, not the mail (a customer's misconfiguration): past
// MaxMailRefusals different senders in a row the run stops, keeps every
// message and fails (and so bounces) none, with one host-level line.
// Refusals of one sender, or a run shorter than the limit, are the
// server's word on those messages.
func TestRefusesUs(t *testing.T) {
	mk := func(senders ...string) []testMsg {
		var out []testMsg
		for i, s := range senders {
			out = append(out, testMsg{s, []string{fmt.Sprintf("r%d@h.example", i)}})
		}
		return out
	}
	for _, c := range []struct {
		name      string
		batch     []testMsg
		refuse    []string // senders refused at MAIL
		sent      int
		failed    int
		kept      int
		refusesUs bool
	}{
		{"every sender refused", mk("a@x", "b@x", "c@x", "d@x", "e@x", "f@x", "g@x", "h@x"),
			[]string{"a@x", "b@x", "c@x", "d@x", "e@x", "f@x", "g@x", "h@x"}, 0, 0, 8, true},
		{"one sender refused, again and again", mk("a@x", "a@x", "a@x", "a@x", "a@x", "a@x", "a@x", "b@x"),
			[]string{"a@x"}, 1, 7, 0, false},
		{"a short run of refusals", mk("a@x", "b@x", "c@x", "d@x", "e@x", "f@x"),
			[]string{"a@x", "b@x", "c@x"}, 3, 3, 0, false},
	} {
		for _, window := range []int{1, 0} {
			t.Run(fmt.Sprintf("%s/window %d", c.name, window), func(t *testing.T) {
				faults := map[string]string{}
				for _, s := range c.refuse {
					faults["MAIL "+s] = "550"
				}
				be := &faultSink{faults: faults}
				addr := startFaultSink(t, be)
				path := filepath.Join(t.TempDir(), "h.example")
				writeSpool(t, path, c.batch, -1)
				var logBuf bytes.Buffer
				sum, err := Run(context.Background(), Config{
					Host:            "h.example",
					Spool:           spool.Options{Path: path},
					Sender:          sender.Options{Helo: "test.example", TLS: sender.TLSNone, Timeout: 5 * time.Second, MaxInflight: window},
					Dests:           []string{addr},
					Log:             logging.NewWriter(&logBuf, false),
					MaxMailRefusals: 5,
				})
				if err != nil {
					t.Fatalf("Run: %v\n%s", err, &logBuf)
				}
				failed, _ := failedIn(t, path)
				if len(be.accepted()) != c.sent || len(failed) != c.failed || len(leftIn(t, path)) != c.kept {
					t.Errorf("sent %d, failed %d, kept %d; want %d, %d, %d\n%s", len(be.accepted()), len(failed), len(leftIn(t, path)),
						c.sent, c.failed, c.kept, &logBuf)
				}
				if got := strings.Count(logBuf.String(), "event=refuses-us"); (got == 1) != c.refusesUs || got > 1 {
					t.Errorf("%d refuses-us lines\n%s", got, &logBuf)
				}
				if c.refusesUs && (!sum.Left() || sum.Failed != 0) {
					t.Errorf("summary %+v: want everything kept, exit 75", sum)
				}
			})
		}
	}
}
