//go:build e2e

package e2e

// The Exim harness: a real Exim 4.96 as the writer of BSMTP spools (the ISP
// side), as the receiving server (the sink) and as the ETRN server, each
// started unprivileged on loopback from the configs in testdata/rig. Also the
// test-only oracle: a strict little BSMTP parser that shares no code with
// package bsmtp, so a bug there cannot hide itself here.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEximETRNHostRejects: the ETRN argument reaches etrnflush verbatim
// through a real Exim (exim.md surprise 2). A hostile value must be refused
// (exit 64) before any file is created; a good one must run. The good one
// also shows that a run under Exim's umask 0 creates nothing group- or
// world-writable (surprise 4).
func TestEximETRNHostRejects(t *testing.T) {
	r := newRig(t)
	dir := r.mkdir(t, "etrn")
	state := filepath.Join(dir, "state")
	spoolDir := filepath.Join(state, "spool")
	for _, d := range []string{state, spoolDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, r.uid, r.gid); err != nil {
			t.Fatal(err)
		}
	}
	logFile := filepath.Join(state, "etrnflush.log")
	conf := fmt.Sprintf("spool_dir = %q\nlog = %q\ntimeout = \"10s\"\n", spoolDir, logFile)
	if err := os.WriteFile(filepath.Join(state, "etrnflush.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etrn-any"), []byte("*: any\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := r.startDaemon(t, "etrn.conf", dir, "ETRN_PORT",
		"-DETRN_DIR="+dir, "-DETRN_HOOK="+filepath.Join(r.dir, "etrn-hook.sh"), "-DETRN_BIN="+etrnflushBin)
	calls := filepath.Join(state, "calls.log")

	// The good name first: it proves the whole path (Exim, hook, etrnflush)
	// works, so that the refusals below cannot pass by never running.
	etrn(t, d.addr(), "@Good.Example")
	got := waitCalls(t, calls, 1)
	if got[0].arg != "@Good.Example" || got[0].code != "0" {
		t.Fatalf("ETRN @Good.Example: hook saw %+v, want exit 0", got[0])
	}
	logb, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("etrnflush wrote no log file under Exim: %v", err)
	}
	if !strings.Contains(string(logb), "host=good.example") {
		t.Errorf("log has no line for host=good.example (the name folded):\n%s", logb)
	}
	err = filepath.WalkDir(state, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if p != calls && p != state && p != spoolDir && fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("created under umask 0 with mode %v: %s", fi.Mode(), p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	before := snapTree(t, state)
	hostile := []string{
		"../escape", "../../escape", "a/b", "/abs", "two words", "a..b", ".hidden",
		"-x", "--spool=/tmp", "#", "@", "x;touch pwned", "dot.", "a\\b",
		strings.Repeat("a", 64) + ".example",
		strings.Repeat("abcdefghi.", 25) + "example", // 259 octets
	}
	for _, h := range hostile {
		etrn(t, d.addr(), h)
	}
	got = waitCalls(t, calls, 1+len(hostile))[1:]
	seen := map[string]call{}
	for _, c := range got {
		seen[c.arg] = c
	}
	for _, h := range hostile {
		c, ok := seen[h]
		switch {
		case !ok:
			t.Errorf("ETRN %q: the hook never saw this argument (calls: %+v)", h, got)
		case c.code != "64":
			t.Errorf("ETRN %q: etrnflush exited %s, want 64; it said: %s", h, c.code, c.out)
		case !strings.HasPrefix(h, "-") && !strings.Contains(c.out, "invalid host"):
			t.Errorf("ETRN %q: output %q does not say invalid host", h, c.out)
		}
	}
	after := snapTree(t, state)
	delete(before, calls)
	delete(after, calls)
	delete(before, logFile) // the log may record the refusals
	delete(after, logFile)
	diffTrees(t, "hostile ETRN arguments", before, after)
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		t.Error("a file named escape was created above the state directory")
	}
}
