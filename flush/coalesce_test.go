package flush

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"etrnflush/bsmtp"
	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

// copyMsg is one spool entry of a coalescing test: body names the content,
// so entries with the same body are copies of one message.
type copyMsg struct {
	from string
	to   []string
	body string
}

// writeCopies writes msgs as one appended BSMTP file. Bodies are padded to
// one size, so that only the content tells different messages apart.
func writeCopies(t *testing.T, path string, msgs []copyMsg) {
	t.Helper()
	var buf bytes.Buffer
	w := bsmtp.NewWriter(&buf)
	for _, m := range msgs {
		body := fmt.Sprintf("Subject: %-20s\n\n%s", m.body, strings.Repeat("same text\n.dotted line\n", 50))
		if err := w.Write(bsmtp.Envelope{From: m.from, To: m.to}, strings.NewReader(body), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// copiesOf makes one spool entry per recipient, as Exim with batch_max = 1
// writes them.
func copiesOf(from, body string, to ...string) []copyMsg {
	var out []copyMsg
	for _, r := range to {
		out = append(out, copyMsg{from, []string{r}, body})
	}
	return out
}

var outcomeLine = regexp.MustCompile(`host=h\.example id=(\S+) from=<([^>]*)> to=(\S+) size=\d+ status=(\S+)(.*) reply=`)

type logged struct {
	id, to, status, txn string
}

// outcomes returns the outcome lines of a flush log, in order.
func outcomes(t *testing.T, log string) []logged {
	t.Helper()
	var out []logged
	for _, l := range strings.Split(log, "\n") {
		m := outcomeLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		txn := ""
		if _, after, ok := strings.Cut(m[5], " coalesced="); ok {
			txn, _, _ = strings.Cut(after, " ")
		}
		out = append(out, logged{id: m[1], to: m[3], status: m[4], txn: txn})
	}
	return out
}

func rcpts(prefix string, n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("%s%d@h.example", prefix, i))
	}
	return out
}

// flushCoalescing runs one flush like flushTo, with coalescing on or off.
func flushCoalescing(path, addr string, off bool) (Summary, *bytes.Buffer, error) {
	var logBuf bytes.Buffer
	cfg := Config{
		Host:       "h.example",
		Spool:      spool.Options{Path: path},
		Sender:     sender.Options{Helo: "test.example", TLS: sender.TLSNone, Timeout: 10 * time.Second, DataTimeout: 10 * time.Second},
		Log:        logging.NewWriter(&logBuf, true),
		Dests:      []string{addr},
		NoCoalesce: off,
	}
	sum, err := Run(context.Background(), cfg)
	return sum, &logBuf, err
}

// TestCoalesce: copies of one message (same sender, same content, in a
// row) go out as one transaction with several RCPTs; the outcome of every
// recipient goes back to the spool message it came from, each with its
// own log line, even when some recipients of the transaction are refused
// or deferred.
func TestCoalesce(t *testing.T) {
	x := rcpts("x", 6)
	var spoolX []copyMsg
	spoolX = append(spoolX, copiesOf("s@s.example", "X", x...)...)
	spoolX = append(spoolX, copyMsg{"s@s.example", []string{"y1@h.example"}, "Y"}) // same size, other content
	spoolX = append(spoolX, copiesOf("s@s.example", "Z", "z1@h.example", "z2@h.example")...)
	spoolX = append(spoolX, copiesOf("t@s.example", "Z", "z3@h.example")...) // same content, other sender

	txn := func(from string, to ...string) string { return from + ">" + strings.Join(to, ",") }
	cases := []struct {
		name    string
		msgs    []copyMsg
		off     bool
		faults  map[string]string
		arrived []string          // transactions the server accepted
		status  map[string]string // per recipient (each in a copy of its own)
		left    []string
		failed  []string
		sum     Summary
	}{
		{
			name:    "copies in a row",
			msgs:    spoolX,
			arrived: sorted(txn("s@s.example", x...), txn("s@s.example", "y1@h.example"), txn("s@s.example", "z1@h.example", "z2@h.example"), txn("t@s.example", "z3@h.example")),
			sum:     Summary{Sent: 10},
		},
		{
			name: "coalescing off",
			msgs: spoolX[:6],
			off:  true,
			arrived: sorted(txn("s@s.example", "x1@h.example"), txn("s@s.example", "x2@h.example"), txn("s@s.example", "x3@h.example"),
				txn("s@s.example", "x4@h.example"), txn("s@s.example", "x5@h.example"), txn("s@s.example", "x6@h.example")),
			sum: Summary{Sent: 6},
		},
		{
			name:    "some recipients refused or deferred",
			msgs:    spoolX[:6],
			faults:  map[string]string{"RCPT x2@h.example": "550", "RCPT x5@h.example": "451"},
			arrived: sorted(txn("s@s.example", "x1@h.example", "x3@h.example", "x4@h.example", "x6@h.example")),
			status:  map[string]string{"x2": "failed", "x5": "deferred"},
			left:    sorted(txn("s@s.example", "x5@h.example")),
			failed:  sorted(txn("s@s.example", "x2@h.example")),
			sum:     Summary{Sent: 4, Failed: 1, Deferred: 1},
		},
		{
			name:   "451 after the dot",
			msgs:   spoolX[:6],
			faults: map[string]string{"DATA s@s.example": "451"},
			status: map[string]string{"x1": "deferred", "x2": "deferred", "x3": "deferred", "x4": "deferred", "x5": "deferred", "x6": "deferred"},
			left: sorted(txn("s@s.example", "x1@h.example"), txn("s@s.example", "x2@h.example"), txn("s@s.example", "x3@h.example"),
				txn("s@s.example", "x4@h.example"), txn("s@s.example", "x5@h.example"), txn("s@s.example", "x6@h.example")),
			sum: Summary{Deferred: 6},
		},
		{
			name:    "550 after the dot",
			msgs:    spoolX[:3],
			faults:  map[string]string{"DATA s@s.example": "550"},
			status:  map[string]string{"x1": "failed", "x2": "failed", "x3": "failed"},
			failed:  sorted(txn("s@s.example", "x1@h.example"), txn("s@s.example", "x2@h.example"), txn("s@s.example", "x3@h.example")),
			sum:     Summary{Failed: 3},
			arrived: nil,
		},
		{
			name: "a recipient twice is not coalesced",
			msgs: append(copiesOf("s@s.example", "X", "x1@h.example", "x2@h.example"), copiesOf("s@s.example", "X", "X1@h.example", "x3@h.example")...),
			arrived: sorted(txn("s@s.example", "x1@h.example", "x2@h.example"),
				txn("s@s.example", "X1@h.example", "x3@h.example")),
			sum: Summary{Sent: 4},
		},
		{
			name: "multi-recipient copies",
			msgs: []copyMsg{
				{"s@s.example", []string{"m1@h.example", "m2@h.example"}, "M"},
				{"s@s.example", []string{"m3@h.example"}, "M"},
				{"s@s.example", []string{"m4@h.example", "m5@h.example", "m6@h.example"}, "M"},
			},
			faults:  map[string]string{"RCPT m2@h.example": "550", "RCPT m4@h.example": "451"},
			arrived: sorted(txn("s@s.example", "m1@h.example", "m3@h.example", "m5@h.example", "m6@h.example")),
			status:  map[string]string{"m1": "partial", "m3": "sent", "m4": "partial"},
			left:    sorted(txn("s@s.example", "m4@h.example")),
			failed:  sorted(txn("s@s.example", "m2@h.example")),
			// Each copy once: m3 sent, m1 and m4 partial (m4 with a
			// recipient kept).
			sum: Summary{Sent: 1, Partial: 2, PartialLeft: 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.example")
			writeCopies(t, path, tc.msgs)
			be := &faultSink{faults: tc.faults}
			addr := startFaultSink(t, be)
			sum, logBuf, err := flushCoalescing(path, addr, tc.off)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, logBuf)
			}
			if got := be.accepted(); !reflect.DeepEqual(got, tc.arrived) {
				t.Errorf("server accepted\n  %q\nwant\n  %q\nlog:\n%s", got, tc.arrived, logBuf)
			}
			if got := leftIn(t, path); !reflect.DeepEqual(got, tc.left) {
				t.Errorf("left in the spool %q, want %q", got, tc.left)
			}
			if got, _ := failedIn(t, path); !reflect.DeepEqual(got, tc.failed) {
				t.Errorf("failed folder %q, want %q", got, tc.failed)
			}
			sum.Elapsed, sum.Bytes, sum.Layout, sum.Rcpts = 0, 0, "", RcptCounts{}
			if sum != tc.sum {
				t.Errorf("summary %+v, want %+v", sum, tc.sum)
			}
			checkOutcomeLines(t, logBuf.String(), tc.msgs, tc.status, !tc.off)
		})
	}
}

