package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// etrnflushBin is the binary built once by TestMain. The CLI, Exim, crash
// and concurrency tests run it as a child process: exit codes and signals are
// part of the contract, and `go run` would hide both.
var etrnflushBin string

// baseConfig is the config every child run gets through ETRNFLUSH_CONFIG
// unless the test set that variable itself: a config installed on the
// machine must never leak into a test, and with stderr not a terminal the
// default log destination would be syslog, where no test can read it.
// It turns bounces off (a test must never run the machine's sendmail)
// and sets max_age far out: the Exim fixtures' Received: dates do not
// move while the clock does.
var baseConfig string

// runTimeout bounds one child run; a hang is a bug, not a reason to wait
// for the go test deadline.
const runTimeout = 2 * time.Minute

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "etrnflush-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: %v\n", err)
		return 1
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "TestMain: remove %s: %v\n", dir, err)
		}
	}()
	// The ETRN test runs the binary as the Exim user, through Exim.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: %v\n", err)
		return 1
	}
	etrnflushBin = filepath.Join(dir, "etrnflush")
	baseConfig = filepath.Join(dir, "base.toml")
	if err := os.WriteFile(baseConfig, []byte("log = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\n"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: %v\n", err)
		return 1
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: go tool not found: %v\n", err)
		return 1
	}
	build := exec.Command(goTool, "build", "-o", etrnflushBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: go build -o %s . failed: %v\n%s", etrnflushBin, err, out)
		return 1
	}
	return m.Run()
}

// childEnv is the environment of a child run: the test's own, with
// ETRNFLUSH_CONFIG pointing at baseConfig unless the test set it.
func childEnv() []string {
	env := os.Environ()
	if _, ok := os.LookupEnv("ETRNFLUSH_CONFIG"); !ok {
		env = append(env, "ETRNFLUSH_CONFIG="+baseConfig)
	}
	return env
}

// runEtrnflush runs the built binary with args and returns what it printed
// and its exit status. It fails the test if the binary cannot be started,
// is killed by a signal, or runs longer than runTimeout.
func runEtrnflush(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	stdout, stderr, code, err := execEtrnflush(args...)
	if err != nil {
		t.Fatal(err)
	}
	return stdout, stderr, code
}

// execEtrnflush is runEtrnflush for goroutines other than the test's own,
// which must not call t.Fatal: it reports instead.
func execEtrnflush(args ...string) (stdout, stderr string, code int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, etrnflushBin, args...)
	cmd.Env = childEnv()
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		return out.String(), errb.String(), -1, fmt.Errorf("etrnflush %s: still running after %s\nstderr:\n%s",
			strings.Join(args, " "), runTimeout, errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		return out.String(), errb.String(), -1, fmt.Errorf("etrnflush %s: %w\nstderr:\n%s",
			strings.Join(args, " "), err, errb.String())
	}
	return out.String(), errb.String(), code, nil
}
