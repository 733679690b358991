//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// agedBSMTP is one BSMTP message whose top Received: line is age old:
// the date expiry and delay warnings go by.
func agedBSMTP(from, to string, age time.Duration) string {
	date := time.Now().Add(-age).Format(time.RFC1123Z)
	return "MAIL FROM:<" + from + ">\nRCPT TO:<" + to + ">\nDATA\n" +
		"Received: from a by relay.example; " + date + "\nSubject: old\n\nbody\n.\n"
}

// writeBounceConfig writes a config whose sendmail is the fake one, which
// files each DSN under out (and exits $FAKE_SENDMAIL_EXIT); keys are
// added to its global table before any host table in extra.
func writeBounceConfig(t *testing.T, out, keys, extra string) string {
	t.Helper()
	script, err := filepath.Abs("bounce/testdata/fake-sendmail")
	if err != nil {
		t.Fatal(err)
	}
	conf := "log = \"stderr\"\nmax_age = \"5d\"\n" + keys + "sendmail = [\"" + script + "\", \"" + out + "\", \"-i\", \"-f\", \"<>\", \"--\"]\n" + extra
	cfg := filepath.Join(t.TempDir(), "etrnflush.toml")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestCLIExpiryBounce drives the configuration keys through the binary: a
// message whose Received: date is ten days old expires (max_age "5d") on
// a host that does not answer; while sendmail fails the copy stays and
// the run exits 75; the next run, with nothing left to send, hands the
// DSN over and exits 0. With bounce = false for the host the copy stays,
// nothing is run, and the first run exits 0: nothing is left to do.
func TestCLIExpiryBounce(t *testing.T) {
	for _, bounce := range []bool{true, false} {
		name := map[bool]string{true: "bounce", false: "no-bounce"}[bounce]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out := t.TempDir()
			host := "old.example"
			spool := filepath.Join(dir, host)
			if err := os.WriteFile(spool, []byte(agedBSMTP("alice@sender.example", "ann@old.example", 10*24*time.Hour)), 0o600); err != nil {
				t.Fatal(err)
			}
			extra := ""
			if !bounce {
				extra = "[host.\"" + host + "\"]\nbounce = false\n"
			}
			cfg := writeBounceConfig(t, out, "", extra)
			args := []string{"-c", cfg, "--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "relay.test.example", host}
			failed := func() []string {
				m, err := filepath.Glob(filepath.Join(dir, ".etrnflush-"+host+".failed", "*.bsmtp"))
				if err != nil {
					t.Fatal(err)
				}
				return m
			}

			t.Setenv("FAKE_SENDMAIL_EXIT", "1")
			_, stderr, code := runEtrnflush(t, args...)
			// With bounces the DSN is left to hand over (75); without,
			// the expired message is in the failed folder as a refused
			// one would be, and nothing is left (0).
			want := map[bool]int{true: 75, false: 0}[bounce]
			if code != want || !strings.Contains(stderr, "status=expired reason=\"4.4.7 expired") {
				t.Fatalf("run 1: exit %d, want %d; stderr:\n%s", code, want, stderr)
			}
			if bounce != strings.Contains(stderr, "status=bounce_failed") || len(failed()) != 1 {
				t.Errorf("run 1: %d failed copies; stderr:\n%s", len(failed()), stderr)
			}

			t.Setenv("FAKE_SENDMAIL_EXIT", "0")
			_, stderr, code = runEtrnflush(t, args...)
			if code != 0 {
				t.Fatalf("run 2: exit %d; stderr:\n%s", code, stderr)
			}
			dsns, err := filepath.Glob(filepath.Join(out, "dsn.*"))
			if err != nil {
				t.Fatal(err)
			}
			if bounce {
				if len(failed()) != 0 || len(dsns) != 2 || !strings.Contains(stderr, "status=bounced") {
					t.Errorf("run 2: %d failed copies, %d sendmail calls; stderr:\n%s", len(failed()), len(dsns), stderr)
				}
				return
			}
			if len(failed()) != 1 || len(dsns) != 0 || strings.Contains(stderr, "bounce") {
				t.Errorf("bounce = false: %d failed copies, %d sendmail calls; stderr:\n%s", len(failed()), len(dsns), stderr)
			}
		})
	}
}