// checkOutcomeLines: one line per spool message, in spool order, naming
// exactly that message's recipients and its own status; the copies of one
// transaction all name its first message.
func checkOutcomeLines(t *testing.T, log string, msgs []copyMsg, status map[string]string, coalesce bool) {
	t.Helper()
	lines := outcomes(t, log)
	if len(lines) != len(msgs) {
		t.Fatalf("%d outcome lines for %d spool messages:\n%s", len(lines), len(msgs), log)
	}
	ids := map[string]bool{}
	for i, l := range lines {
		m := msgs[i]
		if ids[l.id] {
			t.Errorf("id %s logged twice", l.id)
		}
		ids[l.id] = true
		want := "<" + strings.Join(m.to, ">,<") + ">"
		if l.to != want {
			t.Errorf("line %d: to=%s, want %s", i, l.to, want)
		}
		st := status[strings.SplitN(m.to[0], "@", 2)[0]]
		if st == "" {
			st = "sent"
		}
		if l.status != st {
			t.Errorf("line %d (%s): status=%s, want %s", i, want, l.status, st)
		}
		// Copies: same sender and body as a neighbour in the same run.
		copyOfPrev := i > 0 && msgs[i-1].from == m.from && msgs[i-1].body == m.body
		copyOfNext := i+1 < len(msgs) && msgs[i+1].from == m.from && msgs[i+1].body == m.body
		if coalesce && (copyOfPrev || copyOfNext) {
			if l.txn == "" {
				t.Errorf("line %d (%s): no coalesced= field for a copy", i, want)
			}
			if copyOfPrev && lines[i-1].txn != "" && l.txn != lines[i-1].txn && !overlapsEarlierCopy(msgs, i) {
				t.Errorf("line %d (%s): coalesced=%s, the copy before says %s", i, want, l.txn, lines[i-1].txn)
			}
		} else if l.txn != "" && !(copyOfPrev || copyOfNext) {
			t.Errorf("line %d (%s): coalesced=%s on a message sent alone", i, want, l.txn)
		}
	}
}

