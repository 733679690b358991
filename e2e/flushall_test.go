//go:build e2e

package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestCLIFlushAll: flush --all --jobs 2 over three hosts with mail, one of
// them unreachable, and a configured host without any: the reachable two
// are delivered, the unreachable one keeps its mail, each gets one status
// line, the one without mail none, and the exit status is 75.
func TestCLIFlushAll(t *testing.T) {
	rx, addr := startRefusingServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, h := range []string{"a.example", "b.example", "c.example"} {
		if err := os.WriteFile(filepath.Join(dir, h), []byte(bsmtpEntry("s@x.example", "u@"+h, "")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, dir, `helo = "tx.example"
tls = "none"
timeout = "10s"
[host."a.example"]
route = "`+addr+`"
[host."b.example"]
route = "`+addr+`"
[host."c.example"]
route = "`+dead+`"
[host."empty.example"]
route = "`+addr+`"
`)
	out, stderr, code := runEtrnflush(t, "-c", cfg, "flush", "--all", "--jobs", "2")
	if code != exTempFail {
		t.Errorf("exit %d, want %d\nstdout:\n%sstderr:\n%s", code, exTempFail, out, stderr)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	sort.Strings(lines)
	if want := "host=a.example status=0\nhost=b.example status=0\nhost=c.example status=75"; strings.Join(lines, "\n") != want {
		t.Errorf("stdout:\n%s\nwant (in any order):\n%s", out, want)
	}
	got := rx.taken()
	sort.Strings(got)
	if strings.Join(got, " ") != "s@x.example>u@a.example s@x.example>u@b.example" {
		t.Errorf("delivered %v", got)
	}
	if envs := dryRunEnvelopes(t, filepath.Join(dir, "c.example"), "c.example"); len(envs) != 1 {
		t.Errorf("the unreachable host's spool holds %v", envs)
	}
	for _, h := range []string{"a.example", "b.example"} {
		if !strings.Contains(stderr, "event=summary host="+h+" sent=1 ") {
			t.Errorf("no summary for %s in stderr:\n%s", h, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".etrnflush-empty.example.lock")); !os.IsNotExist(err) {
		t.Errorf("a host without mail was flushed (lock file: %v)", err)
	}

	// Nothing left but the unreachable host; the options go after the
	// command word as well as before it.
	for _, args := range [][]string{{"--all"}, {"flush", "--all"}} {
		if _, stderr, code := runEtrnflush(t, append([]string{"-c", cfg}, append(args, "--to", addr)...)...); code != exOK {
			t.Errorf("%v: exit %d\n%s", args, code, stderr)
		}
	}
	if got := rx.taken(); len(got) != 3 {
		t.Errorf("after the second --all the receiver has %v", got)
	}
}

// TestCLIFlushAllUsage: --all takes no HOST and no --spool; --jobs needs
// --all and a sane number.
func TestCLIFlushAllUsage(t *testing.T) {
	cfg := writeConfig(t, t.TempDir(), "")
	for _, args := range [][]string{
		{"flush", "--all", "a.example"},
		{"--all", "--spool", "/tmp/x"},
		{"flush", "--jobs", "2", "a.example"},
		{"flush", "--all", "--jobs", "0"},
	} {
		_, stderr, code := runEtrnflush(t, append([]string{"-c", cfg}, args...)...)
		if code != exUsage {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, exUsage, stderr)
		}
	}
}

// TestFlushAllExampleUnits: the shipped timer's service runs flush --all
// (its ExecStart, with the config path pointed at a test config, flushes a
// host and exits 0), and systemd, where installed, finds nothing wrong
// with the pair.
func TestFlushAllExampleUnits(t *testing.T) {
	svc := keyValues(t, "examples/etrnflush-all.service")
	argv := strings.Fields(svc["ExecStart"])
	if len(argv) < 2 || argv[0] != "/usr/local/sbin/etrnflush" || !slices.Contains(argv, "--all") || svc["SuccessExitStatus"] != "75" {
		t.Fatalf("ExecStart %q, SuccessExitStatus %q", svc["ExecStart"], svc["SuccessExitStatus"])
	}
	rx, addr := startRefusingServer(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.example"), []byte(bsmtpEntry("s@x.example", "u@a.example", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, "helo = \"tx.example\"\ntls = \"none\"\n[host.\"a.example\"]\nroute = \""+addr+"\"\n")
	args := argv[1:]
	for i, a := range args {
		switch a {
		case "/etc/etrnflush/etrnflush.toml":
			args[i] = cfg
		case "syslog":
			args[i] = "stderr" // no syslog socket needed
		}
	}
	out, stderr, code := runEtrnflush(t, args...)
	if code != exOK || out != "host=a.example status=0\n" || len(rx.taken()) != 1 {
		t.Errorf("%q: exit %d, delivered %v\nstdout:\n%s\nstderr:\n%s", args, code, rx.taken(), out, stderr)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the units were run, not verified")
	}
	vdir := t.TempDir()
	for _, name := range []string{"etrnflush-all.service", "etrnflush-all.timer"} {
		b, err := os.ReadFile(filepath.Join("examples", name))
		if err != nil {
			t.Fatal(err)
		}
		// verify wants the ExecStart binary to exist.
		text := strings.ReplaceAll(string(b), "/usr/local/sbin/etrnflush", etrnflushBin)
		if err := os.WriteFile(filepath.Join(vdir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(sa, "verify", "--man=no", "./etrnflush-all.timer", "./etrnflush-all.service")
	cmd.Dir = vdir
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