// TestKillDuringBounce: etrnflush killed (SIGKILL) while the sendmail
// command holds the DSN loses nothing: the failed copy is still there,
// and the next run hands its DSN over again (one duplicate at most) and
// removes it.
func TestKillDuringBounce(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	host := "kill.example"
	spool := filepath.Join(dir, host)
	if err := os.WriteFile(spool, []byte(agedBSMTP("alice@sender.example", "ann@kill.example", 10*24*time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeBounceConfig(t, out, "", "")
	args := []string{"-c", cfg, "--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "relay.test.example", host}
	failed := func() int {
		m, err := filepath.Glob(filepath.Join(dir, ".etrnflush-"+host+".failed", "*.bsmtp"))
		if err != nil {
			t.Fatal(err)
		}
		return len(m)
	}

	t.Setenv("FAKE_SENDMAIL_SLEEP", "3")
	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	cmd := exec.Command(etrnflushBin, args...)
	cmd.Env = childEnv()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "read.1")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill() // the test has failed; only cleanup is left
			t.Fatal("sendmail was never given the DSN")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("etrnflush exited normally before the kill")
	}
	if n := failed(); n != 1 {
		t.Fatalf("after the kill the failed folder holds %d copies, want 1", n)
	}

	t.Setenv("FAKE_SENDMAIL_SLEEP", "")
	_, stderr, code := runEtrnflush(t, args...)
	if code != 0 || failed() != 0 || !strings.Contains(stderr, "status=bounced") {
		t.Errorf("run after the kill: exit %d, %d copies left; stderr:\n%s", code, failed(), stderr)
	}
	dsns, err := filepath.Glob(filepath.Join(out, "dsn.*"))
	if err != nil || len(dsns) != 2 {
		t.Errorf("%d DSNs handed over, want 2 (the killed run's and its one repeat): %v", len(dsns), err)
	}
}

// TestCLIExpiredBouncedExits0: a run that finds the host unreachable,
// expires everything it holds and hands every DSN over has nothing left:
// it exits 0 and its summary counts the bounce.
func TestCLIExpiredBouncedExits0(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	host := "gone.example"
	spool := filepath.Join(dir, host)
	if err := os.WriteFile(spool, []byte(agedBSMTP("alice@sender.example", "ann@gone.example", 10*24*time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeBounceConfig(t, out, "", "")
	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	_, stderr, code := runEtrnflush(t, "-c", cfg, "--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "relay.test.example", host)
	if code != 0 || !strings.Contains(stderr, "status=expired") || !strings.Contains(stderr, "bounced=1 bounce_failed=0") {
		t.Errorf("exit %d, want 0 with one expiry bounced; stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat(spool); !os.IsNotExist(err) {
		t.Errorf("spool still there: %v", err)
	}
}

// TestCLIDryRunExpiry: --dry-run lists the messages a real run would give
// up (max_age) or warn about (warn_age, not from <>, not warned yet),
// with would_expire and would_warn in its summary, and sends no DSN,
// connects nowhere and changes nothing. After a real run has expired and
// warned them, a dry run lists neither again.
func TestCLIDryRunExpiry(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	host := "dry.example"
	spool := filepath.Join(dir, host)
	msg := agedBSMTP
	text := msg("old@sender.example", "ann@dry.example", 10*24*time.Hour) +
		msg("late@sender.example", "bob@dry.example", 5*time.Hour) +
		msg("", "cid@dry.example", 5*time.Hour) +
		msg("new@sender.example", "dan@dry.example", time.Minute)
	if err := os.WriteFile(spool, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeBounceConfig(t, out, "warn_age = \"4h\"\n", "")
	t.Setenv("FAKE_SENDMAIL_EXIT", "0")
	addr, accepted := countingListener(t)
	dry := []string{"-c", cfg, "--spool", spool, "--to", addr, "--tls", "none", "--dry-run", host}

	before := treeSnapshot(t, dir)
	stdout, stderr, code := runEtrnflush(t, dry...)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s%s", code, stdout, stderr)
	}
	if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
		t.Errorf("the dry run changed the spool directory:\n%s", d)
	}
	expire := regexp.MustCompile(`(?m)^event=would-expire host=\S+ id=\S+ from=<old@sender\.example> to=<ann@dry\.example> held_since=\S+ age_from=received$`)
	warn := regexp.MustCompile(`(?m)^event=would-warn host=\S+ id=\S+ from=<late@sender\.example> to=<bob@dry\.example> held_since=\S+ age_from=received$`)
	if !expire.MatchString(stdout) || !warn.MatchString(stdout) || strings.Count(stdout, "event=would-expire") != 1 || strings.Count(stdout, "event=would-warn") != 1 ||
		!strings.Contains(stdout, "would_send=4 would_quarantine=0 would_expire=1 would_warn=1 ") {
		t.Errorf("dry run listed:\n%s", stdout)
	}
	if dsns, _ := filepath.Glob(filepath.Join(out, "dsn.*")); len(dsns) != 0 || accepted.Load() != 0 {
		t.Errorf("the dry run handed %d DSNs over and connected %d times", len(dsns), accepted.Load())
	}

	// A real run to a host that does not answer expires the old one and
	// warns the late one's sender.
	_, stderr, code = runEtrnflush(t, "-c", cfg, "--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "relay.test.example", host)
	if code != 75 || !strings.Contains(stderr, "status=expired") || !strings.Contains(stderr, "status=delay_warned") {
		t.Fatalf("real run: exit %d; stderr:\n%s", code, stderr)
	}
	stdout, _, code = runEtrnflush(t, dry...)
	if code != 0 || strings.Contains(stdout, "event=would-expire") || strings.Contains(stdout, "event=would-warn") ||
		!strings.Contains(stdout, "would_send=3 would_quarantine=0 would_expire=0 would_warn=0 ") {
		t.Errorf("dry run after the real one: exit %d\n%s", code, stdout)
	}
}
