//go:build e2e

package e2e

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"etrnflush/internal/fakesmtp"
)

// waitCount waits until the file at path holds want n times and returns
// its text.
func waitCount(t *testing.T, path, want string, n int) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Count(string(b), want) >= n {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not say %q %d times after 60s:\n%s", path, want, n, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eximOwnedDir makes dir owned by uid:gid, mode 0750.
func eximOwnedDir(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// openToOthers lets another user reach what is below base.
func openToOthers(t *testing.T, base string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeRootThenEximUser: serve under inetd, started as root (as
// inetd often does) and as the Exim user, takes turns on one spool, in
// both orders, through ETRN (a detached flush) and through ATRN (the
// delivery down the client's connection, in serve itself). The first
// run leaves a deferred message (journal, work file) and a refused one
// (failed folder); the second still delivers the mail appended
// meanwhile, and nothing under the spool directory (state_dir included)
// or the log directory belongs to root afterwards.
func TestServeRootThenEximUser(t *testing.T) {
	uid, gid := eximUIDs(t)
	policy := func(to string, _ int) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(to, "later@"):
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		case strings.HasPrefix(to, "gone@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	root := &syscall.Credential{Uid: 0, Gid: 0}
	exim := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	hash, err := bcrypt.GenerateFromPassword([]byte("pw of carol"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ via, order string }{
		{"ETRN", "root first"}, {"ETRN", "Exim user first"}, {"ATRN", "root first"}, {"ATRN", "Exim user first"},
	} {
		t.Run(c.via+"/"+c.order, func(t *testing.T) {
			first, second := root, exim
			if c.order != "root first" {
				first, second = second, first
			}
			base := t.TempDir()
			openToOthers(t, base)
			spoolDir := filepath.Join(base, "spool")
			eximOwnedDir(t, spoolDir, uid, gid)
			logDir := filepath.Join(base, "log")
			eximOwnedDir(t, logDir, uid, gid)
			logFile := filepath.Join(logDir, "etrnflush.log")
			rec := newPolicyRecorder(t, policy)
			conf := filepath.Join(base, "etrnflush.toml")
			text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"
tls = "none"
bounce = false
max_age = "3650d"

[serve]
etrn_clients = ["127.0.0.1"]
allow_plaintext_auth = true

[host."h.example"]
route = %q

[user.carol]
password_hash = %q
hosts = ["h.example"]
`, spoolDir, logFile, rec.addr, hash)
			// It holds a hash: the Exim user's, and private.
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(conf, uid, gid); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(spoolDir, "h.example")
			msg := func(to, subject string) envMsg {
				return envMsg{From: "s@sender.example", To: []string{to}, Data: []byte("Subject: " + subject + "\n\nbody\n")}
			}
			appendSpool := func(msgs ...envMsg) { appendOwnedSpool(t, path, uid, gid, msgs...) }
			var atrnGot []string // what the ATRN customer accepted
			etrn := func(cred *syscall.Credential, run int) string {
				t.Helper()
				p := startServeAs(t, cred, []string{"-c", conf, "serve"})
				p.cmd(t, "", 220, "provider.example")
				p.cmd(t, "EHLO customer.example", 250, c.via)
				if c.via == "ETRN" {
					p.cmd(t, "ETRN h.example", 253, "pending messages for node h.example started")
					p.cmd(t, "QUIT", 221, "")
				} else {
					p.cmd(t, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00carol\x00pw of carol")), 235, "")
					p.cmd(t, "ATRN h.example", 250, "")
					// Turned around: the test's end is now the
					// server, with the same policy as the recorder.
					cust := &fakesmtp.Server{Domain: "customer.example", Timeout: 30 * time.Second,
						OnRcpt: func(_ *fakesmtp.Txn, to string, attempt int) error {
							if e := policy(to, attempt); e != nil {
								return e
							}
							return nil
						}}
					go func() { _ = cust.Serve(fakesmtp.OneConn(p.c)) }()
					defer func() {
						if err := cust.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
							t.Error(err)
						}
						for _, m := range cust.Messages() {
							atrnGot = append(atrnGot, strings.Join(m.To, ","))
						}
					}()
				}
				if code := p.wait(t); code != 0 {
					t.Errorf("run %d: serve exited %d; stderr %q", run, code, p.stderr.String())
				}
				logText := waitCount(t, logFile, "event=summary host=h.example", run)
				for _, d := range []string{spoolDir, logDir} {
					if bad := rootOwned(t, d); len(bad) > 0 {
						t.Errorf("after run %d these belong to root: %q", run, bad)
					}
				}
				return logText
			}
			appendSpool(msg("one@h.example", "one"), msg("later@h.example", "later"), msg("gone@h.example", "gone"))
			logText := etrn(first, 1)
			if !strings.Contains(logText, "event=summary host=h.example sent=1 deferred=1 failed=1") {
				t.Errorf("the first flush did not send one, defer one and fail one:\n%s", logText)
			}
			if first == root && !strings.Contains(logText, fmt.Sprintf("event=owner-switch user=%s uid=%d gid=%d dir=%q", userName(t, uid), uid, gid, spoolDir)) {
				t.Errorf("the root serve did not log its switch to the spool's owner:\n%s", logText)
			}
			appendSpool(msg("two@h.example", "two"))
			logText = etrn(second, 2)
			got := atrnGot
			if c.via == "ETRN" {
				for _, m := range rec.messages() {
					got = append(got, strings.Join(m.To, ","))
				}
			}
			if strings.Join(got, " ") != "one@h.example two@h.example" {
				t.Errorf("delivered %q, want one and two, once each\nlog:\n%s", got, logText)
			}
			if n := strings.Count(logText, "status=failed"); n != 1 {
				t.Errorf("%d failed lines, want 1 (the refused message is not offered again):\n%s", n, logText)
			}
		})
	}
}

// TestServeStateDirSymlinks: serve started as root (with a spool
// directory of root's, so that nothing is dropped, and with one of the
// Exim user's) never follows a link planted for state_dir or for a file
// in it. state_dir itself a link: serve refuses before the first reply
// (421, exit 77, one error line naming state_dir). A file in it a link:
// the rate file and the sweep mark are replaced (only the link goes), a
// linked lock answers 458. The link's target directory keeps every
// entry's name, size, content and time. A state_dir that is root's while
// serve runs as the Exim user is refused as the link is.
func TestServeStateDirSymlinks(t *testing.T) {
	uid, gid := eximUIDs(t)
	setup := func(t *testing.T, eximSpool bool) (stateDir, victim, conf, logFile string) {
		base := t.TempDir()
		openToOthers(t, base)
		spoolDir := filepath.Join(base, "spool")
		if err := os.Mkdir(spoolDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if eximSpool {
			if err := os.Chown(spoolDir, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		victim = filepath.Join(base, "victim")
		if err := os.Mkdir(victim, 0o700); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
		for _, n := range []string{"lock", "swept", "etrn-127.0.0.1", "keep"} {
			p := filepath.Join(victim, n)
			if err := os.WriteFile(p, []byte("precious "+n+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
		stateDir = filepath.Join(spoolDir, ".etrnflush-serve")
		logDir := filepath.Join(base, "log")
		if err := os.Mkdir(logDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if eximSpool {
			if err := os.Chown(logDir, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		logFile = filepath.Join(logDir, "etrnflush.log")
		conf = filepath.Join(base, "etrnflush.toml")
		text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"

[serve]
etrn_clients = ["127.0.0.1"]
etrn_window = "1s"

[host."quiet.example"]
`, spoolDir, logFile)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return stateDir, victim, conf, logFile
	}
	for _, eximSpool := range []bool{false, true} {
		name := "root's spool"
		if eximSpool {
			name = "the Exim user's spool"
		}
		t.Run("state_dir is a link/"+name, func(t *testing.T) {
			stateDir, victim, conf, logFile := setup(t, eximSpool)
			if err := os.Symlink(victim, stateDir); err != nil {
				t.Fatal(err)
			}
			if eximSpool {
				if err := os.Lchown(stateDir, uid, gid); err != nil {
					t.Fatal(err)
				}
			}
			before := treeSnapshot(t, victim)
			p := startServe(t, conf)
			p.cmd(t, "", 421, "Service not available")
			if code := p.wait(t); code != exNoPerm {
				t.Errorf("exit %d, want %d", code, exNoPerm)
			}
			line := oneErrorLine(t, p.stderr.String())
			if !strings.Contains(line, "state_dir "+stateDir) || !strings.Contains(line, "symbolic link") {
				t.Errorf("error line %q does not say that state_dir is a link", line)
			}
			if d := diffSnapshots(before, treeSnapshot(t, victim)); d != "" {
				t.Errorf("the link's target changed:\n%s", d)
			}
			if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "error: event=serve-error error=\"state_dir "+stateDir+" is a symbolic link") {
				t.Errorf("the log does not say why: %q %v", b, err)
			}
		})
		if eximSpool {
			t.Run("state_dir is root's/"+name, func(t *testing.T) {
				stateDir, _, conf, logFile := setup(t, eximSpool)
				if err := os.Mkdir(stateDir, 0o700); err != nil {
					t.Fatal(err)
				}
				p := startServe(t, conf)
				p.cmd(t, "", 421, "Service not available")
				if code := p.wait(t); code != exNoPerm {
					t.Errorf("exit %d, want %d", code, exNoPerm)
				}
				line := oneErrorLine(t, p.stderr.String())
				if !strings.Contains(line, "state_dir "+stateDir+" belongs to uid 0") || !strings.Contains(line, "remove it") {
					t.Errorf("error line %q does not say whose state_dir is and what to do", line)
				}
				if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "belongs to uid 0") {
					t.Errorf("the log does not say why: %q %v", b, err)
				}
			})
		}
		for _, file := range []string{"lock", "etrn-127.0.0.1", "swept"} {
			t.Run(file+" is a link/"+name, func(t *testing.T) {
				stateDir, victim, conf, logFile := setup(t, eximSpool)
				if err := os.Mkdir(stateDir, 0o700); err != nil {
					t.Fatal(err)
				}
				link := filepath.Join(stateDir, file)
				if err := os.Symlink(filepath.Join(victim, file), link); err != nil {
					t.Fatal(err)
				}
				if eximSpool {
					for _, p := range []string{stateDir, link} {
						if err := os.Lchown(p, uid, gid); err != nil {
							t.Fatal(err)
						}
					}
				}
				before := treeSnapshot(t, victim)
				p := startServe(t, conf)
				p.cmd(t, "", 220, "provider.example")
				if file == "lock" {
					p.cmd(t, "ETRN quiet.example", 458, "Unable to queue")
				} else {
					p.cmd(t, "ETRN quiet.example", 251, "no messages waiting")
				}
				p.cmd(t, "QUIT", 221, "")
				if code := p.wait(t); code != 0 {
					t.Errorf("exit %d; stderr %q", code, p.stderr.String())
				}
				if d := diffSnapshots(before, treeSnapshot(t, victim)); d != "" {
					t.Errorf("the link's target changed:\n%s", d)
				}
				if file == "lock" {
					if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "error=\"rate state: state_dir lock") {
						t.Errorf("the 458 is not logged with its cause: %q %v", b, err)
					}
				} else if fi, err := os.Lstat(link); err != nil || !fi.Mode().IsRegular() {
					t.Errorf("%s was not replaced by a file of serve's own: %v", link, err)
				}
			})
		}
	}
}

// TestServeLogFileSymlink: serve, as a flush does, never opens its log
// file through a link; it serves on, logging to syslog (or standard error
// when there is no syslog) with a warning, and the target is neither
// written nor truncated nor, when it does not exist, created.
func TestServeLogFileSymlink(t *testing.T) {
	for _, dangling := range []bool{false, true} {
		t.Run(map[bool]string{false: "to a file", true: "dangling"}[dangling], func(t *testing.T) {
			dir := t.TempDir()
			logDir := filepath.Join(dir, "log")
			if err := os.Mkdir(logDir, 0o700); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(logDir, "victim")
			if !dangling {
				if err := os.WriteFile(target, []byte("keep\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			link := filepath.Join(logDir, "etrnflush.log")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			before := treeSnapshot(t, logDir)
			spoolDir := filepath.Join(dir, "spool")
			if err := os.Mkdir(spoolDir, 0o700); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(dir, "etrnflush.toml")
			if err := os.WriteFile(conf, fmt.Appendf(nil, "spool_dir = %q\nlog = %q\nhelo = \"provider.example\"\n", spoolDir, link), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startServe(t, conf)
			p.cmd(t, "", 220, "provider.example")
			p.cmd(t, "QUIT", 221, "")
			if code := p.wait(t); code != 0 {
				t.Errorf("exit %d; stderr %q", code, p.stderr.String())
			}
			if d := diffSnapshots(before, treeSnapshot(t, logDir)); d != "" {
				t.Errorf("the link or its target changed:\n%s", d)
			}
			if _, err := os.Stat("/dev/log"); err != nil && !strings.Contains(p.stderr.String(), "event=log-fallback log=stderr") {
				// No syslog here: the warning is on standard error.
				t.Errorf("no warning about the log file: %q", p.stderr.String())
			}
		})
	}
}

// TestCLIServeETRNUserHostAnonymous: through the real binary, a client
// outside etrn_clients that ETRNs a host of a [user.NAME] (by name,
// #queue or @domain) gets 459; no flush starts and the spool directory
// stays byte for byte as it was.
func TestCLIServeETRNUserHostAnonymous(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	holdBSMTP(t, filepath.Join(spoolDir, "odmr.example"), "odmr.example", 2)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw of alice"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t)
	logFile := filepath.Join(dir, "etrnflush.log")
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"
tls = "none"

[serve]
etrn_clients = ["192.0.2.0/24"]
state_dir = %q

[host."odmr.example"]
route = %q

[user.alice]
password_hash = %q
hosts = ["odmr.example"]
`, spoolDir, logFile, filepath.Join(dir, "state"), rec.addr, hash)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	before := treeSnapshot(t, spoolDir)
	p := startServe(t, conf)
	p.cmd(t, "", 220, "provider.example")
	p.cmd(t, "EHLO client.example", 250, "ETRN")
	for _, arg := range []string{"odmr.example", "ODMR.EXAMPLE", "#odmr.example", "@odmr.example"} {
		p.cmd(t, "ETRN "+arg, 459, "not allowed")
	}
	p.cmd(t, "QUIT", 221, "")
	if code := p.wait(t); code != 0 {
		t.Errorf("serve exited %d; stderr %q", code, p.stderr.String())
	}
	logText, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logText), "is an ODMR host of [user.alice]"); n != 4 {
		t.Errorf("%d refusals naming [user.alice] logged, want 4:\n%s", n, logText)
	}
	if strings.Contains(string(logText), "flush-started") {
		t.Errorf("a flush was started:\n%s", logText)
	}
	// A flush started anyway would have sent by now or soon: give it a
	// moment before looking at what the recorder and the spool hold.
	time.Sleep(500 * time.Millisecond)
	if n := len(rec.messages()); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
	if d := diffSnapshots(before, treeSnapshot(t, spoolDir)); d != "" {
		t.Errorf("the spool directory changed:\n%s", d)
	}
}

// TestReleaseAsRootKeepsOwner: the postmaster runs release as root; the
// copy put back into the spool (and whatever release creates on the
// way) belongs to the spool's owner, so that the next flush, run by
// Exim as its own user, can send it and remove it.
func TestReleaseAsRootKeepsOwner(t *testing.T) {
	uid, gid := eximUIDs(t)
	rx, addr := startRefusingServer(t)
	rx.refuse.Store(true)
	base := t.TempDir()
	openToOthers(t, base)
	spoolDir := filepath.Join(base, "spool")
	eximOwnedDir(t, spoolDir, uid, gid)
	const host = "h.example"
	sp := filepath.Join(spoolDir, host)
	eximOwnedDir(t, sp, uid, gid)
	msg := "MAIL FROM:<a@x.example>\nRCPT TO:<ok@h.example>\nRCPT TO:<reject1@h.example>\nDATA\nSubject: t\n\nbody\n.\n"
	q := filepath.Join(sp, "q1aaaaa-1")
	if err := os.WriteFile(q, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(q, uid, gid); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(base, "etrnflush.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "log = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\nspool_dir = %q\n[host.%q]\nformat = \"bsmtp\"\n", spoolDir, host), 0o644); err != nil {
		t.Fatal(err)
	}
	flushArgs := []string{"-c", conf, "--to", addr, "--tls", "none", "--helo", "tx.example", host}
	if out, code := runAs(t, uid, gid, flushArgs...); code != exOK {
		t.Fatalf("first flush: exit %d\n%s", code, out)
	}
	id := failedJSON(t, conf, "failed", host).Copies[0].ID
	out, _, code := runEtrnflush(t, "-c", conf, "release", host, id)
	if code != exOK {
		t.Fatalf("release as root: exit %d\n%s", code, out)
	}
	if bad := rootOwned(t, spoolDir); len(bad) > 0 {
		t.Errorf("after release as root these belong to root: %q", bad)
	}
	rx.refuse.Store(false)
	if out, code := runAs(t, uid, gid, flushArgs...); code != exOK {
		t.Errorf("flush after the release: exit %d\n%s", code, out)
	}
	if got := strings.Join(rx.taken(), " "); got != "a@x.example>ok@h.example a@x.example>reject1@h.example" {
		t.Errorf("delivered %q", got)
	}
	if ents, err := os.ReadDir(sp); err != nil || len(ents) != 0 {
		t.Errorf("the spool still holds %v (%v)", ents, err)
	}
}

// TestRootNoSpoolDirNoLogFile: run as root before the spool directory
// exists (a fresh install, a link-up script), flush and serve have no
// owner to become; they must not create the log file as root, or every
// later run as the Exim user would lose its log. They log to syslog (or
// standard error) instead; once the directory exists (here root's), the
// file is created.
func TestRootNoSpoolDirNoLogFile(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root")
	}
	base := t.TempDir()
	spoolDir := filepath.Join(base, "spool")
	logFile := filepath.Join(base, "etrnflush.log")
	conf := filepath.Join(base, "etrnflush.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "spool_dir = %q\nlog = %q\nhelo = \"provider.example\"\n", spoolDir, logFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runEtrnflush(t, "-c", conf, "h.example"); code != exOK {
		t.Errorf("flush: exit %d\n%s", code, stderr)
	}
	p := startServe(t, conf)
	p.cmd(t, "", 220, "provider.example")
	p.cmd(t, "QUIT", 221, "")
	if code := p.wait(t); code != 0 {
		t.Errorf("serve: exit %d; stderr %q", code, p.stderr.String())
	}
	if _, err := os.Lstat(logFile); !os.IsNotExist(err) {
		t.Errorf("the log file was created as root before the spool directory existed (%v)", err)
	}
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runEtrnflush(t, "-c", conf, "h.example"); code != exOK {
		t.Errorf("flush: exit %d\n%s", code, stderr)
	}
	if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "host=h.example") {
		t.Errorf("with a spool directory of root's the log file is not used: %q %v", b, err)
	}
}

// TestSpoolDirLinkRefused: a spool directory that is a link the Exim
// user planted (it may own the directory above) is not followed by a
// flush or serve started as root: exit 77 with the reason, nothing sent,
// nothing created where it points.
func TestSpoolDirLinkRefused(t *testing.T) {
	uid, gid := eximUIDs(t)
	base := t.TempDir()
	openToOthers(t, base)
	victim := filepath.Join(base, "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	writeCrashFile(t, filepath.Join(victim, "h.example"), crashMessages(1, func(int) []string { return []string{"r@h.example"} }))
	spoolDir := filepath.Join(base, "spool")
	if err := os.Symlink(victim, spoolDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(spoolDir, uid, gid); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t)
	conf := filepath.Join(base, "etrnflush.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "spool_dir = %q\nlog = \"stderr\"\nhelo = \"provider.example\"\ntls = \"none\"\n[host.\"h.example\"]\nroute = %q\n", spoolDir, rec.addr), 0o644); err != nil {
		t.Fatal(err)
	}
	before := treeSnapshot(t, victim)
	_, stderr, code := runEtrnflush(t, "-c", conf, "h.example")
	if code != exNoPerm || !strings.Contains(oneErrorLine(t, stderr), "is a symbolic link owned by uid "+strconv.Itoa(uid)) {
		t.Errorf("flush: exit %d, want %d with the reason\n%s", code, exNoPerm, stderr)
	}
	p := startServe(t, conf)
	p.cmd(t, "", 421, "Service not available")
	if code := p.wait(t); code != exNoPerm {
		t.Errorf("serve: exit %d, want %d; stderr %q", code, exNoPerm, p.stderr.String())
	}
	if n := len(rec.messages()); n != 0 {
		t.Errorf("%d messages sent through the link", n)
	}
	if d := diffSnapshots(before, treeSnapshot(t, victim)); d != "" {
		t.Errorf("the link's target changed:\n%s", d)
	}
}
