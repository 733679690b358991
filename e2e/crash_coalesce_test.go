//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCrashSIGKILLCoalesced: a spool of per-recipient copies (Exim's
// batch_max = 1), flushed with coalescing and a window of 8, SIGKILLed
// before and after the 250 of coalesced transactions, mid-body and at
// random times, then rerun until clean. Every copy's recipient arrives at
// least once and intact, none more than once per kill, no more
// transactions repeat delivered recipients than kills × the window, the
// copies did travel together, and nothing is left.
func TestCrashSIGKILLCoalesced(t *testing.T) {
	const window = 8
	dir := t.TempDir()
	const host = "crash.example"
	path := filepath.Join(dir, host)
	// 30 messages, 1 to 5 copies each, one recipient per copy.
	base := crashMessages(30, func(i int) []string { return []string{fmt.Sprintf("u%d-0@%s", i, host)} })
	var copies []envMsg
	for i, m := range base {
		for c := range 1 + i%5 {
			copies = append(copies, envMsg{From: m.From, To: []string{fmt.Sprintf("u%d-%d@%s", i, c, host)}, Data: m.Data})
		}
	}
	writeCrashFile(t, path, copies)
	byID := map[string]envMsg{}
	wantRcpts := map[string]map[string]bool{}
	for _, m := range copies {
		byID[m.id()] = m
		if wantRcpts[m.id()] == nil {
			wantRcpts[m.id()] = map[string]bool{}
		}
		wantRcpts[m.id()][m.To[0]] = true
	}

	rec := newRecorder(t)
	args := []string{"flush", "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example",
		"--timeout", "20s", "--max-inflight", fmt.Sprint(window), host}
	plans := []*killPoint{
		{kind: killBeforeReply, n: 2},
		{kind: killAfterReply, n: 3, delay: time.Millisecond},
		{kind: killMidBody, n: 2, bytes: 300},
		{kind: killBeforeReply, n: 1},
		{kind: killAfterMail, n: 4},
		{kind: killAfterReply, n: 1},
		{kind: killBeforeReply, n: 5},
	}
	plans = withTimerKills(plans, 13, 3)
	runs, kills, _ := killUntilClean(t, rec, path, args, plans)
	got := rec.messages()
	if kills < 5 {
		t.Errorf("only %d kills landed, want at least 5", kills)
	}
	arrived := map[string]int{} // id + recipient
	dupTxns, multi := 0, 0
	for _, m := range got {
		w, ok := byID[m.id()]
		switch {
		case !ok:
			t.Errorf("received %s, never spooled", m)
			continue
		case !bytes.Equal(w.Data, m.Data):
			t.Errorf("%s arrived changed%s", m.id(), firstDiff(w.Data, m.Data))
		case w.From != m.From:
			t.Errorf("%s: from=<%s>, want <%s>", m.id(), m.From, w.From)
		}
		if len(m.To) > 1 {
			multi++
		}
		dup := false
		for _, to := range m.To {
			if !wantRcpts[m.id()][to] {
				t.Errorf("%s: <%s> is not the recipient of any copy", m.id(), to)
			}
			k := m.id() + " " + to
			if arrived[k] > 0 {
				dup = true
			}
			arrived[k]++
		}
		if dup {
			dupTxns++
		}
	}
	for id, rcpts := range wantRcpts {
		for to := range rcpts {
			switch n := arrived[id+" "+to]; {
			case n == 0:
				t.Errorf("%s: <%s> was lost", id, to)
			case n-1 > kills:
				t.Errorf("%s: <%s> arrived %d times, more than once per kill (%d)", id, to, n, kills)
			}
		}
	}
	t.Logf("%d copies of %d messages, %d runs, %d kills, %d transactions received (%d with several recipients), %d repeated a delivered recipient",
		len(copies), len(base), runs, kills, len(got), multi, dupTxns)
	if dupTxns > kills*window {
		t.Errorf("%d transactions repeated delivered recipients, more than the %d kills × window %d", dupTxns, kills, window)
	}
	if multi == 0 {
		t.Errorf("no transaction carried several recipients: the copies were not coalesced")
	}
	if temps := removeTempFiles(t, dir); temps > 0 {
		t.Errorf("%d temporary files left behind after the clean runs", temps)
	}
	assertNoMailLeft(t, path)
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