// overlapsEarlierCopy tells whether a recipient of msgs[i] is also one of
// an earlier copy in the same run of copies (which starts a new group).
func overlapsEarlierCopy(msgs []copyMsg, i int) bool {
	for j := i - 1; j >= 0 && msgs[j].from == msgs[i].from && msgs[j].body == msgs[i].body; j-- {
		for _, x := range msgs[j].to {
			for _, y := range msgs[i].to {
				if strings.EqualFold(x, y) {
					return true
				}
			}
		}
	}
	return false
}

// TestCoalesceBound: a transaction never carries more than maxGroupRcpts
// recipients; the copies beyond go in the next one.
func TestCoalesceBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.example")
	to := rcpts("r", 2*maxGroupRcpts+30)
	writeCopies(t, path, copiesOf("s@s.example", "B", to...))
	be := &faultSink{}
	addr := startFaultSink(t, be)
	sum, logBuf, err := flushCoalescing(path, addr, false)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, logBuf)
	}
	got := be.accepted()
	var sizes []int
	total := 0
	for _, g := range got {
		n := strings.Count(g, "@h.example")
		sizes = append(sizes, n)
		total += n
	}
	if len(got) != 3 || total != len(to) {
		t.Fatalf("transactions with %v recipients, want 3 with %d in all", sizes, len(to))
	}
	for _, n := range sizes {
		if n > maxGroupRcpts {
			t.Errorf("a transaction with %d recipients, more than %d", n, maxGroupRcpts)
		}
	}
	if sum.Sent != len(to) {
		t.Errorf("summary sent=%d, want %d", sum.Sent, len(to))
	}
	if left := leftIn(t, path); left != nil {
		t.Errorf("left in the spool: %q", left)
	}
	if n := len(outcomes(t, logBuf.String())); n != len(to) {
		t.Errorf("%d outcome lines, want %d", n, len(to))
	}
}

