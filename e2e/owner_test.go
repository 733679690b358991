//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
)

// eximUIDs finds the Exim user, for the tests that need a second real
// user; it skips (fails under CI) when that cannot be had.
func eximUIDs(t *testing.T) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to run etrnflush as root and as the Exim user")
	}
	var u *user.User
	var err error
	for _, name := range []string{"Debian-exim", "exim"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		skipOrFail(t, "no Exim user on this machine (install exim4-daemon-heavy)")
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// userName is uid's login name.
func userName(t *testing.T, uid int) string {
	t.Helper()
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// runAs runs the built binary as uid:gid (root: uid 0) and returns its
// stderr and exit status.
func runAs(t *testing.T, uid, gid int, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), etrnflushBin, args...)
	cmd.Env = childEnv()
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return errb.String(), 0
	case errors.As(err, &ee) && ee.Exited():
		return errb.String(), ee.ExitCode()
	}
	t.Fatalf("etrnflush %s: %v\n%s", strings.Join(args, " "), err, &errb)
	return "", -1
}

// rootOwned lists what under dir belongs to root.
func rootOwned(t *testing.T, dir string) []string {
	t.Helper()
	var bad []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if st.Uid == 0 {
			bad = append(bad, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// TestRootThenEximUser: a run as root (a link-up script, inetd) and a run
// as the Exim user (Exim's smtp_etrn_command) take turns on one spool, in
// both orders. The first run leaves a deferred message (a journal, a work
// file) and a refused one (the failed folder); whoever runs second still
// delivers the mail appended meanwhile, and nothing under the spool
// directory ever belongs to root: a root run acts as the directory's
// owner.
func TestRootThenEximUser(t *testing.T) {
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
	for _, order := range []string{"root first", "Exim user first"} {
		t.Run(order, func(t *testing.T) {
			first, second := [2]int{0, 0}, [2]int{uid, gid}
			if order != "root first" {
				first, second = second, first
			}
			base := t.TempDir()
			// The Exim user must reach the config and the spool.
			for _, d := range []string{filepath.Dir(base), base} {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			spoolDir := filepath.Join(base, "spool")
			if err := os.Mkdir(spoolDir, 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(spoolDir, uid, gid); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(base, "etrnflush.toml")
			if err := os.WriteFile(conf, fmt.Appendf(nil, "spool_dir = %q\nlog = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\n", spoolDir), 0o644); err != nil {
				t.Fatal(err)
			}
			rec := newPolicyRecorder(t, policy)
			path := filepath.Join(spoolDir, "h.example")
			msg := func(to, subject string) envMsg {
				return envMsg{From: "s@sender.example", To: []string{to}, Data: []byte("Subject: " + subject + "\n\nbody\n")}
			}
			appendSpool := func(msgs ...envMsg) { appendOwnedSpool(t, path, uid, gid, msgs...) }
			args := []string{"-c", conf, "--to", rec.addr, "--tls", "none", "--helo", "test.example", "h.example"}
			appendSpool(msg("one@h.example", "one"), msg("later@h.example", "later"), msg("gone@h.example", "gone"))
			out1, code := runAs(t, first[0], first[1], args...)
			if code != exTempFail {
				t.Fatalf("first run: exit %d, want %d (a deferred message)\n%s", code, exTempFail, out1)
			}
			if bad := rootOwned(t, spoolDir); len(bad) > 0 {
				t.Errorf("after the first run these belong to root: %q", bad)
			}
			appendSpool(msg("two@h.example", "two"))
			out, code := runAs(t, second[0], second[1], args...)
			if code != exTempFail {
				t.Errorf("second run: exit %d, want %d (the deferred one is still deferred)\n%s", code, exTempFail, out)
			}
			if bad := rootOwned(t, spoolDir); len(bad) > 0 {
				t.Errorf("after the second run these belong to root: %q", bad)
			}
			rootOut := out1
			if first[0] != 0 {
				rootOut = out
			}
			if want := fmt.Sprintf("event=owner-switch host=h.example user=%s uid=%d gid=%d dir=%q", userName(t, uid), uid, gid, spoolDir); !strings.Contains(rootOut, want) {
				t.Errorf("the root run did not log %q:\n%s", want, rootOut)
			}
			var got []string
			for _, m := range rec.messages() {
				got = append(got, strings.Join(m.To, ","))
			}
			if strings.Join(got, " ") != "one@h.example two@h.example" {
				t.Errorf("delivered %q, want one and two, once each\nsecond run:\n%s", got, out)
			}
		})
	}
}

// TestUnsafeSpoolDir: a spool directory that group or others may write
// (without the sticky bit) is refused before anything is read or sent,
// with exit 77 and the chmod that fixes it; with the sticky bit it is
// used.
func TestUnsafeSpoolDir(t *testing.T) {
	for _, c := range []struct {
		mode os.FileMode
		code int
	}{{0o777, exNoPerm}, {0o770, exNoPerm}, {0o777 | os.ModeSticky, 0}, {0o755, 0}} {
		t.Run(c.mode.String(), func(t *testing.T) {
			base := t.TempDir()
			spoolDir := filepath.Join(base, "spool")
			if err := os.Mkdir(spoolDir, 0o700); err != nil {
				t.Fatal(err)
			}
			// Chmod, not Mkdir's mode: the umask must not decide the case.
			if err := os.Chmod(spoolDir, c.mode); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(spoolDir, "h.example")
			writeCrashFile(t, path, crashMessages(1, func(int) []string { return []string{"r@h.example"} }))
			rec := newRecorder(t)
			_, stderr, code := runEtrnflush(t, "--spool", path, "--to", rec.addr, "--tls", "none", "--helo", "test.example", "h.example")
			if code != c.code {
				t.Fatalf("exit %d, want %d\n%s", code, c.code, stderr)
			}
			if c.code == exNoPerm {
				if !strings.Contains(stderr, "chmod go-w "+spoolDir) {
					t.Errorf("the error does not name the fix:\n%s", stderr)
				}
				if n := len(rec.messages()); n != 0 {
					t.Errorf("%d messages sent from an unsafe spool", n)
				}
			}
		})
	}
}

// appendOwnedSpool appends msgs to the BSMTP spool at path as Exim would
// (creating it 0600), and gives it to uid:gid, the Exim user the test
// stands in for.
func appendOwnedSpool(t *testing.T, path string, uid, gid int, msgs ...envMsg) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(eximBSMTP(msgs)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}
