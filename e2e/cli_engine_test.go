//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIEngineSettings: the engine switches layer like every other
// setting (default, global key, host key, flag), the flags work before and
// after the command word, and a bad --max-inflight is a usage error.
func TestCLIEngineSettings(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "etrnflush.toml")
	const text = `log = "stderr"
max_inflight = 8
chunking = false

[host."dialup.example"]
max_inflight = 2
pipelining = false
coalesce = false
chunking = true
`
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.toml")
	if err := os.WriteFile(empty, []byte("log = \"stderr\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		cfg    string
		before []string // flags before the command word
		after  []string // after it
		host   string
		want   map[string]string
	}{
		{empty, nil, nil, "other.example", map[string]string{"max_inflight": "32", "pipelining": "true", "chunking": "true", "coalesce": "true"}},
		{cfg, nil, nil, "other.example", map[string]string{"max_inflight": "8", "pipelining": "true", "chunking": "false", "coalesce": "true"}},
		{cfg, nil, nil, "dialup.example", map[string]string{"max_inflight": "2", "pipelining": "false", "chunking": "true", "coalesce": "false"}},
		{cfg, []string{"--max-inflight", "5", "--no-chunking"}, nil, "dialup.example", map[string]string{"max_inflight": "5", "chunking": "false", "pipelining": "false"}},
		{empty, []string{"--no-pipelining"}, nil, "other.example", map[string]string{"pipelining": "false", "chunking": "true"}},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			args := append(append([]string{"-c", tc.cfg}, tc.before...), "check-config", tc.host)
			out, stderr, code := runEtrnflush(t, args...)
			if code != exOK {
				t.Fatalf("%q: exit %d; stderr:\n%s", args, code, stderr)
			}
			for k, v := range tc.want {
				if line := k + " = " + v + "\n"; !strings.Contains(out, line) {
					t.Errorf("%q: want line %q in:\n%s", args, line, out)
				}
			}
		})
	}

	// Before and after "flush": the run must take them. A dry run shows
	// nothing of the engine, so a bad value proves the flag was read.
	spool := filepath.Join(t.TempDir(), "place.example")
	if err := os.WriteFile(spool, []byte("MAIL FROM:<a@s.example>\nRCPT TO:<b@place.example>\nDATA\nSubject: x\n\nbody\n.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--max-inflight", "0", "flush", "--spool", spool, "--dry-run", "place.example"},
		{"flush", "--max-inflight", "1001", "--spool", spool, "--dry-run", "place.example"},
		{"--max-inflight", "-3", "--spool", spool, "--dry-run", "place.example"},
	} {
		_, stderr, code := runEtrnflush(t, append([]string{"-c", empty}, args...)...)
		if code != exUsage || !strings.Contains(stderr, "--max-inflight") {
			t.Errorf("%q: exit %d, stderr %q; want %d naming --max-inflight", args, code, stderr, exUsage)
		}
	}
	for _, args := range [][]string{
		{"--max-inflight", "3", "--no-pipelining", "--no-chunking", "flush", "--spool", spool, "--dry-run", "place.example"},
		{"flush", "--max-inflight", "3", "--no-pipelining", "--no-chunking", "--spool", spool, "--dry-run", "place.example"},
	} {
		out, stderr, code := runEtrnflush(t, append([]string{"-c", empty}, args...)...)
		if code != exOK || !strings.Contains(out, "event=would-send ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, stderr)
		}
	}
}
