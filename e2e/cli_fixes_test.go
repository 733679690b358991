//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIFlagsAfterCommandWord: -v and --log are taken after "flush" as
// before it, and check-config takes the flush options that change a
// host's settings.
func TestCLIFlagsAfterCommandWord(t *testing.T) {
	dir := t.TempDir()
	sp := filepath.Join(dir, "p.example")
	if err := os.WriteFile(sp, []byte(bsmtpEntry("a@s.example", "b@p.example", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"flush", "--log", "stderr", "-v", "--spool", sp, "--dry-run", "p.example"},
		{"-v", "flush", "--log", "stderr", "--spool", sp, "--dry-run", "p.example"},
	} {
		out, stderr, code := runEtrnflush(t, args...)
		// -v shows the spool's layout in the log; the dry run's summary
		// reads like the flush's: host= first.
		if code != exOK || !strings.Contains(stderr, "event=spool host=p.example spool=\""+sp+"\" layout=bsmtp-file") ||
			!strings.Contains(out, "\nevent=summary host=p.example dry_run=true layout=bsmtp-file would_send=1 ") {
			t.Errorf("%q: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, stderr)
		}
	}
	out, stderr, code := runEtrnflush(t, "check-config", "--to", "192.0.2.9:2525", "--timeout", "17s", "p.example")
	if code != exOK || !strings.Contains(out, `route = "192.0.2.9:2525"`) || !strings.Contains(out, `timeout = "17s"`) {
		t.Errorf("check-config --to: exit %d\n%s%s", code, out, stderr)
	}
	// What is not a setting is not taken there.
	if _, _, code := runEtrnflush(t, "check-config", "--dry-run", "p.example"); code != exUsage {
		t.Errorf("check-config --dry-run: exit %d, want %d", code, exUsage)
	}
}

// TestCLITimeoutSaysWhatADurationIs: a bare number is refused with a hint,
// as the configuration's timeout is.
func TestCLITimeoutSaysWhatADurationIs(t *testing.T) {
	for _, args := range [][]string{{"--timeout", "5", "x.example"}, {"flush", "--timeout", "5", "x.example"}, {"check-config", "--timeout", "5", "x.example"}} {
		_, stderr, code := runEtrnflush(t, args...)
		if code != exUsage || !strings.Contains(oneErrorLine(t, stderr), `--timeout: "5" is not a duration like 30s or 5m`) {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// TestCLIHelpNoDefaultFalse: switches are off unless given; their help
// does not say so on every line.
func TestCLIHelpNoDefaultFalse(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help", "flush"}, {"help", "list"}} {
		out, _, code := runEtrnflush(t, args...)
		if code != exOK || !strings.Contains(out, "--dry-run") && !strings.Contains(out, "--json") {
			t.Fatalf("%q: exit %d\n%s", args, code, out)
		}
		if strings.Contains(out, "(default: false)") {
			t.Errorf("%q shows (default: false):\n%s", args, out)
		}
	}
}

// TestCLIUnknownHostLeavesNothing: a HOST with neither a spool nor a
// [host] table (a typo) exits 0 with one line naming the path looked at,
// and leaves nothing behind, not even a lock file; a configured host
// without a spool still gets its (empty) flush.
func TestCLIUnknownHostLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "[host.\"known.example\"]\nroute = \"127.0.0.1:1\"\ntls = \"none\"\nhelo = \"t.example\"\n")
	before := treeSnapshot(t, dir)
	_, stderr, code := runEtrnflush(t, "-c", cfg, "misspelt.example")
	if code != exOK {
		t.Errorf("exit %d, want 0", code)
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "event=nothing-to-send host=misspelt.example spool=\""+filepath.Join(dir, "misspelt.example")+"\" reason=") {
		t.Errorf("stderr is not the one line naming the path:\n%s", stderr)
	}
	if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
		t.Errorf("a flush of an unknown host changed the spool directory:\n%s", d)
	}
	_, stderr, code = runEtrnflush(t, "-c", cfg, "known.example")
	if code != exOK || !strings.Contains(stderr, "event=summary host=known.example sent=0 ") {
		t.Errorf("configured host: exit %d\n%s", code, stderr)
	}
}

// TestCLIGlobalFlagsEverywhere: -c, -v and --log are taken before and
// after every command word; after the word, -c wins over
// $ETRNFLUSH_CONFIG as it does before it.
func TestCLIGlobalFlagsEverywhere(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.toml")
	for _, cmd := range [][]string{
		{"flush", "x.example"}, {"check-config"}, {"list"}, {"failed"}, {"quarantine"},
		{"release", "x.example", "1"}, {"delete", "x.example", "1"},
	} {
		// A -c that is read makes the missing file an error (78).
		for _, args := range [][]string{
			append([]string{"-c", missing, "-v", "--log", "stderr"}, cmd...),
			append([]string{cmd[0], "-c", missing, "-v", "--log", "stderr"}, cmd[1:]...),
			append([]string{cmd[0], "--config=" + missing, "--verbose"}, cmd[1:]...),
		} {
			_, stderr, code := runEtrnflush(t, args...)
			if code != exConfig || !strings.Contains(stderr, missing+": cannot read") {
				t.Errorf("%q: exit %d, want %d naming %s\n%s", args, code, exConfig, missing, stderr)
			}
		}
	}
	// serve needs a socket on standard input; it answers 421 and exits
	// 78 for the missing file.
	for _, argv := range [][]string{{"-c", missing, "-v", "serve"}, {"serve", "-c", missing, "-v", "--log", "stderr"}} {
		p := startServeArgv(t, argv)
		p.cmd(t, "", 421, "")
		if code := p.wait(t); code != exConfig || !strings.Contains(p.stderr.String(), missing) {
			t.Errorf("%q: exit %d, stderr %q", argv, code, p.stderr.String())
		}
	}
	// passwd reads no configuration, but takes the options all the same.
	for _, args := range [][]string{{"-v", "passwd"}, {"passwd", "-c", missing, "-v", "--log", "stderr"}} {
		cmd := exec.Command(etrnflushBin, args...)
		cmd.Env = childEnv()
		cmd.Stdin = strings.NewReader("secret\n")
		out, err := cmd.Output()
		if err != nil || !strings.HasPrefix(string(out), "$2") {
			t.Errorf("%q: %v, %q", args, err, out)
		}
	}
	// -c after the word wins over the environment.
	dir := t.TempDir()
	good := writeConfig(t, dir, "")
	t.Setenv("ETRNFLUSH_CONFIG", missing)
	for _, args := range [][]string{{"list", "-c", good}, {"check-config", "-c", good}, {"failed", "-c", good}} {
		if _, stderr, code := runEtrnflush(t, args...); code != exOK {
			t.Errorf("%q: exit %d\n%s", args, code, stderr)
		}
	}
}
