package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClaimLockFile(t *testing.T) {
	cases := []struct {
		name     string
		holdFor  time.Duration // the lock file is removed by its holder after this
		timeout  time.Duration
		stale    bool
		wantErr  error
		minDelay time.Duration
	}{
		{name: "held past timeout", holdFor: time.Hour, timeout: 300 * time.Millisecond, wantErr: ErrLocked},
		{name: "held briefly", holdFor: 400 * time.Millisecond, timeout: 5 * time.Second, minDelay: 350 * time.Millisecond},
		{name: "stale", holdFor: time.Hour, timeout: 5 * time.Second, stale: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fastLocks(t, c.timeout, time.Second)
			dir := t.TempDir()
			p := filepath.Join(dir, "h.example")
			ms := mkmsgs(2)
			writeFile(t, p, join(ms))
			lock := p + ".lock"
			writeFile(t, lock, "")
			if c.stale {
				old := nowFunc
				nowFunc = func() time.Time { return time.Now().Add(31 * time.Minute) }
				t.Cleanup(func() { nowFunc = old })
			}
			stop := make(chan struct{})
			released := make(chan struct{})
			go func() {
				defer close(released)
				select {
				case <-time.After(c.holdFor):
					_ = os.Remove(lock)
				case <-stop:
				}
			}()
			var ev events
			s := open(t, p, &ev, false)
			start := time.Now()
			m, err := s.Next()
			took := time.Since(start)
			close(stop)
			<-released
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("Next: %v, want %v", err, c.wantErr)
				}
				if _, err := os.Stat(p); err != nil {
					t.Fatalf("spool file moved without the lock: %v", err)
				}
				if _, err := os.Stat(lock); err != nil {
					t.Fatalf("someone else's lock file removed: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if took < c.minDelay {
				t.Fatalf("claim took %v, lock was held %v", took, c.minDelay)
			}
			if m.From != ms[0].from {
				t.Fatalf("first message from %q", m.From)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("spool file still there after claim: %v", err)
			}
			if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("lock file left: %v", err)
			}
			if c.stale && !strings.Contains(fmt.Sprint(ev.list), "stale lock") {
				t.Fatalf("no notice for stale lock: %v", ev.list)
			}
			works := glob(t, filepath.Join(dir, ".etrnflush-h.example.*.work"))
			if len(works) != 1 {
				t.Fatalf("work files: %v", works)
			}
			b, err := os.ReadFile(works[0])
			if err != nil || string(b) != join(ms) {
				t.Fatalf("work file content differs: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("spool file re-created")
			}
		})
	}
}

func TestClaimFcntl(t *testing.T) {
	cases := []struct {
		name    string
		holdFor time.Duration
		timeout time.Duration
		wantErr error
	}{
		{"held past timeout", time.Hour, 300 * time.Millisecond, ErrLocked},
		{"held briefly", 400 * time.Millisecond, 5 * time.Second, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fastLocks(t, time.Second, c.timeout)
			dir := t.TempDir()
			p := filepath.Join(dir, "h.example")
			writeFile(t, p, join(mkmsgs(1)))
			release := startHolder(t, p)
			timer := time.AfterFunc(c.holdFor, release)
			defer timer.Stop()
			s := open(t, p, nil, false)
			start := time.Now()
			_, err := s.Next()
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("Next: %v, want %v", err, c.wantErr)
				}
				if _, serr := os.Stat(p); serr != nil {
					t.Fatal("spool file moved without the fcntl lock")
				}
				if _, serr := os.Stat(p + ".lock"); !errors.Is(serr, os.ErrNotExist) {
					t.Fatal("our lock file left behind")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if time.Since(start) < 300*time.Millisecond {
					t.Fatal("claim did not wait for the fcntl holder")
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			release()
		})
	}
}

func TestClaimEmptyFileNotTouched(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	writeFile(t, p, "")
	s := open(t, p, nil, false)
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"h.example"}) {
		t.Fatalf("dir holds %v", got)
	}
}