// TestSplit: a transaction's result goes back to its copies by position;
// a result cut short leaves the missing recipients without a status, which
// settle keeps (Deferred).
func TestSplit(t *testing.T) {
	group := []*spool.Message{{ID: "a", To: []string{"a1"}}, {ID: "b", To: []string{"b1", "b2"}}, {ID: "c", To: []string{"c1"}}}
	res := sender.Result{
		Rcpts:       []sender.Status{sender.Sent, sender.Failed, sender.Deferred},
		RcptReplies: []sender.Reply{{Code: 250}, {Code: 550, Text: "no"}, {Code: 451}},
		Reply:       sender.Reply{Code: 250, Text: "ok"},
		Uncertain:   true,
	}
	parts := split(group, res)
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	want := [][]sender.Status{{sender.Sent}, {sender.Failed, sender.Deferred}, nil}
	for i, p := range parts {
		if !reflect.DeepEqual(p.Rcpts, want[i]) {
			t.Errorf("part %d: %v, want %v", i, p.Rcpts, want[i])
		}
		// Part 1's recipients were both refused at RCPT: the server
		// cannot have taken it, so it is not uncertain.
		if p.Reply != res.Reply || p.Uncertain != (i != 1) {
			t.Errorf("part %d: reply %+v uncertain %v", i, p.Reply, p.Uncertain)
		}
	}
	if parts[1].RcptReplies[0].Code != 550 {
		t.Errorf("part 1: RCPT replies %+v", parts[1].RcptReplies)
	}
}

// TestCoalesceUTF8: a copy whose address needs SMTPUTF8 is not put in a
// transaction with copies that do not. The sink does not offer SMTPUTF8,
// so that copy fails for good (it could never go to this server);
// coalesced with the others it would take them down with it.
func TestCoalesceUTF8(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.example")
	msgs := copiesOf("s@s.example", "U", "x1@h.example", "jörg@h.example", "x3@h.example")
	writeCopies(t, path, msgs)
	be := &faultSink{}
	addr := startFaultSink(t, be)
	sum, logBuf, err := flushCoalescing(path, addr, false)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, logBuf)
	}
	want := sorted("s@s.example>x1@h.example", "s@s.example>x3@h.example")
	if got := be.accepted(); !reflect.DeepEqual(got, want) {
		t.Errorf("server accepted %q, want %q\nlog:\n%s", got, want, logBuf)
	}
	if got := leftIn(t, path); len(got) != 0 {
		t.Errorf("left in the spool %q, want nothing", got)
	}
	if sum.Sent != 2 || sum.Failed != 1 || sum.Deferred != 0 {
		t.Errorf("summary %+v, want 2 sent and 1 failed", sum)
	}
	if !strings.Contains(logBuf.String(), "5.6.7 not sent") {
		t.Errorf("the log does not say why the copy failed:\n%s", logBuf)
	}
}

// TestCoalesceUncertainRefused: when the connection is lost after the end
// of a coalesced transaction, a copy whose recipient was refused at RCPT
// could not have been delivered: it is failed (and bounced), not
// uncertain, while the copies that were accepted are uncertain and kept.
func TestCoalesceUncertainRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.example")
	msgs := copiesOf("s@s.example", "X", "x1@h.example", "x2@h.example", "x3@h.example")
	writeCopies(t, path, msgs)
	be := &faultSink{faults: map[string]string{"RCPT x2@h.example": "550", "DATA s@s.example": "drop-dot"}}
	addr := startFaultSink(t, be)
	sum, logBuf, err := flushCoalescing(path, addr, false)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, logBuf)
	}
	lines := outcomes(t, logBuf.String())
	want := []string{"uncertain", "failed", "uncertain"}
	if len(lines) != len(want) {
		t.Fatalf("%d outcome lines, want %d:\n%s", len(lines), len(want), logBuf)
	}
	for i, l := range lines {
		if l.status != want[i] {
			t.Errorf("%s: status=%s, want %s", l.to, l.status, want[i])
		}
	}
	if got, want := leftIn(t, path), sorted("s@s.example>x1@h.example", "s@s.example>x3@h.example"); !reflect.DeepEqual(got, want) {
		t.Errorf("left in the spool %q, want %q", got, want)
	}
	if got, _ := failedIn(t, path); !reflect.DeepEqual(got, []string{"s@s.example>x2@h.example"}) {
		t.Errorf("failed folder %q", got)
	}
	if sum.Uncertain != 2 || sum.Failed != 1 {
		t.Errorf("summary %+v, want 2 uncertain and 1 failed", sum)
	}
}
