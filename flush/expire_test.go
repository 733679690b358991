package flush

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"etrnflush/bsmtp"
	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

// writeDated writes one BSMTP spool file whose messages carry a Received:
// field with the given date (none when zero).
func writeDated(t *testing.T, path string, msgs []testMsg, dates []time.Time) {
	t.Helper()
	var buf bytes.Buffer
	w := bsmtp.NewWriter(&buf)
	for i, m := range msgs {
		h := ""
		if !dates[i].IsZero() {
			h = "Received: from a by relay.test.example with esmtp id 1x;\n\t" + dates[i].Format(time.RFC1123Z) + "\n"
		}
		body := h + "Subject: message " + m.from + "\n\nbody\n"
		if err := w.Write(bsmtp.Envelope{From: m.from, To: m.to}, strings.NewReader(body), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func flushAged(t *testing.T, path, addr string, sendmail []string, maxAge time.Duration) (Summary, string) {
	t.Helper()
	var logBuf bytes.Buffer
	cfg := Config{
		Host:     "h.example",
		Spool:    spool.Options{Path: path},
		Sender:   sender.Options{Helo: "relay.test.example", TLS: sender.TLSNone, Timeout: 5 * time.Second, DataTimeout: 5 * time.Second},
		Log:      logging.NewWriter(&logBuf, true),
		Sendmail: sendmail,
		MaxAge:   maxAge,
		Dests:    []string{addr},
	}
	sum, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("flush: %v\n%s", err, logBuf.String())
	}
	return sum, logBuf.String()
}

// TestExpiryUnreachable: on a host that does not answer, a message whose
// Received: date is ten days old is returned with Status 4.4.7 and
// removed; a fresh one stays.
func TestExpiryUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.example")
	now := time.Now()
	writeDated(t, path, []testMsg{
		{"old@s.example", []string{"o1@h.example", "o2@h.example"}},
		{"new@s.example", []string{"n1@h.example"}},
	}, []time.Time{now.Add(-10 * 24 * time.Hour), now.Add(-time.Hour)})
	out := t.TempDir()
	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	sum, logs := flushAged(t, path, "127.0.0.1:1", fakeSendmail(t, out), 5*24*time.Hour)
	if !sum.Unreachable || sum.Failed != 1 || sum.Bounced != 1 || sum.Deferred != 1 {
		t.Errorf("summary %+v\n%s", sum, logs)
	}
	if !strings.Contains(logs, "from=<old@s.example> to=<o1@h.example>,<o2@h.example> size=") ||
		!strings.Contains(logs, "status=expired reason=\"4.4.7 expired: not delivered to h.example within 5d") {
		t.Errorf("no expired line:\n%s", logs)
	}
	if got := leftIn(t, path); !reflect.DeepEqual(got, []string{"new@s.example>n1@h.example"}) {
		t.Errorf("left %q", got)
	}
	if got, _ := failedIn(t, path); got != nil {
		t.Errorf("failed folder %q after the DSN was taken", got)
	}
	dsns := dsnFiles(t, out)
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want 1", len(dsns))
	}
	raw, err := os.ReadFile(dsns[0])
	if err != nil {
		t.Fatal(err)
	}
	p := parseDSNFlush(t, raw)
	if len(p) != 3 || p[0].Get("Arrival-Date") == "" {
		t.Fatalf("status groups %v", p)
	}
	for i, a := range []string{"o1@h.example", "o2@h.example"} {
		g := p[i+1]
		if g.Get("Final-Recipient") != "rfc822; "+a || g.Get("Action") != "failed" || g.Get("Status") != "4.4.7" ||
			g.Get("Diagnostic-Code") != "" {
			t.Errorf("recipient %d: %v", i, g)
		}
	}
}

// TestExpiryByModTime: without a Received: field the age is the spool
// entry's modification time.
func TestExpiryByModTime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		age    time.Duration
		expire bool
	}{{"old", 10 * 24 * time.Hour, true}, {"fresh", time.Hour, false}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.example")
			writeDated(t, path, []testMsg{{"m@s.example", []string{"r@h.example"}}}, []time.Time{{}})
			old := time.Now().Add(-tc.age)
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
			sum, logs := flushAged(t, path, "127.0.0.1:1", nil, 5*24*time.Hour)
			if got := sum.Failed == 1; got != tc.expire {
				t.Errorf("expired %v, want %v\n%s", got, tc.expire, logs)
			}
			failed, whys := failedIn(t, path)
			if tc.expire && (len(failed) != 1 || !strings.Contains(whys[0], "spool entry's modification time")) {
				t.Errorf("failed copies %q %q", failed, whys)
			}
			if !tc.expire && len(failed) != 0 {
				t.Errorf("a fresh message expired: %q", failed)
			}
		})
	}
}