// After the claim a delivery that had opened the file before the rename
// appends to the work file (Exim without use_lockfile); that mail must be
// sent, never deleted with the file.
func TestWorkFileGrowth(t *testing.T) {
	for _, when := range []string{"before end", "after end"} {
		t.Run(when, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "h.example")
			ms := mkmsgs(3)
			writeFile(t, p, join(ms[:2]))
			s := open(t, p, nil, false)
			var seen []string
			var held *Message
			for m := range messages(t, s) {
				seen = append(seen, m.From)
				if len(seen) == 1 && when == "before end" {
					appendWork(t, dir, ms[2].bsmtp())
				}
				if len(seen) == 2 && when == "after end" {
					held = m
					continue
				}
				if err := s.Settle(m, all(Sent)(m), ""); err != nil {
					t.Fatal(err)
				}
			}
			if held != nil {
				// Everything read and the last one in flight: the file grows
				// before the last Settle, which must not remove it.
				appendWork(t, dir, ms[2].bsmtp())
				if err := s.Settle(held, all(Sent)(held), ""); err != nil {
					t.Fatal(err)
				}
				m, err := s.Next()
				if err != nil {
					t.Fatalf("appended message not yielded: %v", err)
				}
				seen = append(seen, m.From)
				if err := s.Settle(m, all(Sent)(m), ""); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			want := []string{ms[0].from, ms[1].from, ms[2].from}
			if !reflect.DeepEqual(seen, want) {
				t.Fatalf("yielded %v, want %v", seen, want)
			}
			if got := names(t, dir); len(got) != 0 {
				t.Fatalf("left: %v", got)
			}
		})
	}
}

