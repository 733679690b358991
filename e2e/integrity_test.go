//go:build e2e

package e2e

// End-to-end tests of the spool's integrity on an admin's bad day: torn
// appends (by hand and by a real Exim killed mid-write), a full disk, a
// file system with 1-second timestamps, a spool on its own file system and
// FIFOs or symlinks planted where spool files are read. Each logs one
// "figures:" line (runs, kills, faults, messages, lost, duplicated) for the
// issue note.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"
)

// tornMsg makes a message whose every line names its recipient, so that
// text delivered to anybody else shows.
func tornMsg(who string, bodyLines, headerFill int) envMsg {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <s@sender.example>\nSubject: for %s\nMessage-ID: <%s@torn.example>\n", who, who)
	for i := range headerFill {
		fmt.Fprintf(&b, "X-Fill-%d: %s-header %s\n", i, who, strings.Repeat("h", 300))
	}
	b.WriteString("\n")
	for i := range bodyLines {
		fmt.Fprintf(&b, "%s-text line %d %s\n", who, i, strings.Repeat("t", 60))
	}
	return envMsg{From: "s@sender.example", To: []string{who + "@torn.example"}, Data: b.Bytes()}
}

// checkTorn checks what a flush delivered against want (each exactly
// once): no message holds an envelope line, and every message carries only
// its own recipient's text. It returns lost and duplicated counts.
func checkTorn(t *testing.T, got []envMsg, want []envMsg) (lost, dup int) {
	t.Helper()
	seen := map[string]int{}
	for _, m := range got {
		for _, l := range bytes.Split(m.Data, []byte("\n")) {
			if bytes.Contains(l, []byte("MAIL FROM:")) || bytes.HasPrefix(l, []byte("RCPT TO:")) || string(l) == "DATA" {
				t.Errorf("delivered to %v with an envelope line: %q", m.To, l)
			}
		}
		if len(m.To) != 1 {
			t.Errorf("delivered to %v: more than one recipient", m.To)
			continue
		}
		who := strings.TrimSuffix(m.To[0], "@torn.example")
		for _, other := range want {
			o := strings.TrimSuffix(other.To[0], "@torn.example")
			if o != who && (bytes.Contains(m.Data, []byte(o+"-text")) || bytes.Contains(m.Data, []byte(o+"-header"))) {
				t.Errorf("%s received %s's text", who, o)
			}
		}
		seen[m.To[0]]++
	}
	for _, w := range want {
		switch n := seen[w.To[0]]; {
		case n == 0:
			lost++
			t.Errorf("%s's message was not delivered", w.To[0])
		case n > 1:
			dup += n - 1
			t.Errorf("%s's message was delivered %d times", w.To[0], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d messages delivered, want %d", len(got), len(want))
	}
	return lost, dup
}

func integrityArgs(path, host string, rec *recorder, extra ...string) []string {
	args := []string{"flush", "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example", "--timeout", "20s"}
	return append(append(args, extra...), host)
}

// Torn appends written by hand: a message cut in its headers, in its
// body and inside its envelope lines, with the next delivery appended
// right after the fragment. The fragment is quarantined (exit 65), the
// complete messages around it arrive once, to their own recipients. The
// one exception is a cut at a line end of the body: bob's envelope then
// starts a line of the victim's body, as a quoted envelope would, so his
// message is quarantined with the fragment (held, not lost).
func TestIntegrityTornAppendByHand(t *testing.T) {
	victim := eximBSMTP([]envMsg{tornMsg("victim", 40, 3)})
	cut := func(sub string, plus int) int { return bytes.Index(victim, []byte(sub)) + plus }
	cuts := []struct {
		name string
		at   int
		held bool // bob's message is quarantined with the fragment
	}{
		{"in the headers", cut("X-Fill-1", 4), false},
		{"in the body", cut("victim-text line 20", 9), false},
		{"at a body line end", cut("victim-text line 21", 0), true},
		{"inside the MAIL line", 14, false},
		{"inside the RCPT line", cut("RCPT TO:<vic", 12), false},
		{"after the envelope lines", cut("DATA", 0), false},
	}
	var runs, msgs, lost, dup int
	for _, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			const host = "torn.example"
			path := filepath.Join(dir, host)
			before, after, last := tornMsg("alice", 30, 0), tornMsg("bob", 30, 0), tornMsg("carol", 5, 0)
			var file bytes.Buffer
			file.Write(eximBSMTP([]envMsg{before}))
			file.Write(victim[:c.at])
			file.Write(eximBSMTP([]envMsg{after, last}))
			if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			rec := newRecorder(t)
			_, stderr, code := runEtrnflush(t, integrityArgs(path, host, rec)...)
			runs++
			if code != 65 {
				t.Errorf("exit %d, want 65 (quarantined); stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "status=quarantined") || !strings.Contains(stderr, "BSMTP envelope") {
				t.Errorf("no quarantine line naming the envelope found; stderr:\n%s", stderr)
			}
			want := []envMsg{before, after, last}
			if c.held {
				want = []envMsg{before, last}
			}
			l, d := checkTorn(t, rec.messages(), want)
			msgs += 3
			lost += l
			dup += d
			q := privateFiles(t, dir, host)["quarantine"]
			if len(q) != 2 {
				t.Fatalf("quarantine holds %v, want the fragment and its reason", q)
			}
			for _, f := range q {
				if strings.HasSuffix(f, ".bsmtp") {
					b, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.HasPrefix(b, victim[:c.at]) {
						t.Errorf("quarantine copy does not begin with the fragment")
					}
					if c.held && !bytes.Contains(b, eximBSMTP([]envMsg{after})) {
						t.Errorf("bob's message is neither delivered nor in the quarantine copy")
					}
				}
			}
			// A second run finds nothing more to send.
			_, stderr, code = runEtrnflush(t, integrityArgs(path, host, rec)...)
			runs++
			if code != 0 || len(rec.messages()) != len(want) {
				t.Errorf("second run: exit %d, %d delivered in all; stderr:\n%s", code, len(rec.messages()), stderr)
			}
		})
	}
	t.Logf("figures: torn appends by hand: runs=%d kills=0 faults=%d (torn fragments) messages=%d lost=%d duplicated=%d", runs, len(cuts), msgs, lost, dup)
}

