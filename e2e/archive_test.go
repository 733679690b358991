//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// archiveFile is one file of a host's archive folder, taken apart.
type archiveFile struct {
	path string
	note string // the NOOP line, without "NOOP etrnflush accepted " and its line end
	msg  envMsg
}

var archiveNote = regexp.MustCompile(`^host=(\S+) id=(\S+) time=(\S+) remote=(\S+) reply=("(?:[^"\\]|\\.)*")$`)

// readArchive reads every file of dir: each must be the NOOP line, one
// transaction as Exim writes BSMTP, and QUIT.
func readArchive(t *testing.T, dir string) []archiveFile {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []archiveFile
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !strings.HasSuffix(e.Name(), ".bsmtp") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("archive folder holds %s", e.Name())
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		first, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok || !bytes.HasPrefix(first, []byte("NOOP etrnflush accepted ")) {
			t.Fatalf("%s: first line %q", p, first)
		}
		body, ok := bytes.CutSuffix(rest, []byte("QUIT\n"))
		if !ok {
			t.Fatalf("%s does not end in QUIT", p)
		}
		msgs, err := parseBSMTP(body)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: %d messages: %v", p, len(msgs), err)
		}
		out = append(out, archiveFile{path: p, note: strings.TrimPrefix(string(first), "NOOP etrnflush accepted "), msg: msgs[0]})
	}
	return out
}

// sentReplies maps the id of each status=sent or partial line of a log to
// its reply field.
func sentReplies(log string) map[string]string {
	re := regexp.MustCompile(`id=(\S+) .*status=(?:sent|partial) .*reply=("(?:[^"\\]|\\.)*")$`)
	out := map[string]string{}
	for _, l := range strings.Split(log, "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}

// archiveRun has a real Exim write an appended BSMTP spool (three
// messages, one of them with a dot-stuffed line, one with a recipient
// the sink refuses) and flushes it into a real Exim sink with
// archive_dir set. It returns the messages as the spool held them, the
// archive folder and the flush's log. The archive root lies in a
// directory of the Exim user, which owns the spool: a flush started as
// root acts as that user, and so must the archive.
func archiveRun(t *testing.T, r *rig, s *sink) (held []envMsg, folder, log string) {
	t.Helper()
	w := r.newWriter(t)
	host := "file.rt.example"
	path := w.filePath(host)
	msgs := []struct {
		from string
		to   []string
		body string
	}{
		{"alice@sender.example", []string{"ann@" + host}, "Subject: one\nMessage-ID: <a1@test.example>\n\nfirst\n.dotted line\n..two dots\n"},
		{"bob@sender.example", []string{"bea@" + host, "reject550z@" + host}, "Subject: two\nMessage-ID: <a2@test.example>\n\nsecond\n"},
		{"carol@sender.example", []string{"cid@" + host, "dan@" + host}, "Subject: three\nMessage-ID: <a3@test.example>\n\nthird\r\nwith a CR\n"},
	}
	for _, m := range msgs {
		if err := w.inject(m.from, m.to, []byte(m.body)); err != nil {
			t.Fatal(err)
		}
	}
	held = spoolMessages(t, path)
	if len(held) != 3 {
		t.Fatalf("spool holds %d messages, want 3", len(held))
	}
	root := filepath.Join(r.mkdir(t, "arch"), "archive")
	cfg := filepath.Join(t.TempDir(), "etrnflush.toml")
	conf := fmt.Sprintf("log = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\narchive_dir = %q\n", root)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runEtrnflush(t, "-c", cfg, "-v", "--spool", path, "--to", s.addr(), "--tls", "none", "--helo", "relay.test.example", host)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s%s", code, stderr, eximLogs(s.dir))
	}
	if !strings.Contains(stderr, "archived=3 archive_failed=0") {
		t.Errorf("summary does not count 3 archived:\n%s", stderr)
	}
	return held, filepath.Join(root, host), stderr
}

// TestArchiveAccepted: with archive_dir set, the host's archive folder
// holds one file per message the real Exim sink accepted, for the
// recipients it accepted, with the data octet for octet as the spool held
// it, and the id and reply of that message's log line in its NOOP line.
// The files belong to the spool's owner, as the folders do.
func TestArchiveAccepted(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	held, folder, log := archiveRun(t, r, s)
	s.waitDelivered(t, 3)

	want := append([]envMsg(nil), held...)
	for i := range want {
		var to []string
		for _, a := range want[i].To {
			if !strings.HasPrefix(a, "reject550") {
				to = append(to, a)
			}
		}
		want[i].To = to
	}
	files := readArchive(t, folder)
	var got []envMsg
	replies := sentReplies(log)
	for _, f := range files {
		got = append(got, f.msg)
		m := archiveNote.FindStringSubmatch(f.note)
		if m == nil {
			t.Errorf("%s: note %q", f.path, f.note)
			continue
		}
		if m[1] != "file.rt.example" || m[4] != "127.0.0.1" {
			t.Errorf("%s: host or remote in %q", f.path, f.note)
		}
		if at, err := time.Parse(time.RFC3339, m[3]); err != nil || time.Since(at) > time.Hour {
			t.Errorf("%s: time %q: %v", f.path, m[3], err)
		}
		if rep, ok := replies[m[2]]; !ok || rep != m[5] || !strings.HasPrefix(rep, `"250 `) || !strings.Contains(rep, " OK id=") {
			t.Errorf("%s: reply %s, the log says %q for id %s", f.path, m[5], rep, m[2])
		}
		fi, err := os.Lstat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != r.uid || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: uid %d mode %v, want the spool owner's %d and 0600", f.path, st.Uid, fi.Mode().Perm(), r.uid)
		}
	}
	sameMessages(t, "archive", want, got)
	for _, d := range []string{folder, filepath.Dir(folder)} {
		fi, err := os.Lstat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != r.uid || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: uid %d mode %v, want %d and 0700", d, st.Uid, fi.Mode().Perm(), r.uid)
		}
	}
}

