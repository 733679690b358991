//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The exit statuses of etrnflush(8)'s EXIT STATUS section (sysexits.h).
// They are written down here rather than imported: these tests check the
// documented contract, and main's constants could drift with it.
const (
	exOK       = 0
	exUsage    = 64
	exDataErr  = 65
	exIOErr    = 74
	exTempFail = 75
	exNoPerm   = 77
	exConfig   = 78
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
	// The tests name testdata/, man/, examples/ and the package to build
	// relative to the repository root, as an admin at a checkout would:
	// run them from there, whichever directory go test started in.
	if err := os.Chdir(".."); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: %v\n", err)
		return 1
	}
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