// needStrace returns strace, or skips (fails under CI, whose .ci/run
// installs it).
func needStrace(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("strace")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("strace not installed: .ci/run installs it")
		}
		t.Skip("strace not installed: apt-get install strace")
	}
	return p
}

// A real Exim whose delivery is killed mid-write: strace slows each write
// to the spool file (delay_exit), and the whole process group is killed
// once the file holds the wanted part of the message. The lock file Exim
// leaves is removed as lockfile_timeout would; Exim then appends the next
// message after the fragment, and redelivers the killed one after that.
func TestIntegrityTornAppendEximKilled(t *testing.T) {
	r := newRig(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: strace cannot trace the setuid Exim otherwise")
	}
	strace := needStrace(t)
	const host = "file.rt.example"
	mk := func(who string, body, fill int) envMsg {
		m := tornMsg(who, body, fill)
		m.To = []string{who + "@" + host}
		return m
	}
	envLen := func(m envMsg) int64 {
		return int64(len("MAIL FROM:<"+m.From+">\n") + len("RCPT TO:<"+m.To[0]+">\n") + len("DATA\n"))
	}
	cuts := []struct {
		name   string
		fill   int                       // header lines of 300 octets: 40 put the first 8 KiB write inside the headers
		octets func(victim envMsg) int64 // kill once the file holds this much of the victim
	}{
		{"inside the envelope lines", 0, func(v envMsg) int64 { return int64(len("MAIL FROM:<" + v.From + ">\n")) }},
		{"in the headers", 40, func(v envMsg) int64 { return envLen(v) + 1 }},
		{"in the body", 0, func(v envMsg) int64 { return envLen(v) + 2*8189 }},
	}
	var runs, kills, msgs, lost, dup int
	for _, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			w := r.newWriter(t)
			path := w.filePath(host)
			alice, victim, carol, dave := mk("alice", 20, 0), mk("victim", 2000, c.fill), mk("carol", 20, 0), mk("dave", 20, 0)
			if err := w.inject(alice.From, alice.To, alice.Data); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			base := fi.Size()
			want := base + c.octets(victim)
			args := []string{"-f", "-qq", "-P", path, "-e", "trace=write", "-e", "inject=write:delay_exit=300000",
				w.r.exim, "-C", filepath.Join(w.r.dir, "writer.conf"), "-DWRITER_DIR=" + w.dir}
			args = append(args, w.r.userDefines()...)
			args = append(args, "-odi", "-oi", "-f", victim.From)
			args = append(args, victim.To...)
			cmd := exec.Command(strace, args...)
			cmd.Stdin = bytes.NewReader(victim.Data)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				fi, err := os.Stat(path)
				if err == nil && fi.Size() >= want {
					break
				}
				if time.Now().After(deadline) {
					_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					_ = cmd.Wait()
					t.Fatalf("the file did not grow to %d octets in 60s\n%s%s", want, out.String(), eximLogs(w.dir))
				}
				time.Sleep(2 * time.Millisecond)
			}
			// Exim's delivery process is in a session of its own: kill
			// the writer itself first, then strace and the rest.
			writers := holders(t, path)
			if len(writers) == 0 {
				t.Fatal("no process holds the spool file open")
			}
			for _, pid := range writers {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // may be gone already
			_ = cmd.Wait()                                      // killed: its status says so
			kills++
			time.Sleep(100 * time.Millisecond) // let the kernel reap the group
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			frag := b[base:]
			if bytes.HasSuffix(frag, []byte("\n.\n")) || len(frag) == 0 {
				t.Fatalf("the kill came too late: %d octets of the victim, complete", len(frag))
			}
			t.Logf("killed Exim with %d octets of the victim's %d in the file", len(frag), len(eximBSMTP([]envMsg{victim})))
			if !clearStaleEximLock(t, path, "the killed delivery") {
				t.Errorf("the killed delivery left no lock file")
			}
			// The next delivery goes right after the fragment; then the
			// killed one is delivered again, whole.
			if err := w.inject(carol.From, carol.To, carol.Data); err != nil {
				t.Fatal(err)
			}
			w.flushQueue(t)
			if err := w.inject(dave.From, dave.To, dave.Data); err != nil {
				t.Fatal(err)
			}
			rec := newRecorder(t)
			_, stderr, code := runEtrnflush(t, integrityArgs(path, host, rec)...)
			runs++
			if code != 65 {
				t.Errorf("exit %d, want 65 (the fragment quarantined); stderr:\n%s", code, stderr)
			}
			l, d := checkTorn(t, rec.messages(), []envMsg{alice, carol, victim, dave})
			msgs += 4
			lost += l
			dup += d
			q := privateFiles(t, filepath.Dir(path), host)["quarantine"]
			if len(q) != 2 {
				t.Errorf("quarantine holds %v, want the fragment and its reason", q)
			}
			assertSpoolEmpty(t, path)
		})
	}
	t.Logf("figures: torn appends by a killed Exim: runs=%d kills=%d faults=%d (torn fragments) messages=%d lost=%d duplicated=%d", runs, kills, kills, msgs, lost, dup)
}

