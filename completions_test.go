package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// needTools skips (fails under CI=true) when a program the test runs is
// missing.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found (CI=true: .ci/run installs it)", n)
			}
			t.Skipf("%s not found", n)
		}
	}
}

func runCmd(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCompletionsKnowEveryFlag: the bash and zsh completions offer every
// long flag and command the binary has, and bash completes through them.
func TestCompletionsKnowEveryFlag(t *testing.T) {
	flags, commands, _ := appSurface(t)
	for _, p := range []string{"packaging/etrnflush.bash", "packaging/_etrnflush"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, names := range flags {
			for _, n := range names {
				if !regexp.MustCompile(`(^|[\s'"{,()])` + regexp.QuoteMeta(n) + `($|[\s'"\[},)=])`).MatchString(text) {
					t.Errorf("%s does not offer %s", p, n)
				}
			}
		}
		for _, c := range commands {
			if c != "h" && !strings.Contains(text, c) {
				t.Errorf("%s does not offer the command %s", p, c)
			}
		}
	}
	needTools(t, "bash", "zsh")
	runCmd(t, "", nil, "zsh", "-n", "packaging/_etrnflush")
	complete := func(words ...string) []string {
		script := `source packaging/etrnflush.bash
COMP_WORDS=(` + strings.Join(words, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_etrnflush; printf '%s\n' "${COMPREPLY[@]}"`
		out := runCmd(t, "", nil, "bash", "-c", script)
		return strings.Fields(out)
	}
	if got := strings.Join(complete("etrnflush", "check-config", "--t"), " "); got != "--to --tls --timeout" {
		t.Errorf("check-config --t: %q", got)
	}
	if got := strings.Join(complete("etrnflush", "--tls", "v"), " "); got != "verify" {
		t.Errorf("--tls v: %q", got)
	}
	if got := strings.Join(complete("etrnflush", "list", "--j"), " "); got != "--json" {
		t.Errorf("list --j: %q", got)
	}
}
