package spool

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRenameNoReplaceFallback: where renameat2 is missing (the BSDs, or
// a file system without RENAME_NOREPLACE) link and unlink move a file and
// refuse an existing name just as renameat2 does.
func TestRenameNoReplaceFallback(t *testing.T) {
	for _, e := range []error{nil, unix.ENOSYS, unix.EINVAL} {
		t.Run(errName(e), func(t *testing.T) {
			if e != nil {
				saved := renameat2NoReplace
				renameat2NoReplace = func(string, string) error { return e }
				t.Cleanup(func() { renameat2NoReplace = saved })
			}
			dir := t.TempDir()
			a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
			for _, p := range []string{a, c} {
				if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := renameNoReplace(a, b); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(b); err != nil || string(got) != a {
				t.Errorf("b: %q, %v", got, err)
			}
			if _, err := os.Lstat(a); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a is still there: %v", err)
			}
			if err := renameNoReplace(b, c); !errors.Is(err, os.ErrExist) {
				t.Errorf("onto an existing name: %v, want ErrExist", err)
			}
			for p, want := range map[string]string{b: a, c: c} {
				if got, err := os.ReadFile(p); err != nil || string(got) != want {
					t.Errorf("%s after the refused rename: %q, %v", p, got, err)
				}
			}
		})
	}
}

func errName(e error) string {
	if e == nil {
		return "renameat2"
	}
	return e.Error()
}
