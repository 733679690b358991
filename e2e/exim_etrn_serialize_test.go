//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestEximETRNSecondDuringFlush: with the documented recipe, a second
// ETRN while the first flush is still sending reaches etrnflush (250, not
// Exim's "458 Already processing"), and the mail spooled meanwhile goes
// out in that same run: the running etrnflush makes one more pass, the
// second one only asks for it, and nothing is left. With
// smtp_etrn_serialize = true (Exim's default) Exim answers the second
// ETRN itself with 458, etrnflush never hears of it, and the late mail
// waits for the next ETRN: this test then fails.
func TestEximETRNSecondDuringFlush(t *testing.T) {
	r := newRig(t)
	// Every RCPT answered a second late keeps the first flush busy for
	// about as many seconds as it has messages: time enough to spool more
	// mail and ask again while it runs.
	sinkDir := r.mkdir(t, "sink")
	s := &sink{daemon: r.startDaemon(t, "sink.conf", sinkDir, "SINK_PORT", "-DSINK_DIR="+sinkDir, "-DSINKRCPTDELAY=1s"), r: r}
	w := r.newWriter(t)
	const host = "file.rt.example"
	inject := func(batch string, n int) {
		t.Helper()
		for i := range n {
			msg := fmt.Sprintf("From: <alice@sender.example>\nSubject: %s %d\nMessage-ID: <serialize-%s-%d@test.example>\n\n%s mail for %s\n", batch, i, batch, i, batch, host)
			if err := w.inject("alice@sender.example", []string{fmt.Sprintf("%s%d@%s", batch, i, host)}, []byte(msg)); err != nil {
				t.Fatal(err)
			}
		}
	}
	const early, late = 5, 3
	inject("early", early)
	spoolPath := w.filePath(host)
	want := spoolMessages(t, spoolPath)
	if len(want) != early {
		t.Fatalf("writer spooled %d messages, want %d", len(want), early)
	}

	d, logFile := startRecipe(t, r, host, s.addr(), spoolPath)
	if code, text := etrnReply(t, d.addr(), host); code != 250 {
		t.Fatalf("first ETRN: %d %s, want 250", code, text)
	}
	// A message sent means the first pass has claimed the spool: what is
	// spooled from now on is for a later pass.
	waitLog(t, logFile, "status=sent")
	inject("late", late)
	lateMsgs := spoolMessages(t, spoolPath)
	if len(lateMsgs) != late {
		t.Fatalf("the spool holds %d messages after the late ones, want %d (did the first pass not claim it?)", len(lateMsgs), late)
	}
	want = append(want, lateMsgs...)
	if b, _ := os.ReadFile(logFile); strings.Contains(string(b), " event=summary ") {
		t.Fatalf("the first flush ended before the late mail was spooled, so this run cannot show anything; a slower sink is needed on this machine:\n%s", b)
	}

	code, text := etrnReply(t, d.addr(), host)
	if code != 250 {
		t.Fatalf("second ETRN during the flush: %d %s, want 250: with smtp_etrn_serialize = true Exim answers 458 itself, "+
			"and the mail spooled during the flush waits for the next ETRN", code, text)
	}
	got := s.waitDelivered(t, early+late)
	sameMessages(t, "delivered", want, got)
	logText := waitLog(t, logFile, fmt.Sprintf("event=summary host=%s", host))
	assertNoMailLeft(t, spoolPath)

	// Who sent what: one process sent everything, and it is the one that
	// was asked for the extra pass; another one only asked.
	linePID := regexp.MustCompile(`etrnflush\[(\d+)\]: (.*)`)
	senders := map[string]int{}
	var passPID, busyPID string
	for _, l := range strings.Split(logText, "\n") {
		m := linePID.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		switch msg := m[2]; {
		case strings.Contains(msg, "status=sent"):
			senders[m[1]]++
		case strings.Contains(msg, "event=another-pass"):
			passPID = m[1]
		case strings.Contains(msg, "event=busy host="):
			busyPID = m[1]
		}
	}
	if len(senders) != 1 || senders[passPID] != early+late {
		t.Errorf("messages sent per etrnflush process %v, want all %d by the one that made another pass (%q)", senders, early+late, passPID)
	}
	if busyPID == "" || busyPID == passPID {
		t.Errorf("no second etrnflush found the first busy (busy pid %q, pass pid %q)", busyPID, passPID)
	}
	// The asking run writes no summary: one run, one summary, all mail.
	if n := strings.Count(logText, " event=summary "); n != 1 || !strings.Contains(logText, fmt.Sprintf(" event=summary host=%s sent=%d deferred=0 ", host, early+late)) {
		t.Errorf("want one summary, of the run that sent all %d messages; %d summaries:\n%s", early+late, n, logText)
	}

	// The slow sink must have been slow, not broken: no protocol error, no
	// dropped session, now that the run is over.
	s.assertSinkLogClean(t)
}