func appendWork(t *testing.T, dir, s string) {
	t.Helper()
	works := glob(t, filepath.Join(dir, ".etrnflush-*.work"))
	if len(works) != 1 {
		t.Fatalf("work files %v", works)
	}
	f, err := os.OpenFile(works[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// pattern gives message i's outcome: both sent, one kept, or one failed
// and one kept.
func pattern(i int) []Outcome {
	switch i % 3 {
	case 0:
		return []Outcome{Sent, Sent}
	case 1:
		return []Outcome{Sent, Keep}
	default:
		return []Outcome{Failed, Keep}
	}
}

// pendingAfter lists what must come back after the first k messages were
// settled with pattern.
func pendingAfter(ms []tmsg, k int) []got {
	var gs []got
	for i, m := range ms {
		to := m.to
		if i < k {
			to = nil
			for j, o := range pattern(i) {
				if o == Keep {
					to = append(to, m.to[j])
				}
			}
		}
		if len(to) > 0 {
			gs = append(gs, got{m.from, strings.Join(to, ","), m.body})
		}
	}
	return gs
}

func TestSettlePartialAndReopen(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	ms := mkmsgs(6)
	writeFile(t, p, join(ms))
	var ev events
	s := open(t, p, &ev, false)
	i := 0
	drainAll(t, s, func(*Message) []Outcome { i++; return pattern(i - 1) })
	want := pendingAfter(ms, len(ms))
	// The work file now holds exactly the kept recipients, in BSMTP.
	works := glob(t, filepath.Join(dir, ".etrnflush-h.example.*.work"))
	if len(works) != 1 {
		t.Fatalf("work files %v", works)
	}
	b, err := os.ReadFile(works[0])
	if err != nil {
		t.Fatal(err)
	}
	var kept []tmsg
	for _, g := range want {
		kept = append(kept, tmsg{g.from, strings.Split(g.to, ","), g.body})
	}
	if string(b) != join(kept) {
		t.Fatalf("work file:\n%s\nwant:\n%s", b, join(kept))
	}
	if j := glob(t, filepath.Join(dir, "*.journal")); len(j) != 0 {
		t.Fatalf("journal left: %v", j)
	}
	// Failed copies: one per failed message, for the failed recipient only.
	fd := failedDir(dir, "h.example")
	copies := glob(t, filepath.Join(fd, "*.bsmtp"))
	if len(copies) != 2 {
		t.Fatalf("failed copies %v", copies)
	}
	b, err = os.ReadFile(copies[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := (tmsg{ms[2].from, ms[2].to[:1], ms[2].body}).bsmtp(); string(b) != want {
		t.Fatalf("failed copy:\n%s\nwant\n%s", b, want)
	}
	why, err := os.ReadFile(strings.TrimSuffix(copies[0], ".bsmtp") + ".why")
	if err != nil || string(why) != "550 5.1.1 no such user  second line\n" {
		t.Fatalf("why %q %v", why, err)
	}
	if fi, err := os.Stat(fd); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("failed dir mode %v", err)
	}
	// A new run yields exactly the pending ones; sending them empties all.
	s = open(t, p, nil, false)
	gs := drainAll(t, s, all(Sent))
	if !reflect.DeepEqual(gs, want) {
		t.Fatalf("re-open yielded\n%v\nwant\n%v", gs, want)
	}
	left := names(t, dir)
	if len(left) != 1 || left[0] != ".etrnflush-h.example.failed" {
		t.Fatalf("left: %v", left)
	}
}

// TestCrashAfterEachSettle stops after k Settles (one more message in
// flight) without Close, as a SIGKILL would, and checks the next run.
func TestCrashAfterEachSettle(t *testing.T) {
	ms := mkmsgs(7)
	for k := 0; k <= len(ms); k++ {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "h.example")
			writeFile(t, p, join(ms))
			s := open(t, p, nil, false)
			var inflight []*Message
			for i := 0; i < k+1 && i < len(ms); i++ {
				m, err := s.Next()
				if err != nil {
					t.Fatal(err)
				}
				inflight = append(inflight, m)
			}
			for i := 0; i < k; i++ {
				if err := s.Settle(inflight[i], pattern(i), "550 no"); err != nil {
					t.Fatal(err)
				}
			}
			// Crash: no Close. A second crash in the next run before any
			// Settle must not change anything either.
			for run := 0; run < 2; run++ {
				s = open(t, p, nil, false)
				var gs []got
				var got1 []*Message
				for m := range messages(t, s) {
					gs = append(gs, toGot(t, m))
					got1 = append(got1, m)
				}
				if want := pendingAfter(ms, k); !reflect.DeepEqual(gs, want) {
					t.Fatalf("run %d yielded\n%v\nwant\n%v", run, gs, want)
				}
				if run == 1 {
					for _, m := range got1 {
						if err := s.Settle(m, all(Sent)(m), ""); err != nil {
							t.Fatal(err)
						}
					}
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, n := range names(t, dir) {
				if n != ".etrnflush-h.example.failed" {
					t.Fatalf("left: %v", names(t, dir))
				}
			}
		})
	}
}

// A crash between the compaction's rename and the journal's removal
// leaves a journal written for the old inode; it must be ignored.
func TestStaleJournalAfterCompaction(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	ms := mkmsgs(3)
	writeFile(t, p, join(ms))
	s := open(t, p, nil, false)
	var saved []byte
	i := 0
	for m := range messages(t, s) {
		if err := s.Settle(m, pattern(i+1), ""); err != nil { // sent+keep, failed+keep, sent+sent
			t.Fatal(err)
		}
		i++
		if i == 2 {
			j := glob(t, filepath.Join(dir, "*.journal"))
			if len(j) != 1 {
				t.Fatalf("journals %v", j)
			}
			var err error
			if saved, err = os.ReadFile(j[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	works := glob(t, filepath.Join(dir, "*.work"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Put the old journal back: the state right after the rename.
	writeFile(t, strings.TrimSuffix(works[0], ".work")+".journal", string(saved))
	var ev events
	s = open(t, p, &ev, false)
	gs := drainAll(t, s, all(Keep))
	want := []got{{ms[0].from, ms[0].to[1], ms[0].body}, {ms[1].from, ms[1].to[1], ms[1].body}}
	if !reflect.DeepEqual(gs, want) {
		t.Fatalf("yielded %v, want %v", gs, want)
	}
	if !strings.Contains(fmt.Sprint(ev.list), "stale journal") {
		t.Fatalf("no stale journal notice: %v", ev.list)
	}
	if j := glob(t, filepath.Join(dir, "*.journal")); len(j) != 0 {
		t.Fatalf("journal left: %v", j)
	}
}

func TestOrphanJournalRemoved(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	j := filepath.Join(dir, ".etrnflush-h.example.00000000000000000001.journal")
	writeFile(t, j, journalMagic+" 1 2\nrun\n0 s\n")
	var ev events
	s := open(t, p, &ev, false)
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(j); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("orphan journal kept")
	}
	if !reflect.DeepEqual(ev.kinds(), []string{"orphan"}) {
		t.Fatalf("events %v", ev.list)
	}
}

func TestDamageQuarantined(t *testing.T) {
	ms := mkmsgs(3)
	bad := "MAIL FROM:<x@y>\nXYZZY\nDATA\nbody\n.\n"
	cases := []struct {
		name    string
		content string
		want    []string // senders yielded
		qbytes  []string // quarantined regions
		incompl bool
	}{
		{"bad between good", ms[0].bsmtp() + bad + ms[1].bsmtp(), []string{ms[0].from, ms[1].from}, []string{bad}, false},
		{"incomplete tail", ms[0].bsmtp() + "MAIL FROM:<x@y>\nRCPT TO:<z@h>\nDATA\npartial\n", []string{ms[0].from},
			[]string{"MAIL FROM:<x@y>\nRCPT TO:<z@h>\nDATA\npartial\n"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "h.example")
			writeFile(t, p, c.content)
			// Dry run first: reported, nothing written.
			var dev events
			ds := open(t, p, &dev, true)
			var dry []string
			for _, g := range drainAll(t, ds, all(Sent)) {
				dry = append(dry, g.from)
			}
			if !reflect.DeepEqual(dry, c.want) || len(dev.list) != 1 || !strings.HasPrefix(dev.list[0].Reason, "would quarantine: ") {
				t.Fatalf("dry run: %v %v", dry, dev.list)
			}
			if got := names(t, dir); !reflect.DeepEqual(got, []string{"h.example"}) {
				t.Fatalf("dry run wrote: %v", got)
			}
			var ev events
			s := open(t, p, &ev, false)
			var seen []string
			for _, g := range drainAll(t, s, all(Sent)) {
				seen = append(seen, g.from)
			}
			if !reflect.DeepEqual(seen, c.want) {
				t.Fatalf("yielded %v", seen)
			}
			q := glob(t, filepath.Join(quarantineDir(dir, "h.example"), "*.bsmtp"))
			if len(q) != len(c.qbytes) {
				t.Fatalf("quarantine %v", q)
			}
			for i, f := range q {
				b, err := os.ReadFile(f)
				if err != nil || string(b) != c.qbytes[i] {
					t.Fatalf("quarantined %q %v", b, err)
				}
				why, err := os.ReadFile(strings.TrimSuffix(f, ".bsmtp") + ".why")
				if err != nil || len(why) == 0 || strings.Contains(string(why), "incomplete") != c.incompl {
					t.Fatalf("why %q %v", why, err)
				}
			}
			if k := ev.kinds(); k[len(k)-1] != "quarantine" {
				t.Fatalf("events %v", ev.list)
			}
			left := names(t, dir)
			if len(left) != 1 || !strings.HasSuffix(left[0], ".quarantine") {
				t.Fatalf("left %v", left)
			}
		})
	}
}

// An incomplete tail that is completed by a late delivery under the lock
// is parsed on, not quarantined.
func TestIncompleteTailThatGrows(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	ms := mkmsgs(2)
	full := ms[1].bsmtp()
	writeFile(t, p, ms[0].bsmtp()+full[:20])
	s := open(t, p, nil, false)
	m, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	appendWork(t, dir, full[20:])
	if err := s.Settle(m, all(Sent)(m), ""); err != nil {
		t.Fatal(err)
	}
	m, err = s.Next()
	if err != nil || m.From != ms[1].from {
		t.Fatalf("Next: %v %v", m, err)
	}
	if err := s.Settle(m, all(Sent)(m), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("left %v", got)
	}
}

// Older work files go first, then the claim; the real Exim file works.
func TestFixtureOrderAndContent(t *testing.T) {
	src, err := os.ReadFile("../testdata/exim/bsmtp/file/h1.bsmtp.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "h1.bsmtp.example")
	writeFile(t, p, string(src))
	old := mkmsgs(1)
	writeFile(t, filepath.Join(dir, workName(workPrefix("h1.bsmtp.example"), 5)), join(old))
	s := open(t, p, nil, false)
	if s.Layout() != "bsmtp-file" {
		t.Fatal(s.Layout())
	}
	gs := drainAll(t, s, all(Keep))
	if len(gs) != 20 || gs[0].from != old[0].from {
		t.Fatalf("got %d messages, first %q", len(gs), gs[0].from)
	}
	// Nothing settled: the claimed file is kept byte for byte.
	works := glob(t, filepath.Join(dir, "*.work"))
	if len(works) != 2 {
		t.Fatalf("works %v", works)
	}
	b, err := os.ReadFile(works[1])
	if err != nil || string(b) != string(src) {
		t.Fatalf("claimed work file differs: %v", err)
	}
}