// assertSpoolEmpty checks that no mail is left to send: the spool file is
// gone or empty and no work file or journal is left.
func assertSpoolEmpty(t *testing.T, path string) {
	t.Helper()
	if fi, err := os.Stat(path); err == nil && fi.Size() != 0 {
		t.Errorf("spool file %s holds %d octets", path, fi.Size())
	}
	pf := privateFiles(t, filepath.Dir(path), filepath.Base(path))
	for _, kind := range []string{"work", "journal", "tmp"} {
		if len(pf[kind]) > 0 {
			t.Errorf("left behind (%s): %v", kind, pf[kind])
		}
	}
}

// mountTmpfs mounts a tmpfs of size at dir, or skips the test with one
// line saying why.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// leaveFree fills the file system of dir so that about free octets (whole
// pages) stay free: a gap file is written, the rest filled, the gap
// removed.
func leaveFree(t *testing.T, dir string, free int) {
	t.Helper()
	filler, gap := filepath.Join(dir, "filler"), filepath.Join(dir, "gap")
	for _, p := range []string{filler, gap} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if free > 0 {
		if err := os.WriteFile(gap, make([]byte, free), 0o600); err != nil {
			t.Fatalf("gap of %d: %v", free, err)
		}
	}
	f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gap); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// A full disk, run after run: a spool file of 20 messages on a 2 MB
