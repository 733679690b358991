//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runOnTTY runs etrnflush with standard error (and input) on a new
// pseudo-terminal and returns what the terminal showed, standard output
// and the exit status.
func runOnTTY(t *testing.T, args ...string) (shown, stdout string, code int) {
	t.Helper()
	master, slave := openPTY(t)
	defer func() {
		if err := master.Close(); err != nil {
			t.Error(err)
		}
	}()
	out := &ttyOutput{}
	readDone := out.readFrom(master)
	var so bytes.Buffer
	cmd := exec.Command(etrnflushBin, args...)
	cmd.Env = childEnv()
	cmd.Stdin, cmd.Stderr = slave, slave
	cmd.Stdout = &so
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if err := slave.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-readDone:
	case <-time.After(10 * time.Second):
		t.Fatal("terminal not closed after exit")
	}
	return out.String(), so.String(), code
}

// TestCLIProgress: a flush whose standard error is a terminal shows a
// live line (messages and octets done of the total, rate, time left)
// that ends in the summary, also when the log goes to a file, which then
// holds no trace of it; --no-progress leaves only the summary; with
// standard error on a pipe (Exim, inetd, cron) there is neither.
func TestCLIProgress(t *testing.T) {
	dir := t.TempDir()
	host := "h.example"
	sp := filepath.Join(dir, host)
	logFile := filepath.Join(t.TempDir(), "etrnflush.log")
	write := func() {
		t.Helper()
		if err := os.MkdirAll(sp, 0o700); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			to := fmt.Sprintf("r%d@h.example", i)
			if err := os.WriteFile(filepath.Join(sp, fmt.Sprintf("q1aaaa-%d", i)), []byte(bsmtpEntry("s@x.example", to, "")), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	rx := newRecorder(t)
	cfg := writeConfig(t, dir, "")
	flushArgs := []string{"-c", cfg, "--log", logFile, "flush", "--to", rx.addr, "--tls", "none", "--helo", "tx.example"}
	summary := regexp.MustCompile(`etrnflush: event=summary host=h\.example sent=3 deferred=0 .*\r?\n$`)
	live := regexp.MustCompile(`\r\x1b\[Kh\.example: \d/3 messages, [0-9.]+ (B|KiB)/[0-9.]+ (B|KiB), [0-9.]+ (B|KiB)/s, (\d+:\d\d|--:--) left`)

	write()
	shown, stdout, code := runOnTTY(t, append(flushArgs, host)...)
	if code != exOK || stdout != "" {
		t.Fatalf("flush on a terminal: exit %d, stdout %q, terminal %q", code, stdout, shown)
	}
	if !live.MatchString(shown) || !summary.MatchString(shown) {
		t.Errorf("terminal shows no progress line ending in the summary: %q", shown)
	}
	logged, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(logged, "\r\x1b") || !strings.Contains(string(logged), "event=summary host=h.example sent=3 ") {
		t.Errorf("log file:\n%q", logged)
	}

	// Logging to the same terminal: the live line is cleared before each
	// log line, so every log line starts a line of its own, and the
	// summary line ends the output.
	write()
	ttyArgs := append([]string{}, flushArgs...)
	ttyArgs[3] = "stderr"
	shown, _, code = runOnTTY(t, append(ttyArgs, host)...)
	if code != exOK || !live.MatchString(shown) || !regexp.MustCompile(`(\r\x1b\[K|\n)etrnflush\[\d+\]: event=summary host=h\.example sent=3 [^\r]*\r?\n$`).MatchString(shown) {
		t.Errorf("--log stderr on a terminal: exit %d, terminal %q", code, shown)
	}
	for _, l := range strings.Split(shown, "\n") {
		if i := strings.Index(l, "etrnflush["); i > 0 && !strings.HasSuffix(l[:i], "\r\x1b[K") {
			t.Errorf("a log line shares the progress line: %q", l)
		}
	}

	write()
	shown, _, code = runOnTTY(t, append(flushArgs, "--no-progress", host)...)
	if code != exOK || live.MatchString(shown) || strings.Contains(shown, "\r\x1b") || !summary.MatchString(shown) {
		t.Errorf("--no-progress: exit %d, terminal %q", code, shown)
	}

	write()
	_, stderr, code := runEtrnflush(t, append(flushArgs, host)...)
	if code != exOK || stderr != "" {
		t.Errorf("flush with standard error on a pipe: exit %d, stderr %q", code, stderr)
	}
}

// TestCLITranscript: -vv (or -v before and after the command word) logs
// the SMTP conversation as event=smtp lines, commands and replies each on
// a line, content never, and the extensions the server offered; -v alone
// logs none of it.
func TestCLITranscript(t *testing.T) {
	dir := t.TempDir()
	host := "h.example"
	sp := filepath.Join(dir, host)
	rx := newRecorder(t)
	cfg := writeConfig(t, dir, "")
	for _, tc := range []struct {
		before, v string
		trace     bool
	}{{"-c", "-v", false}, {"-c", "-vv", true}, {"-v", "-v", true}} {
		if err := os.MkdirAll(sp, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sp, "q1aaaa-1"), []byte(bsmtpEntry("s@x.example", "r@h.example", "X-Secret: content\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"-c", cfg, "flush", tc.v, "--to", rx.addr, "--tls", "none", "--helo", "tx.example", host}
		if tc.before != "-c" {
			args = append([]string{tc.before}, args...)
		}
		_, stderr, code := runEtrnflush(t, args...)
		if code != exOK {
			t.Fatalf("%s: exit %d\n%s", tc.v, code, stderr)
		}
		if !tc.trace {
			if strings.Contains(stderr, "event=smtp") {
				t.Errorf("-v logged the transcript:\n%s", stderr)
			}
			continue
		}
		for _, want := range []string{
			`event=smtp host=h.example server=` + rx.addr + ` dir=S line="220 `,
			`dir=C line="EHLO tx.example"`,
			`dir=C line="MAIL FROM:<s@x.example>`,
			`dir=C line="RCPT TO:<r@h.example>"`,
			`dir=S line="250 `,
			`dir=C line="QUIT"`,
			`event=smtp host=h.example server=` + rx.addr + ` tls=false extensions="`,
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("-vv: no %s in\n%s", want, stderr)
			}
		}
		if strings.Contains(stderr, "X-Secret") || strings.Contains(stderr, "body") {
			t.Errorf("-vv logged content:\n%s", stderr)
		}
	}
}