// TestEximArchive: an archive file is what "exim -bS" takes: a real Exim
// re-injects it (the NOOP line ignored) and delivers the message to the
// accepted recipients with the content unchanged.
func TestEximArchive(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	held, folder, _ := archiveRun(t, r, s)
	s.waitDelivered(t, 3)
	files := readArchive(t, folder)
	if len(files) != 3 {
		t.Fatalf("%d archive files, want 3", len(files))
	}
	var f archiveFile
	for _, x := range files {
		if x.msg.id() == "<a1@test.example>" {
			f = x
		}
	}
	if f.path == "" {
		t.Fatal("no archive file for the dot-stuffed message")
	}
	// A second Exim with the sink's configuration and a state of its own,
	// no daemon: "-bS" reads the file from standard input, "-odi"
	// delivers before it exits.
	dir := r.mkdir(t, "reinject")
	in, err := os.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := in.Close(); err != nil {
			t.Error(err)
		}
	}()
	args := append([]string{"-C", filepath.Join(r.dir, "sink.conf"), "-DSINK_DIR=" + dir}, r.userDefines()...)
	args = append(args, "-odi", "-bS")
	cmd := exec.Command(r.exim, args...)
	cmd.Stdin = in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Exim writes the summary of an error in the batch to standard
	// output, and exits 0 only when it took every message.
	out, err := cmd.Output()
	if err != nil || len(out) > 0 {
		t.Fatalf("exim -bS < %s: %v\n%s%s%s", f.path, err, out, stderr.Bytes(), eximLogs(dir))
	}
	var md []string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		md = maildirFiles(t, filepath.Join(dir, "maildir"))
		if len(md) > 0 && queuedMessages(t, filepath.Join(dir, "spool")) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("re-injected message not delivered after 60s%s", eximLogs(dir))
		}
	}
	if len(md) != 1 {
		t.Fatalf("maildir holds %d messages, want 1", len(md))
	}
	b, err := os.ReadFile(md[0])
	if err != nil {
		t.Fatal(err)
	}
	var orig envMsg
	for _, h := range held {
		if h.id() == "<a1@test.example>" {
			orig = h
		}
	}
	// Exim puts its Return-path:, Envelope-to:, Delivery-date: and its
	// own Received: on top; below them is the message as it was held.
	if !bytes.HasSuffix(b, orig.Data) {
		t.Errorf("re-injected message is not the held one:%s", firstDiff(orig.Data, b[max(0, len(b)-len(orig.Data)):]))
	}
	for _, want := range []string{"Return-path: <alice@sender.example>\n", "Envelope-to: ann@file.rt.example\n"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("re-injected message lacks %q:\n%s", want, b)
		}
	}
	logs := eximLogs(dir)
	for _, bad := range []string{"error", "rejected", "500 ", "501 ", "503 "} {
		if strings.Contains(strings.ToLower(logs), strings.ToLower(bad)) {
			t.Errorf("re-injecting Exim logged %q:%s", bad, logs)
		}
	}
}

