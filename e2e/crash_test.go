//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCrashSIGKILL: etrnflush is SIGKILLed at many points of a flush (after
// MAIL, mid-body, before and after the 250 to the final dot, and at random
// times) and rerun until it finishes. Every message must arrive at least
// once and intact, duplicates must not outnumber kills × the window, and
// nothing may be left behind.
func TestCrashSIGKILL(t *testing.T) {
	dir := t.TempDir()
	const host = "crash.example"
	path := filepath.Join(dir, host)
	want := writeCrashSpool(t, path, 150)
	rec := newRecorder(t)
	args := []string{"flush", "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example",
		"--timeout", "20s", "--max-inflight", fmt.Sprint(crashWindow), host}

	plans := []*killPoint{
		{kind: killBeforeReply, n: 1},
		{kind: killAfterMail, n: 3},
		{kind: killMidBody, n: 5, bytes: 200},
		{kind: killAfterReply, n: 7},
		{kind: killBeforeReply, n: 10},
		{kind: killAfterReply, n: 2, delay: time.Millisecond},
		{kind: killMidBody, n: 1, bytes: 0},
		{kind: killAfterMail, n: 12},
		{kind: killBeforeReply, n: 15},
		{kind: killAfterReply, n: 8, delay: 300 * time.Microsecond},
		{kind: killBeforeReply, n: 4},
		{kind: killMidBody, n: 6, bytes: 100000},
	}
	plans = withTimerKills(plans, 7, 5)

	start := time.Now()
	runs, kills, staleLocks := killUntilClean(t, rec, path, args, plans)
	got := rec.messages()
	t.Logf("%d messages, %d runs, %d SIGKILLs (%d left Exim's lock file), %d received, %s",
		len(want), runs, kills, staleLocks, len(got), time.Since(start).Round(time.Millisecond))
	if kills < 10 {
		t.Errorf("only %d kills landed, want at least 10", kills)
	}

	byID := map[string]envMsg{}
	for _, m := range want {
		byID[m.id()] = m
	}
	count := map[string]int{}
	for _, m := range got {
		w, ok := byID[m.id()]
		switch {
		case !ok:
			t.Errorf("received %s, never spooled", m)
			continue
		case !bytes.Equal(w.Data, m.Data):
			t.Errorf("%s arrived changed%s", m.id(), firstDiff(w.Data, m.Data))
		case w.From != m.From || !slices.Equal(w.To, m.To):
			t.Errorf("%s: envelope from=<%s> to=%v, want from=<%s> to=%v", m.id(), m.From, m.To, w.From, w.To)
		}
		count[m.id()]++
	}
	dups := 0
	for id := range byID {
		switch n := count[id]; {
		case n == 0:
			t.Errorf("%s was lost", id)
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%d duplicates for %d kills", dups, kills)
	if dups > kills*crashWindow {
		t.Errorf("%d duplicates, more than the %d kills times the window %d: something was resent that had been settled", dups, kills, crashWindow)
	}
	// A kill inside an atomic rewrite (journal creation, compaction)
	// leaves its temporary file; the next run removes it.
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

// TestCrashSIGKILLOutcomes: like TestCrashSIGKILL, for the directory
// layout and for a server that defers (451) and refuses (550) some
// recipients, with kills right after the 250 to a partly deferred
// transaction and right after a 5xx, so that partial statuses in the
// journal (or the rewritten file of the directory layout) and the failed
// folder are written under fire. After the kills, clean runs go on until
// nothing is left. Then: every recipient that was not refused arrived at
// least once, intact; every refused one is in the failed folder exactly
// once and never arrived; no refused recipient was offered again, and no
// transaction repeated an accepted recipient, more often than kills × the
// window (crashWindow); nothing is pending.
func TestCrashSIGKILLOutcomes(t *testing.T) {
	partialPlans := func() []*killPoint {
		return []*killPoint{
			{kind: killAfterReply, n: 1, partial: true},
			{kind: killBeforeReply, n: 1, partial: true},
			{kind: killAfterRefusal, n: 1},
			{kind: killAfterReply, n: 2, partial: true, delay: 200 * time.Microsecond},
			{kind: killMidBody, n: 2, partial: true, bytes: 300},
			{kind: killAfterRefusal, n: 2, delay: time.Millisecond},
			{kind: killAfterReply, n: 3, partial: true, delay: time.Millisecond},
			{kind: killAfterMail, n: 4},
			{kind: killBeforeReply, n: 2, partial: true},
			{kind: killAfterReply, n: 1, partial: true, delay: 3 * time.Millisecond},
			{kind: killAfterRefusal, n: 1, delay: 300 * time.Microsecond},
			{kind: killBeforeReply, n: 6},
			// With a window the writer may be busy (reading the spool,
			// writing) when a reply comes, so settling can take more than
			// the few milliseconds above.
			{kind: killAfterReply, n: 2, partial: true, delay: 20 * time.Millisecond},
			{kind: killAfterReply, n: 1, partial: true, delay: 60 * time.Millisecond},
		}
	}
	cases := []crashCase{
		{name: "file/partial", n: 300, policy: markerPolicy, plans: partialPlans(), timers: 3,
			minKills: 10, minPartial: 4, minRefusal: 2},
		{name: "dir/partial", dir: true, n: 300, policy: markerPolicy, plans: partialPlans(), timers: 3,
			minKills: 10, minPartial: 4, minRefusal: 2},
		{name: "dir/accept-all", dir: true, n: 60, timers: 3, minKills: 8, plans: []*killPoint{
			{kind: killBeforeReply, n: 1},
			{kind: killAfterMail, n: 3},
			{kind: killMidBody, n: 5, bytes: 200},
			{kind: killAfterReply, n: 7},
			{kind: killBeforeReply, n: 10},
			{kind: killAfterReply, n: 2, delay: time.Millisecond},
			{kind: killMidBody, n: 1, bytes: 0},
			{kind: killAfterReply, n: 8, delay: 300 * time.Microsecond},
			{kind: killBeforeReply, n: 4},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runCrashCase(t, tc) })
	}
}