// TestDelayWarningOnce: a message held longer than warn_age gets one
// Action: delayed DSN over three runs; a command that fails is tried
// again on the next run; the null sender and a fresh message get none.
func TestDelayWarningOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.example")
	now := time.Now()
	writeDated(t, path, []testMsg{
		{"slow@s.example", []string{"w1@h.example"}},
		{"", []string{"w2@h.example"}},
		{"new@s.example", []string{"w3@h.example"}},
	}, []time.Time{now.Add(-6 * time.Hour), now.Add(-6 * time.Hour), now.Add(-time.Hour)})
	out := t.TempDir()
	run := func(exit string) (Summary, string) {
		t.Helper()
		t.Setenv("FAKE_SENDMAIL_EXIT", exit)
		var logBuf bytes.Buffer
		cfg := Config{
			Host:     "h.example",
			Spool:    spool.Options{Path: path},
			Sender:   sender.Options{Helo: "relay.test.example", TLS: sender.TLSNone, Timeout: 5 * time.Second},
			Log:      logging.NewWriter(&logBuf, true),
			Sendmail: fakeSendmail(t, out),
			MaxAge:   5 * 24 * time.Hour,
			WarnAge:  4 * time.Hour,
			Dests:    []string{"127.0.0.1:1"},
		}
		sum, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("flush: %v\n%s", err, logBuf.String())
		}
		return sum, logBuf.String()
	}
	_, logs := run("1")
	if !strings.Contains(logs, "from=<slow@s.example> to=<w1@h.example> status=warn_failed") || len(dsnFiles(t, out)) != 1 {
		t.Errorf("run 1: %d calls\n%s", len(dsnFiles(t, out)), logs)
	}
	for i := 2; i <= 4; i++ {
		sum, logs := run("0")
		warned := strings.Count(logs, "status=delay_warned")
		if want := map[bool]int{true: 1, false: 0}[i == 2]; warned != want {
			t.Errorf("run %d: %d warnings logged, want %d\n%s", i, warned, want, logs)
		}
		if sum.Deferred != 3 || sum.Failed != 0 {
			t.Errorf("run %d: summary %+v", i, sum)
		}
	}
	dsns := dsnFiles(t, out)
	if len(dsns) != 2 {
		t.Fatalf("%d calls of sendmail, want 2 (one refused, one taken)", len(dsns))
	}
	raw, err := os.ReadFile(filepath.Join(out, "dsn.2"))
	if err != nil {
		t.Fatal(err)
	}
	argv, err := os.ReadFile(filepath.Join(out, "argv.2"))
	if err != nil || !strings.HasSuffix(string(argv), "--\nslow@s.example\n") {
		t.Errorf("argv %q %v", argv, err)
	}
	p := parseDSNFlush(t, raw)
	if len(p) != 2 || p[1].Get("Final-Recipient") != "rfc822; w1@h.example" || p[1].Get("Action") != "delayed" ||
		p[1].Get("Will-Retry-Until") == "" {
		t.Errorf("status groups %v", p)
	}
	if got := leftIn(t, path); len(got) != 3 {
		t.Errorf("a warning changed the spool: %q", got)
	}
}

// TestExpiryOfPartialLeavesNothing: a message one recipient of which the
// server took while it deferred the other, held longer than max_age, is
// given up after the pass; its DSN handed over, nothing is left (the run
// would exit 0).
func TestExpiryOfPartialLeavesNothing(t *testing.T) {
	be := &faultSink{faults: map[string]string{"RCPT a2@h.example": "451"}}
	addr := startFaultSink(t, be)
	path := filepath.Join(t.TempDir(), "h.example")
	writeDated(t, path, []testMsg{{"a@s.example", []string{"a1@h.example", "a2@h.example"}}},
		[]time.Time{time.Now().Add(-10 * 24 * time.Hour)})
	out := t.TempDir()
	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	sum, logs := flushAged(t, path, addr, fakeSendmail(t, out), 5*24*time.Hour)
	if !strings.Contains(logs, "status=expired") || sum.Bounced != 1 || sum.Left() {
		t.Errorf("summary %+v, want the partial message expired, bounced and nothing left\n%s", sum, logs)
	}
}
