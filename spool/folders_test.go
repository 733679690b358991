package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// TestHolds: a spool counts as holding mail when its path exists or when
// a claim left a work file or journal beside it (the spool file itself is
// then gone); neither means nothing to flush.
func TestHolds(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.example")
	check := func(want bool) {
		t.Helper()
		got, err := Holds(p)
		if err != nil || got != want {
			t.Errorf("Holds = %v, %v; want %v", got, err, want)
		}
	}
	check(false)
	if got, err := Holds(filepath.Join(dir, "missing", "h.example")); err != nil || got {
		t.Errorf("Holds in a missing directory = %v, %v", got, err)
	}
	// Another host's work file does not count.
	other := filepath.Join(dir, workName(workPrefix("other.example"), 1))
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	check(false)
	for _, n := range []string{workName(workPrefix("h.example"), 7), workPrefix("h.example") + "00000000000000000007.journal"} {
		w := filepath.Join(dir, n)
		if err := os.WriteFile(w, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		check(true)
		if err := os.Remove(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	check(true)
}
