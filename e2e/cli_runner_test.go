//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
)

// The CLI runner: run the built binary as a child, with the test's base
// config unless the test sets its own, and the file-tree helpers the CLI
// tests compare spools with.

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

// oneErrorLine checks that stderr is exactly one "etrnflush: error: " line
// and returns it.
func oneErrorLine(t *testing.T, stderr string) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "etrnflush: error: ") {
		t.Errorf("stderr is not one \"etrnflush: error: \" line:\n%s", stderr)
	}
	return lines[0]
}

// treeSnapshot describes every entry under dir: type, permissions, size and
// a hash of the content, so that two snapshots are equal exactly when
// nothing was created, removed or modified.
func treeSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += fmt.Sprintf(" %d %s mtime=%d", len(data), hex.EncodeToString(sum[:]), info.ModTime().UnixNano())
		}
		snap[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return snap
}

func diffSnapshots(before, after map[string]string) string {
	var b strings.Builder
	keys := map[string]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if before[k] != after[k] {
			fmt.Fprintf(&b, "  %s: %q -> %q\n", k, before[k], after[k])
		}
	}
	return b.String()
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read dir: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		switch {
		case e.Type().IsRegular():
			copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
		case e.IsDir(): // a maildir's new/
			copyTree(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
		}
	}
}

// privateFiles lists etrnflush's files next to the spool base name: work
// files, journals, temp files, and every entry of the quarantine and failed
// folders (keyed by kind).
func privateFiles(t *testing.T, dir, base string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return got
	}
	if err != nil {
		t.Fatal(err)
	}
	prefix := ".etrnflush-" + base + "."
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-"):
			got["tmp"] = append(got["tmp"], n)
		case !strings.HasPrefix(n, prefix):
		case strings.HasSuffix(n, ".work"):
			got["work"] = append(got["work"], filepath.Join(dir, n))
		case strings.HasSuffix(n, ".journal"):
			got["journal"] = append(got["journal"], filepath.Join(dir, n))
		case n == prefix+"quarantine" || n == prefix+"failed":
			kind := strings.TrimPrefix(n, prefix)
			sub, err := os.ReadDir(filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sub {
				got[kind] = append(got[kind], filepath.Join(dir, n, s.Name()))
			}
		}
	}
	return got
}

// assertNoMailLeft checks that no message is left anywhere: the spool path
// is gone or empty, and no work file, journal, temp file, quarantined or
// failed message exists. The host lock file may stay.
func assertNoMailLeft(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		t.Fatal(err)
	case fi.IsDir():
		ents, err := os.ReadDir(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			t.Errorf("left in spool directory: %s", e.Name())
		}
	case fi.Size() != 0:
		t.Errorf("spool file %s still holds %d octets", path, fi.Size())
	}
	for kind, files := range privateFiles(t, filepath.Dir(path), filepath.Base(path)) {
		t.Errorf("left behind (%s): %v", kind, files)
	}
}

// snapTree maps every path under dir to its type, mode and content
// digest, to prove that something changed nothing.
func snapTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(h[:])
		}
		snap[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func diffTrees(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, d := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("%s: %s disappeared", what, p)
		} else if a != d {
			t.Errorf("%s: %s changed: %s -> %s", what, p, d, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// countingListener is a TCP listener on loopback that counts and closes
// every connection: a dry run must leave its count at zero.
func countingListener(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), accepted
}