// archiveSpool writes n one-recipient messages as an appended BSMTP
// spool for host in dir and returns its path.
func archiveSpool(t *testing.T, dir, host string, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "MAIL FROM:<s%d@sender.example>\nRCPT TO:<r%d@%s>\nDATA\nSubject: m%d\nMessage-ID: <m%d@test.example>\n\nbody %d\n..dotted\n.\n", i, i, host, i, i, i)
	}
	p := filepath.Join(dir, host)
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// archiveConfig writes a configuration with archive_dir root and extra
// lines.
func archiveConfig(t *testing.T, root, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "etrnflush.toml")
	conf := fmt.Sprintf("log = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\narchive_dir = %q\n%s", root, extra)
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestArchiveFailureDoesNotStopFlush: archive_dir on a tmpfs that is
// full. The flush delivers and removes every message as without an
// archive, exits 0, and says so in one line (and in the summary).
func TestArchiveFailureDoesNotStopFlush(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to mount a tmpfs")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	root := filepath.Join(mnt, "archive")
	if err := os.MkdirAll(filepath.Join(root, "full.example"), 0o700); err != nil {
		t.Fatal(err)
	}
	// Fill it: the archive's next write gets ENOSPC.
	fill, err := os.Create(filepath.Join(mnt, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := fill.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	if err := fill.Close(); err != nil {
		t.Fatal(err)
	}

	rec := newRecorder(t)
	host := "full.example"
	dir := t.TempDir()
	path := archiveSpool(t, dir, host, 3)
	cfg := archiveConfig(t, root, "")
	_, stderr, code := runEtrnflush(t, "-c", cfg, "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "relay.test.example", host)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	if got := len(rec.messages()); got != 3 {
		t.Errorf("server got %d messages, want 3", got)
	}
	assertNoMailLeft(t, path)
	if n := strings.Count(stderr, "event=archive-failed"); n != 1 || !strings.Contains(stderr, "disk full") {
		t.Errorf("%d archive-failed lines, want 1 saying disk full:\n%s", n, stderr)
	}
	if !strings.Contains(stderr, "sent=3 ") || !strings.Contains(stderr, "archived=0 archive_failed=3") {
		t.Errorf("summary:\n%s", stderr)
	}
	ents, err := os.ReadDir(filepath.Join(root, host))
	if err != nil || len(ents) != 0 {
		t.Errorf("archive folder holds %v (%v), want nothing, not even a temporary file", ents, err)
	}
}

// TestArchivePrune: at the end of a run the host's archive files older
// than archive_max_age go; younger ones, the new one and files that are
// not archive files stay.
func TestArchivePrune(t *testing.T) {
	rec := newRecorder(t)
	host := "prune.example"
	dir := t.TempDir()
	root := filepath.Join(t.TempDir(), "archive")
	folder := filepath.Join(root, host)
	if err := os.MkdirAll(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for name, age := range map[string]time.Duration{
		"old.bsmtp":   11 * 24 * time.Hour,
		"young.bsmtp": 9 * 24 * time.Hour,
		"README":      400 * 24 * time.Hour,
	} {
		p := filepath.Join(folder, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	path := archiveSpool(t, dir, host, 1)
	cfg := archiveConfig(t, root, "[host.\""+host+"\"]\narchive_max_age = \"10d\"\n")
	_, stderr, code := runEtrnflush(t, "-c", cfg, "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "relay.test.example", host)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "event=archive-pruned") || !strings.Contains(stderr, "removed=1") {
		t.Errorf("no prune line:\n%s", stderr)
	}
	var names []string
	for _, f := range []string{"old.bsmtp", "young.bsmtp", "README"} {
		if _, err := os.Lstat(filepath.Join(folder, f)); err == nil {
			names = append(names, f)
		}
	}
	if strings.Join(names, " ") != "young.bsmtp README" {
		t.Errorf("left %v, want young.bsmtp README", names)
	}
	if files, _ := filepath.Glob(filepath.Join(folder, "2*.bsmtp")); len(files) != 1 {
		t.Errorf("archive files of this run: %v", files)
	}
}

// TestKillDuringArchive: runs killed at the server's reply to a final
// dot, with an archive, until one finishes. No message is lost: each
// reached the server and is in the archive, at most one of them twice
// per kill (the one in flight), and the spool is empty.
func TestKillDuringArchive(t *testing.T) {
	rec := newRecorder(t)
	host := "killarch.example"
	dir := t.TempDir()
	path := archiveSpool(t, dir, host, 6)
	root := filepath.Join(t.TempDir(), "archive")
	cfg := archiveConfig(t, root, "")
	args := []string{"-c", cfg, "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "relay.test.example", "--max-inflight", "1", host}
	kills := 0
	for _, p := range []*killPoint{{kind: killAfterReply, n: 2}, {kind: killBeforeReply, n: 1}, {kind: killAfterReply, n: 1, delay: 5 * time.Millisecond}, nil} {
		code, killed, stderr := rec.runChild(t, p, args)
		if killed {
			kills++
			continue
		}
		if code != 0 {
			t.Fatalf("run (%v): exit %d; stderr:\n%s", p, code, stderr)
		}
	}
	assertNoMailLeft(t, path)
	seen := map[string]int{}
	for _, m := range rec.messages() {
		seen[m.id()]++
	}
	inArchive := map[string]int{}
	for _, f := range readArchive(t, filepath.Join(root, host)) {
		inArchive[f.msg.id()]++
	}
	dups := 0
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("<m%d@test.example>", i)
		if seen[id] == 0 {
			t.Errorf("%s never reached the server", id)
		}
		if inArchive[id] == 0 {
			t.Errorf("%s is not in the archive", id)
		}
		dups += inArchive[id] - 1
	}
	if dups > kills {
		t.Errorf("%d duplicates in the archive after %d kills", dups, kills)
	}
	t.Logf("%d kills, %d duplicates in the archive", kills, dups)
}

// TestArchiveLayouts: from every spool layout Exim writes (copies of real
// Exim spools), each archive file holds, for the recipients the server
// took, the message exactly as the server received it, in the spool's
// own line ends.
func TestArchiveLayouts(t *testing.T) {
	for _, tc := range []struct {
		name, fixture, host string
		crlf                bool
	}{
		{"file-crlf", "bsmtp/file-crlf/h1.bsmtp-crlf.example", "h1.bsmtp-crlf.example", true},
		{"dir", "bsmtp/dir/h1.bsmtp-dir.example", "h1.bsmtp-dir.example", false},
		{"mailstore", "mailstore/plain/h1.mailstore.example", "h1.mailstore.example", false},
		{"maildir", "maildir/batched/h1.maildir.example", "h1.maildir.example", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join("testdata/exim", tc.fixture)
			info, err := os.Stat(src)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			sp := filepath.Join(dir, tc.host)
			if info.IsDir() {
				copyTree(t, src, sp)
			} else {
				copyFile(t, src, sp)
			}
			rec := newRecorder(t)
			root := filepath.Join(t.TempDir(), "archive")
			cfg := archiveConfig(t, root, "")
			_, stderr, code := runEtrnflush(t, "-c", cfg, "--spool", sp, "--to", rec.addr, "--tls", "none", "--helo", "relay.test.example", tc.host)
			if code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr)
			}
			// What the server got, one entry per recipient (copies of
			// one message may have gone in one transaction), and what the
			// archive holds: the same multiset.
			sent := map[string]int{}
			for _, m := range rec.messages() {
				for _, to := range m.To {
					sent[to+"\x00"+m.From+"\x00"+string(m.Data)]++
				}
			}
			folder := filepath.Join(root, tc.host)
			ents, err := os.ReadDir(folder)
			if err != nil {
				t.Fatal(err)
			}
			archived := map[string]int{}
			for _, e := range ents {
				b, err := os.ReadFile(filepath.Join(folder, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if tc.crlf {
					if bytes.Count(b, []byte("\n")) != bytes.Count(b, []byte("\r\n")) {
						t.Errorf("%s: line ends are not all CRLF, as the spool's are", e.Name())
					}
					b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
				}
				_, rest, _ := bytes.Cut(b, []byte("\n"))
				body, ok := bytes.CutSuffix(rest, []byte("QUIT\n"))
				msgs, err := parseBSMTP(body)
				if !ok || err != nil || len(msgs) != 1 {
					t.Fatalf("%s: %v %d messages", e.Name(), err, len(msgs))
				}
				for _, to := range msgs[0].To {
					archived[to+"\x00"+msgs[0].From+"\x00"+string(msgs[0].Data)]++
				}
			}
			if len(sent) == 0 || !maps.Equal(sent, archived) {
				t.Errorf("archive differs from what the server got: %d distinct recipient copies sent, %d archived", len(sent), len(archived))
				for k, n := range sent {
					if archived[k] != n {
						to, rest, _ := strings.Cut(k, "\x00")
						t.Errorf("  %s (%d octets): sent %d, archived %d", to, len(rest), n, archived[k])
					}
				}
			}
		})
	}
}