// tmpfs, two of them deferred by the server every time, and the flush
// triggered with no room, one page, a little more than the reservation
// needs and so on. A run that cannot reserve room for its records sends
// nothing and exits 74 saying the disk is full; over all runs no message
// is sent more than one window more than once, none is lost, and the
// deferred ones stay in the spool as they were.
func TestIntegrityFullDisk(t *testing.T) {
	fs := filepath.Join(t.TempDir(), "fs")
	mountTmpfs(t, fs, "2m")
	const host = "torn.example"
	const window = 4
	path := filepath.Join(fs, host)
	var want []envMsg
	for i := range 20 {
		want = append(want, tornMsg(fmt.Sprintf("m%02d", i), 30, 0))
	}
	deferred := map[string]bool{"m03@torn.example": true, "m11@torn.example": true}
	if err := os.WriteFile(path, eximBSMTP(want), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := newPolicyRecorder(t, func(to string, _ int) *smtp.SMTPError {
		if deferred[to] {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	})
	args := integrityArgs(path, host, rec, "--max-inflight", fmt.Sprint(window))
	// Octets left free before each run.
	frees := []int{0, 0, 4096, 16 << 10, 0, 72 << 10, 0, 80 << 10, 96 << 10, 0}
	var faults int
	for i, free := range frees {
		leaveFree(t, fs, free)
		before := len(rec.messages())
		_, stderr, code := runEtrnflush(t, args...)
		sent := len(rec.messages()) - before
		t.Logf("run %d with %d octets free: exit %d, %d delivered", i+1, free, code, sent)
		switch code {
		case 74:
			faults++
			if !strings.Contains(stderr, "disk full") {
				t.Errorf("run %d: exit 74 without saying the disk is full; stderr:\n%s", i+1, stderr)
			}
		case 75:
		default:
			t.Errorf("run %d: exit %d; stderr:\n%s", i+1, code, stderr)
		}
	}
	if faults < 5 {
		t.Errorf("only %d runs met a full disk, want at least 5", faults)
	}
	leaveFree(t, fs, 1<<20)
	_, stderr, code := runEtrnflush(t, args...)
	if code != 75 {
		t.Errorf("last run with room: exit %d, want 75 (two deferred); stderr:\n%s", code, stderr)
	}
	got := rec.messages()
	count := map[string]int{}
	for _, m := range got {
		count[m.key()]++
	}
	lost, dup := 0, 0
	for _, m := range want {
		n := count[m.key()]
		switch {
		case deferred[m.To[0]]:
			if n != 0 {
				t.Errorf("%s was refused with 451 but delivered", m.To[0])
			}
		case n == 0:
			lost++
			t.Errorf("%s never delivered", m.To[0])
		case n > 1:
			dup += n - 1
		}
	}
	if dup > window {
		t.Errorf("%d duplicate deliveries over all runs, want at most one window (%d)", dup, window)
	}
	// The deferred messages are still in the spool, as they were.
	var left []envMsg
	for _, w := range privateFiles(t, fs, host)["work"] {
		left = append(left, parseBSMTPFile(t, w)...)
	}
	if _, err := os.Stat(path); err == nil {
		left = append(left, parseBSMTPFile(t, path)...)
	}
	var wantLeft []envMsg
	for _, m := range want {
		if deferred[m.To[0]] {
			wantLeft = append(wantLeft, m)
		}
	}
	sameMessages(t, "left in the spool", wantLeft, left)
	t.Logf("figures: full disk: runs=%d kills=0 faults=%d (runs exiting 74) messages=%d lost=%d duplicated=%d (window %d)",
		len(frees)+1, faults, len(want), lost, dup, window)
}

// holders lists the processes that have path open.
func holders(t *testing.T, path string) []int {
	t.Helper()
	fds, err := filepath.Glob("/proc/[0-9]*/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	var pids []int
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == path {
			var pid int
			if _, err := fmt.Sscanf(strings.TrimPrefix(fd, "/proc/"), "%d/", &pid); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// mountOldExt4 mounts a fresh ext4 image with 128-octet inodes (1-second
// timestamps, like ext3 and some NFS) at dir, or skips the test with one
// line saying why.
func mountOldExt4(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount an ext4 image with 1-second timestamps")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mkfs.ext4 not installed: .ci/run installs e2fsprogs")
		}
		t.Skip("mkfs.ext4 not installed: apt-get install e2fsprogs")
	}
	img := filepath.Join(t.TempDir(), "old.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-I", "128", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount an image here: %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(probe)
	if err != nil {
		t.Fatal(err)
	}
	if fi.ModTime().Nanosecond() != 0 {
		t.Fatalf("the image keeps nanoseconds (%v): not the file system this test needs", fi.ModTime())
	}
	if err := os.Remove(probe); err != nil {
		t.Fatal(err)
	}
}

// On a file system with 1-second timestamps, two messages for the same
// recipient refused within one second, one run after the other (the
// first run's rewrite keeps the date, so the second message may take the
// first one's id): both failed copies are kept. Five tries per layout.
func TestIntegrityOneSecondTimestamps(t *testing.T) {
	root := filepath.Join(t.TempDir(), "old")
	mountOldExt4(t, root)
	const host = "torn.example"
	const tries = 5
	runs, faults, lost := 0, 0, 0
	for _, layout := range []string{"bsmtp-dir", "bsmtp-file"} {
		for try := range tries {
			dir := filepath.Join(root, fmt.Sprintf("%s-%d", layout, try))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, host)
			first, second := tornMsg("first", 3, 0), tornMsg("second", 3, 0)
			first.To, second.To = []string{"x@torn.example"}, []string{"x@torn.example"}
			content := eximBSMTP([]envMsg{first, second})
			if layout == "bsmtp-dir" {
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(path, "q1"), content, 0o600); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			// 550 for the first offer (the first message), 451 for the
			// second, 550 again in the next run.
			rec := newPolicyRecorder(t, func(_ string, attempt int) *smtp.SMTPError {
				if attempt == 2 {
					return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
				}
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			})
			args := integrityArgs(path, host, rec, "--format", "bsmtp")
			start := time.Now()
			for _, want := range []int{75, 0} {
				_, stderr, code := runEtrnflush(t, args...)
				runs++
				if code != want {
					t.Errorf("%s try %d: exit %d, want %d; stderr:\n%s", layout, try, code, want, stderr)
				}
			}
			faults += 2 // two refusals
			if time.Since(start) < time.Second {
				t.Logf("%s try %d: both runs within %v", layout, try, time.Since(start).Round(time.Millisecond))
			}
			var copies []envMsg
			for _, f := range privateFiles(t, dir, host)["failed"] {
				if strings.HasSuffix(f, ".bsmtp") {
					copies = append(copies, parseBSMTPFile(t, f)...)
				}
			}
			if len(copies) != 2 {
				lost += 2 - len(copies)
				t.Errorf("%s try %d: %d failed copies, want 2 (%v)", layout, try, len(copies), privateFiles(t, dir, host)["failed"])
				continue
			}
			sameMessages(t, layout+" failed copies", []envMsg{first, second}, copies)
		}
	}
	t.Logf("figures: 1-second timestamps (ext4 -I 128): runs=%d kills=0 faults=%d (5xx refusals) messages=%d lost=%d duplicated=0", runs, faults, 2*2*tries, lost)
}

// A spool directory that is a file system of its own, holding a damaged
// entry: the quarantine folder beside it is on another, so the move is a
// copy. The damaged entry is quarantined, the others are delivered.
func TestIntegritySpoolOnItsOwnFileSystem(t *testing.T) {
	const host = "torn.example"
	var runs, msgs, lost int
	for _, layout := range []string{"bsmtp", "mailstore", "maildir"} {
		t.Run(layout, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, host)
			mountTmpfs(t, path, "4m")
			good := []envMsg{tornMsg("alice", 5, 0), tornMsg("bob", 5, 0)}
			write := func(name, content string) {
				t.Helper()
				p := filepath.Join(path, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			switch layout {
			case "bsmtp":
				write("q0bad", "MAIL FROM:<a@b>\nBOGUS\n.\n")
				for i, m := range good {
					write(fmt.Sprintf("q%d", i+1), string(eximBSMTP([]envMsg{m})))
				}
			case "mailstore":
				write("a0.env", "")
				write("a0.msg", "Subject: bad\n\nx\n")
				for i, m := range good {
					write(fmt.Sprintf("b%d.env", i), m.From+"\n"+m.To[0]+"\n")
					write(fmt.Sprintf("b%d.msg", i), string(m.Data))
				}
			case "maildir":
				write("tmp/.keep", "")
				write("cur/.keep", "")
				write("new/0bad", "Received: by x\n\nno envelope\n")
				for i, m := range good {
					write(fmt.Sprintf("new/%dok", i+1), "Return-path: <"+m.From+">\nEnvelope-to: "+m.To[0]+"\n"+string(m.Data))
				}
			}
			rec := newRecorder(t)
			_, stderr, code := runEtrnflush(t, integrityArgs(path, host, rec, "--format", layout)...)
			runs++
			msgs += len(good)
			if code != 65 {
				t.Errorf("exit %d, want 65; stderr:\n%s", code, stderr)
			}
			got := rec.messages()
			if len(got) != len(good) {
				lost += len(good) - len(got)
				t.Errorf("%d delivered, want %d; stderr:\n%s", len(got), len(good), stderr)
			}
			sameMessages(t, "delivered", good, got)
			q := privateFiles(t, dir, host)["quarantine"]
			if len(q) < 2 {
				t.Errorf("quarantine holds %v, want the damaged entry and its reason", q)
			}
		})
	}
	t.Logf("figures: spool on its own tmpfs: runs=%d kills=0 faults=%d (damaged entries, EXDEV moves) messages=%d lost=%d duplicated=0", runs, runs, msgs, lost)
}

// A FIFO and a symlink planted where each spool file is read: the run
// never hangs (runEtrnflush fails a run that takes longer than its
// timeout; a FIFO opened for reading would wait forever), says what it
// refused, and delivers the rest where there is a rest to deliver.
func TestIntegrityPlantedFIFOAndSymlink(t *testing.T) {
	const host = "torn.example"
	workName := func(n int) string { return fmt.Sprintf(".etrnflush-%s.%020d.work", host, n) }
	journalName := func(n int) string { return fmt.Sprintf(".etrnflush-%s.%020d.journal", host, n) }
	type setup struct {
		name   string
		format string
		// prepare writes the spool and returns the planted path and the
		// messages that must still be delivered.
		prepare  func(t *testing.T, dir, path string) (plant string, rest []envMsg)
		codes    []int  // acceptable exit codes
		mentions string // what stderr must say besides the kind of file
	}
	msg := func(who string) envMsg { return tornMsg(who, 3, 0) }
	writeBSMTP := func(t *testing.T, p string, ms ...envMsg) {
		t.Helper()
		if err := os.WriteFile(p, eximBSMTP(ms), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setups := []setup{
		{"journal", "bsmtp", func(t *testing.T, dir, path string) (string, []envMsg) {
			writeBSMTP(t, filepath.Join(dir, workName(2)), msg("skipped"))
			writeBSMTP(t, filepath.Join(dir, workName(1)), msg("alice"))
			writeBSMTP(t, path, msg("bob"))
			return filepath.Join(dir, journalName(2)), []envMsg{msg("alice"), msg("bob")}
		}, []int{0}, "skipped"},
		{"work file", "bsmtp", func(t *testing.T, dir, path string) (string, []envMsg) {
			writeBSMTP(t, filepath.Join(dir, workName(1)), msg("alice"))
			writeBSMTP(t, path, msg("bob"))
			return filepath.Join(dir, workName(2)), []envMsg{msg("alice"), msg("bob")}
		}, []int{0}, "skipped"},
		{"Exim's file", "bsmtp", func(t *testing.T, dir, path string) (string, []envMsg) {
			writeBSMTP(t, filepath.Join(dir, workName(1)), msg("alice"))
			return path, []envMsg{msg("alice")}
		}, []int{0}, "skipped"},
		{"Exim's lock file", "bsmtp", func(t *testing.T, dir, path string) (string, []envMsg) {
			writeBSMTP(t, filepath.Join(dir, workName(1)), msg("alice"))
			writeBSMTP(t, path, msg("bob"))
			return path + ".lock", []envMsg{msg("alice")}
		}, []int{74}, "lock file"},
		{"host lock", "bsmtp", func(t *testing.T, dir, path string) (string, []envMsg) {
			writeBSMTP(t, path, msg("bob"))
			return filepath.Join(dir, ".etrnflush-"+host+".lock"), nil
		}, []int{74}, "host lock"},
		{"request flag", "bsmtp", func(t *testing.T, dir, path string) (string, []envMsg) {
			writeBSMTP(t, path, msg("bob"))
			return filepath.Join(dir, ".etrnflush-"+host+".again"), []envMsg{msg("bob")}
		}, []int{0}, ""},
		{"BSMTP directory entry", "bsmtp", func(t *testing.T, dir, path string) (string, []envMsg) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
			writeBSMTP(t, filepath.Join(path, "q2"), msg("bob"))
			return filepath.Join(path, "q1"), []envMsg{msg("bob")}
		}, []int{0}, "skipped"},
		{"mailstore .msg", "mailstore", func(t *testing.T, dir, path string) (string, []envMsg) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
			b := msg("bob")
			for n, c := range map[string]string{"a.env": "s@sender.example\nx@torn.example\n", "b.env": b.From + "\n" + b.To[0] + "\n", "b.msg": string(b.Data)} {
				if err := os.WriteFile(filepath.Join(path, n), []byte(c), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return filepath.Join(path, "a.msg"), []envMsg{b}
		}, []int{65}, ".msg is not a regular file"},
		{"maildir entry", "maildir", func(t *testing.T, dir, path string) (string, []envMsg) {
			b := msg("bob")
			for _, sub := range []string{"new", "cur", "tmp"} {
				if err := os.MkdirAll(filepath.Join(path, sub), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(path, "new", "2"), []byte("Return-path: <"+b.From+">\nEnvelope-to: "+b.To[0]+"\n"+string(b.Data)), 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(path, "new", "1"), []envMsg{b}
		}, []int{0}, "skipped"},
	}
	var runs, faults, msgs, lost int
	// Lower case in the test names: the temporary directories carry them,
	// and stderr must not say "FIFO" just because a path does.
	for _, kind := range []string{"fifo", "symlink"} {
		for _, s := range setups {
			t.Run(kind+" as "+s.name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, host)
				plant, rest := s.prepare(t, dir, path)
				target := filepath.Join(t.TempDir(), "elsewhere")
				secret := eximBSMTP([]envMsg{msg("stolen")})
				if err := os.WriteFile(target, secret, 0o600); err != nil {
					t.Fatal(err)
				}
				if kind == "fifo" {
					if err := unix.Mkfifo(plant, 0o600); err != nil {
						t.Fatal(err)
					}
				} else if err := os.Symlink(target, plant); err != nil {
					t.Fatal(err)
				}
				faults++
				rec := newRecorder(t)
				start := time.Now()
				_, stderr, code := runEtrnflush(t, integrityArgs(path, host, rec, "--format", s.format)...)
				runs++
				if d := time.Since(start); d > 20*time.Second {
					t.Errorf("took %v", d)
				}
				ok := false
				for _, c := range s.codes {
					ok = ok || c == code
				}
				if !ok {
					t.Errorf("exit %d, want one of %v; stderr:\n%s", code, s.codes, stderr)
				}
				what := map[string]string{"fifo": "FIFO", "symlink": "symbolic link"}[kind]
				if s.name == "request flag" {
					what = "" // removed as a stale request: nothing to refuse
				}
				if s.name == "mailstore .msg" || (s.name == "Exim's lock file" && kind == "symlink") {
					what = "" // the reason names the file, not its kind
				}
				if !strings.Contains(stderr, what) || !strings.Contains(stderr, s.mentions) {
					t.Errorf("stderr does not say %q and %q:\n%s", what, s.mentions, stderr)
				}
				got := rec.messages()
				msgs += len(rest)
				if len(got) != len(rest) {
					lost += max(0, len(rest)-len(got))
				}
				sameMessages(t, "delivered", rest, got)
				if b, err := os.ReadFile(target); err != nil || !bytes.Equal(b, secret) {
					t.Errorf("the symlink's target was touched: %v", err)
				}
			})
		}
	}
	t.Logf("figures: planted FIFOs and symlinks: runs=%d kills=0 faults=%d (planted files) messages=%d lost=%d duplicated=0", runs, faults, msgs, lost)
}

// A kill inside the claim: etrnflush has taken Exim's lock file and waits
// for the fcntl lock (held here, as by an Exim transport writing), and is
// SIGKILLed. Exim's lock file stays: nothing removes it until it is older
// than lockfile_timeout (30 minutes by default), when Exim or etrnflush
// deletes it as stale. Until then the next run gives up after its wait
// and exits 75, and the mail stays in the file; nothing is lost.
func TestIntegrityKillInsideClaim(t *testing.T) {
	const host = "torn.example"
	dir := t.TempDir()
	path := filepath.Join(dir, host)
	want := []envMsg{tornMsg("alice", 5, 0), tornMsg("bob", 5, 0)}
	content := eximBSMTP(want)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}()
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t)
	args := integrityArgs(path, host, rec)
	cmd := exec.Command(etrnflushBin, args...)
	cmd.Env = childEnv()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Lstat(path + ".lock"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("etrnflush never took Exim's lock file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // killed
	lk.Type = unix.F_UNLCK
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path + ".lock"); err != nil {
		t.Fatalf("Exim's lock file is gone after the kill: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("the spool file changed under the kill: %v", err)
	}
	// The stale lock is still fresh: the next run waits for it (about
	// 30 s) and leaves everything where it is.
	start := time.Now()
	_, stderr, code := runEtrnflush(t, args...)
	if code != 75 || !strings.Contains(stderr, "lock") {
		t.Errorf("run with the lock file left: exit %d, want 75 naming the lock; stderr:\n%s", code, stderr)
	}
	t.Logf("the next run gave up after %v", time.Since(start).Round(time.Second))
	if len(rec.messages()) != 0 {
		t.Errorf("%d messages sent under a lock file", len(rec.messages()))
	}
	// After lockfile_timeout Exim (or etrnflush) deletes it as stale;
	// this test cannot wait 30 minutes, so it does what the rule does.
	if !clearStaleEximLock(t, path, "the kill inside the claim") {
		t.Fatal("no lock file to clear")
	}
	_, stderr, code = runEtrnflush(t, args...)
	if code != 0 {
		t.Errorf("run after the lock went stale: exit %d; stderr:\n%s", code, stderr)
	}
	got := rec.messages()
	sameMessages(t, "delivered", want, got)
	t.Logf("figures: kill inside the claim: runs=3 kills=1 faults=1 (lock file left) messages=%d lost=%d duplicated=%d",
		len(want), max(0, len(want)-len(got)), max(0, len(got)-len(want)))
}
