//go:build e2e

package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testSyslog is a syslog socket the test reads.
type testSyslog struct {
	path  string
	mu    sync.Mutex
	lines []string
}

func startSyslog(t *testing.T) *testSyslog {
	t.Helper()
	dir := t.TempDir()
	s := &testSyslog{path: filepath.Join(dir, "log")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.lines = append(s.lines, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s
}

// wait returns the lines read once one holds want, or after a while.
func (s *testSyslog) wait(want string) []string {
	for range 50 {
		s.mu.Lock()
		lines := append([]string(nil), s.lines...)
		s.mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, want) {
				return lines
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// runLikeExim runs the built binary as Exim runs smtp_etrn_command: an
// empty environment and standard input, output and error on /dev/null,
// as uid:gid with no supplementary groups (through setpriv(1); uid -1:
// as root). It runs in a private mount namespace whose /dev/log is the
// test's socket, so that what reaches syslog can be read (needs root and
// unshare(1)).
func runLikeExim(t *testing.T, sys *testSyslog, uid, gid int, args ...string) int {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root for a mount namespace with a test /dev/log")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		skipOrFail(t, "unshare(1) not found")
	}
	argv := []string{etrnflushBin}
	if uid >= 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			skipOrFail(t, "setpriv(1) not found")
		}
		argv = []string{setpriv, "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups", etrnflushBin}
	}
	script := `set -e
d=$1 sock=$2; shift 2
mkdir "$d/olddev"
mount --bind /dev "$d/olddev"
mount -t tmpfs tmpfs /dev
touch /dev/null
mount --bind "$d/olddev/null" /dev/null
ln -s "$sock" /dev/log
exec env -i "$@" </dev/null >/dev/null 2>&1`
	cmd := exec.Command("unshare", append(append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", t.TempDir(), sys.path}, argv...), args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.Exited() {
		if len(out) > 0 {
			t.Fatalf("the namespace set-up failed: %s", out)
		}
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("unshare: %v\n%s", err, out)
	}
	return 0
}

// TestNeverSilent: under Exim, standard error goes nowhere, so a fatal
// error (an unreadable config, a usage error) must reach syslog at
// mail.err, and a log file that cannot be opened must not stop the
// flush: the log goes to syslog with a warning that says why. Run as
// root and as the Exim user (as Exim runs smtp_etrn_command), with an
// empty environment and standard input, output and error on /dev/null.
func TestNeverSilent(t *testing.T) {
	type who struct {
		name     string
		uid, gid int
	}
	users := []who{{"root", -1, -1}}
	if os.Geteuid() == 0 {
		uid, gid := eximUIDs(t)
		users = append(users, who{"Exim user", uid, gid})
	}
	for _, u := range users {
		// dir is where the files of one case go: reachable by u, and
		// owned by u (the spool directory's owner).
		newDir := func(t *testing.T) string {
			base := t.TempDir()
			openToOthers(t, base)
			if u.uid >= 0 {
				if err := os.Chown(base, u.uid, u.gid); err != nil {
					t.Fatal(err)
				}
			}
			return base
		}
		syslogFor := func(t *testing.T) *testSyslog {
			sys := startSyslog(t)
			openToOthers(t, filepath.Dir(sys.path))
			if err := os.Chmod(sys.path, 0o666); err != nil {
				t.Fatal(err)
			}
			return sys
		}
		t.Run(u.name+"/unreadable config", func(t *testing.T) {
			sys := syslogFor(t)
			conf := filepath.Join(t.TempDir(), "nope.toml")
			if u.uid >= 0 {
				// There, but root's alone.
				openToOthers(t, filepath.Dir(conf))
				if err := os.WriteFile(conf, []byte("log = \"syslog\"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if code := runLikeExim(t, sys, u.uid, u.gid, "-c", conf, "--", "h.example"); code != exConfig {
				t.Errorf("exit %d, want %d", code, exConfig)
			}
			// <19> is mail.err (facility 2 * 8 + severity 3).
			lines := sys.wait(conf)
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "<19>") || !strings.Contains(lines[0], "etrnflush") || !strings.Contains(lines[0], conf) {
				t.Errorf("syslog got %q, want a mail.err line naming %s", lines, conf)
			}
		})
		t.Run(u.name+"/usage", func(t *testing.T) {
			sys := syslogFor(t)
			if code := runLikeExim(t, sys, u.uid, u.gid, "-c", baseConfig, "--", "../etc"); code != exUsage {
				t.Errorf("exit %d, want %d", code, exUsage)
			}
			lines := sys.wait("invalid host")
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "<19>") || !strings.Contains(lines[0], "invalid host") {
				t.Errorf("syslog got %q, want a mail.err line about the host", lines)
			}
		})
		t.Run(u.name+"/log file cannot be opened", func(t *testing.T) {
			sys := syslogFor(t)
			dir := newDir(t)
			path := filepath.Join(dir, "h.example")
			writeCrashFile(t, path, crashMessages(2, func(int) []string { return []string{"r@h.example"} }))
			badLog := filepath.Join(dir, "no-such-dir", "etrnflush.log")
			if u.uid >= 0 {
				if err := os.Chown(path, u.uid, u.gid); err != nil {
					t.Fatal(err)
				}
				// There, but root's alone: the Exim user cannot
				// write it.
				logDir := t.TempDir()
				openToOthers(t, logDir)
				badLog = filepath.Join(logDir, "etrnflush.log")
				if err := os.WriteFile(badLog, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			rec := newRecorder(t)
			conf := filepath.Join(t.TempDir(), "etrnflush.toml")
			openToOthers(t, filepath.Dir(conf))
			if err := os.WriteFile(conf, []byte("log = \""+badLog+"\"\nbounce = false\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			code := runLikeExim(t, sys, u.uid, u.gid, "-c", conf, "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example", "--", "h.example")
			if code != 0 {
				t.Errorf("exit %d, want 0", code)
			}
			if n := len(rec.messages()); n != 2 {
				t.Errorf("%d messages delivered, want 2", n)
			}
			lines := sys.wait("summary")
			joined := strings.Join(lines, "\n")
			for _, want := range []string{"event=log-fallback log=syslog", badLog, "status=sent", "event=summary host=h.example sent=2 "} {
				if !strings.Contains(joined, want) {
					t.Errorf("syslog lacks %q:\n%s", want, joined)
				}
			}
		})
	}
}

// TestDryRunCreatesNothing: a dry run writes no log file (nor lock file):
// with log = FILE it logs to standard error.
func TestDryRunCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h.example")
	writeCrashFile(t, path, crashMessages(2, func(int) []string { return []string{"r@h.example"} }))
	logFile := filepath.Join(t.TempDir(), "etrnflush.log")
	conf := filepath.Join(t.TempDir(), "etrnflush.toml")
	if err := os.WriteFile(conf, []byte("log = \""+logFile+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runEtrnflush(t, "-c", conf, "--dry-run", "--spool", path, "h.example"); code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if _, err := os.Lstat(logFile); !os.IsNotExist(err) {
		t.Errorf("the dry run created the log file (%v)", err)
	}
	after, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("the dry run changed the spool directory: %d entries, then %d", len(before), len(after))
	}
}

// TestLogFileSymlink: the log file is never opened through a symbolic
// link (its directory may be writable by a less trusted user): the flush
// goes on, logging elsewhere, and the link's target is neither written
// nor truncated nor, when it does not exist, created.
func TestLogFileSymlink(t *testing.T) {
	for _, dangling := range []bool{false, true} {
		t.Run(map[bool]string{false: "to a file", true: "dangling"}[dangling], func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "victim")
			if !dangling {
				if err := os.WriteFile(target, []byte("keep\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			link := filepath.Join(dir, "etrnflush.log")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			before := treeSnapshot(t, dir)
			path := filepath.Join(t.TempDir(), "h.example")
			writeCrashFile(t, path, crashMessages(1, func(int) []string { return []string{"r@h.example"} }))
			rec := newRecorder(t)
			_, stderr, code := runEtrnflush(t, "--log", link, "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example", "h.example")
			if code != 0 || len(rec.messages()) != 1 {
				t.Fatalf("exit %d, %d delivered\n%s", code, len(rec.messages()), stderr)
			}
			if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
				t.Errorf("the link or its target changed:\n%s", d)
			}
		})
	}
}
