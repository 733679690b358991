//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// These tests drive the built binary (etrnflushBin, from testmain_test.go)
// through the command-line contract: exit codes, one-line errors, and what
// is (not) changed on disk.

// hostOfLen builds a valid-looking name of n octets out of 63-octet labels.
func hostOfLen(n int) string {
	var labels []string
	for n > 0 {
		l := min(63, n)
		if n-l == 1 { // never leave a remainder too short for dot + label
			l--
		}
		labels = append(labels, strings.Repeat("a", l))
		n -= l
		if n > 0 {
			n-- // the dot
		}
	}
	return strings.Join(labels, ".")
}

func TestCLIBadHost(t *testing.T) {
	if h := hostOfLen(254); len(h) != 254 {
		t.Fatalf("hostOfLen(254) has %d octets", len(h))
	}
	if h := hostOfLen(253); len(h) != 253 {
		t.Fatalf("hostOfLen(253) has %d octets", len(h))
	}
	cases := []struct {
		name, host, reason string
	}{
		{"dotdot-path", "../etc", `"\.\./etc"`},
		{"slash", "a/b", `"a/b"`},
		{"space", "a b", `"a b"`},
		{"empty", "", `""`},
		{"leading-dash", "-x", `"-x"`},
		{"double-dot", "a..b", `"a\.\.b"`},
		{"trailing-dot", "a.example.", `empty label|dot`},
		{"newline", "a\nb", `"a\\nb"`},
		{"tab", "a\tb", `"a\\tb"`},
		{"escape", "a\x1bb", `"a\\x1bb"`},
		{"del", "a\x7fb", `"a\\x7fb"`},
		{"high-octet", "caf\xc3\xa9.example", `not allowed`},
		{"shell", "a;b", `"a;b"`},
		{"dollar", "$(id)", `"\$\(id\)"`},
		{"at-only", "@", `empty`},
		{"hash-only", "#", `empty`},
		{"254-octets", hostOfLen(254), `253`},
		{"label-64", strings.Repeat("b", 64) + ".example", `63`},
		{"label-dash", "a-.example", `'-'|hyphen`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			spool := filepath.Join(dir, "spool")
			for _, args := range [][]string{
				{"--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "test.example", "--", tc.host},
				{"--spool", spool, "--dry-run", "--", tc.host},
				{"flush", "--spool", spool, "--", tc.host},
				{"check-config", "--", tc.host},
			} {
				_, stderr, code := runEtrnflush(t, args...)
				if code != exUsage {
					t.Errorf("%q: exit %d, want %d; stderr:\n%s", args, code, exUsage, stderr)
				}
				line := oneErrorLine(t, stderr)
				if !strings.HasPrefix(line, "etrnflush: error: invalid host \"") {
					t.Errorf("%q: error line %q does not start with `invalid host \"`", args, line)
				}
				if ok, _ := regexp.MatchString(tc.reason, line); !ok {
					t.Errorf("%q: error line %q does not match %q", args, line, tc.reason)
				}
				if names := dirNames(t, dir); len(names) != 0 {
					t.Fatalf("%q: files created: %q", args, names)
				}
			}
		})
	}
}

func TestCLIGoodHostFolded(t *testing.T) {
	cases := []struct{ name, arg, host string }{
		{"at-mixed-case", "@Good.Example", "good.example"},
		{"hash-queue", "#queue", "queue"},
		{"mixed-case", "MiXeD-Case.Example", "mixed-case.example"},
		{"one-letter", "x", "x"},
		{"digits-hyphens", "a1.b-2.example", "a1.b-2.example"},
		{"253-octets", hostOfLen(253), hostOfLen(253)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			spool := filepath.Join(dir, "spool")
			_, stderr, code := runEtrnflush(t, "--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "test.example", "--", tc.arg)
			if code != exOK {
				t.Fatalf("exit %d, want 0 (nothing to send); stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "event=summary host="+tc.host+" sent=0 ") {
				t.Errorf("no summary for host=%s in stderr:\n%s", tc.host, stderr)
			}
			// At most the per-host lock and the state file of the last
			// flush may stay, and they carry the folded name (a name too
			// long for the file system is shortened with a digest, within
			// the 255-octet limit).
			for _, n := range dirNames(t, dir) {
				ext := filepath.Ext(n)
				short := len(n) <= 255 && len(tc.host) > 200 && strings.HasPrefix(n, ".etrnflush-"+tc.host[:120]) && (ext == ".lock" || ext == ".last")
				if n != ".etrnflush-"+tc.host+".lock" && n != ".etrnflush-"+tc.host+".last" && !short {
					t.Errorf("unexpected file %q in the spool directory", n)
				}
			}
			out, stderr, code := runEtrnflush(t, "check-config", tc.arg)
			if code != exOK {
				t.Fatalf("check-config: exit %d; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(out, fmt.Sprintf("[host.%q]\n", tc.host)) {
				t.Errorf("check-config does not show [host.%q]:\n%s", tc.host, out)
			}
		})
	}
}

func TestCLIUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string // regex on the error line
	}{
		{"unknown-flag", []string{"--no-such-flag", "x.example"}, `no-such-flag`},
		{"unknown-short-flag", []string{"-Z", "x.example"}, `-Z`},
		{"unknown-flag-on-flush", []string{"flush", "--no-such-flag", "x.example"}, `no-such-flag`},
		{"unknown-flag-on-check-config", []string{"check-config", "--no-such-flag"}, `no-such-flag`},
		{"typed-with-two-dashes", []string{"flush", "--no-such-flag", "x.example"}, `defined: --no-such-flag$`},
		{"typed-with-one-dash", []string{"flush", "-no-such-flag", "x.example"}, `defined: -no-such-flag$`},
		{"missing-log-value", []string{"flush", "x.example", "--log"}, `HOST|argument`},
		{"log-needs-value", []string{"flush", "--log"}, `needs an argument: --log$`},
		{"not-a-number", []string{"--max-inflight", "many", "x.example"}, `"many" for flag --max-inflight: not a whole number$`},
		{"flush-flag-before-list", []string{"--to", "192.0.2.1", "list"}, `--(to|spool) does not apply to list$`},
		{"dry-run-before-check-config", []string{"--dry-run", "check-config"}, `--(dry-run|spool) does not apply to check-config$`},
		{"no-host", nil, `HOST`},
		{"two-hosts", []string{"a.example", "b.example"}, `HOST|argument`},
		{"flag-after-host", []string{"x.example", "--dry-run"}, `HOST|argument`},
		{"bad-tls", []string{"--tls", "maybe", "x.example"}, `tls.*maybe`},
		{"bad-format", []string{"--format", "mbox", "x.example"}, `format.*mbox`},
		{"bad-timeout", []string{"--timeout", "soon", "x.example"}, `timeout|soon`},
		{"negative-timeout", []string{"--timeout", "-1s", "x.example"}, `timeout`},
		{"bad-port", []string{"--to", "127.0.0.1:99999", "x.example"}, `to.*port`},
		{"bad-to", []string{"--to", "a/b:25", "x.example"}, `to`},
		{"helo-localhost", []string{"--helo", "localhost", "x.example"}, `helo.*localhost`},
		{"relative-log", []string{"--log", "etrnflush.log", "x.example"}, `log`},
		{"missing-value", []string{"x.example", "--spool"}, `.`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"--spool", filepath.Join(dir, "spool")}, tc.args...)
			stdout, stderr, code := runEtrnflush(t, args...)
			if code != exUsage {
				t.Fatalf("%q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, exUsage, stdout, stderr)
			}
			line := oneErrorLine(t, stderr)
			if ok, _ := regexp.MatchString(tc.want, line); !ok {
				t.Errorf("error line %q does not match %q", line, tc.want)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("files created: %q", names)
			}
		})
	}
}

func TestCLIHelpAndVersion(t *testing.T) {
	out, stderr, code := runEtrnflush(t, "--help")
	if code != exOK {
		t.Fatalf("--help: exit %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"--config", "--spool", "--dry-run", "check-config"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %s:\n%s", want, out)
		}
	}
	out, stderr, code = runEtrnflush(t, "--version")
	if code != exOK || !strings.Contains(out, "etrnflush") {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// TestCLIBadConfig runs every case of testdata/badconfig: a directory with
// etrnflush.toml (absent for the missing-file case) and expected-error, a
// regex the one error line must match. Exit status 78, and nothing touched.
func TestCLIBadConfig(t *testing.T) {
	cases, err := filepath.Glob("testdata/badconfig/c-*")
	if err != nil || len(cases) < 10 {
		t.Fatalf("bad config cases: %d found, err %v", len(cases), err)
	}
	for _, c := range cases {
		t.Run(filepath.Base(c), func(t *testing.T) {
			abs, err := filepath.Abs(c)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(abs, "expected-error"))
			if err != nil {
				t.Fatalf("case without expected-error: %v", err)
			}
			re, err := regexp.Compile(strings.TrimSpace(string(want)))
			if err != nil {
				t.Fatalf("expected-error is not a regex: %v", err)
			}
			cfg := filepath.Join(abs, "etrnflush.toml")
			dir := t.TempDir()
			spool := filepath.Join(dir, "spool")
			for _, args := range [][]string{
				{"-c", cfg, "--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "test.example", "good.example"},
				{"-c", cfg, "--spool", spool, "--dry-run", "good.example"},
				{"-c", cfg, "check-config"},
				{"-c", cfg, "check-config", "good.example"},
				{"--config", cfg, "flush", "--spool", spool, "good.example"},
			} {
				_, stderr, code := runEtrnflush(t, args...)
				if code != exConfig {
					t.Errorf("%q: exit %d, want %d; stderr:\n%s", args, code, exConfig, stderr)
					continue
				}
				line := oneErrorLine(t, stderr)
				if !re.MatchString(line) {
					t.Errorf("%q: error line\n  %s\ndoes not match\n  %s", args, line, re)
				}
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("files created: %q", names)
			}
		})
	}
}

// TestCLIConfigFromEnvironment: ETRNFLUSH_CONFIG names the file as -c does,
// so a missing one is an error, and -c wins over it.
func TestCLIConfigFromEnvironment(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.toml")
	good := filepath.Join(t.TempDir(), "good.toml")
	if err := os.WriteFile(good, []byte("log = \"stderr\"\nspool_dir = \"/srv/from-flag\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ETRNFLUSH_CONFIG", missing)
	_, stderr, code := runEtrnflush(t, "check-config")
	if code != exConfig {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exConfig, stderr)
	}
	if line := oneErrorLine(t, stderr); !strings.Contains(line, missing) {
		t.Errorf("error line %q does not name %s", line, missing)
	}
	out, stderr, code := runEtrnflush(t, "-c", good, "check-config", "x.example")
	if code != exOK {
		t.Fatalf("-c over ETRNFLUSH_CONFIG: exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(out, `spool = "/srv/from-flag/x.example"`) {
		t.Errorf("-c did not win over ETRNFLUSH_CONFIG:\n%s", out)
	}
}

// TestCLICheckConfig checks the settings printed for a host, one key at a
// time, through each layer: flag > host table > global key > default.
func TestCLICheckConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "etrnflush.toml")
	const text = `log = "stderr"
spool_dir = "/srv/etrn"
tls = "encrypt"
timeout = "90s"
helo = "mx.isp.example"

[host."dialup.example"]
route = "192.0.2.17:2525"
tls = "none"
helo = "relay.isp.example"
spool = "/srv/other/dialup"
format = "bsmtp"
`
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		layer string
		flags []string
		host  string
		key   string
		want  string
	}{
		{"default", nil, "other.example", "format", "auto"},
		{"default", nil, "other.example", "data_timeout", "10m0s"},
		{"global", nil, "other.example", "tls", "encrypt"},
		{"global", nil, "other.example", "timeout", "1m30s"},
		{"global", nil, "other.example", "helo", "mx.isp.example"},
		{"global", nil, "other.example", "spool", "/srv/etrn/other.example"},
		{"global", nil, "dialup.example", "timeout", "1m30s"},
		{"host", nil, "dialup.example", "tls", "none"},
		{"host", nil, "dialup.example", "helo", "relay.isp.example"},
		{"host", nil, "dialup.example", "spool", "/srv/other/dialup"},
		{"host", nil, "dialup.example", "route", "192.0.2.17:2525"},
		{"host", nil, "dialup.example", "format", "bsmtp"},
		{"flag", []string{"--tls", "verify"}, "dialup.example", "tls", "verify"},
		{"flag", []string{"--helo", "flag.example"}, "dialup.example", "helo", "flag.example"},
		{"flag", []string{"--spool", "/tmp/flag-spool"}, "dialup.example", "spool", "/tmp/flag-spool"},
		{"flag", []string{"--to", "192.0.2.99:26"}, "dialup.example", "route", "192.0.2.99:26"},
		{"flag", []string{"--timeout", "7s"}, "dialup.example", "timeout", "7s"},
		{"flag", []string{"--format", "auto"}, "dialup.example", "format", "auto"},
		{"flag", []string{"--tls", "may"}, "other.example", "tls", "may"},
	}
	for _, tc := range cases {
		t.Run(tc.layer+"/"+tc.host+"/"+tc.key, func(t *testing.T) {
			args := append(append([]string{"-c", cfg}, tc.flags...), "check-config", tc.host)
			out, stderr, code := runEtrnflush(t, args...)
			if code != exOK {
				t.Fatalf("%q: exit %d; stderr:\n%s", args, code, stderr)
			}
			// other.example has no table: its settings are shown
			// commented out.
			line := fmt.Sprintf("%s = %q\n", tc.key, tc.want)
			if !strings.Contains(out, line) {
				t.Errorf("%q: want line %q in:\n%s", args, line, out)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		out, stderr, code := runEtrnflush(t, "-c", cfg, "check-config", "other.example")
		if code != exOK {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr)
		}
		for _, want := range []string{"\n# # route not set: the MX hosts of other.example\n", "\n# # tls_name not set: other.example\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("check-config does not say %q:\n%s", want, out)
			}
		}
	})
	t.Run("all-hosts", func(t *testing.T) {
		out, stderr, code := runEtrnflush(t, "-c", cfg, "check-config")
		if code != exOK {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr)
		}
		for _, want := range []string{`spool_dir = "/srv/etrn"`, `[host."dialup.example"]`, `route = "192.0.2.17:2525"`} {
			if !strings.Contains(out, want) {
				t.Errorf("check-config without HOST does not print %s:\n%s", want, out)
			}
		}
	})
}

// expectedMessages reads the fixture oracle for one spool file or directory.
type expectedMessage struct {
	Sender     string   `json:"sender"`
	Recipients []string `json:"recipients"`
}

func expectedEnvelopes(t *testing.T, prefix string) []string {
	t.Helper()
	data, err := os.ReadFile("testdata/exim/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Messages []expectedMessage `json:"messages"`
	}
	if err := json.Unmarshal(data, &all); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range all {
		if k == prefix || strings.HasPrefix(k, prefix+"/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var envs []string
	for _, k := range keys {
		for _, m := range all[k].Messages {
			envs = append(envs, envelope(m.Sender, m.Recipients))
		}
	}
	if len(envs) == 0 {
		t.Fatalf("no messages for %s in expected.json", prefix)
	}
	return envs
}

func envelope(from string, to []string) string {
	rc := make([]string, len(to))
	for i, r := range to {
		rc[i] = "<" + r + ">"
	}
	return "from=<" + from + "> to=" + strings.Join(rc, ",")
}

var wouldSend = regexp.MustCompile(`^event=would-send host=\S+ id=(\S+) (?:message_id=\S+ )?(?:exim_id=\S+ )?(from=<[^>]*> to=\S+) size=([0-9]+)$`)

// dryRunEnvelopes runs --dry-run and returns the envelope of every message
// listed, in order.
func dryRunEnvelopes(t *testing.T, spool, host string, extra ...string) []string {
	t.Helper()
	args := append([]string{"--spool", spool, "--dry-run"}, extra...)
	out, stderr, code := runEtrnflush(t, append(args, host)...)
	if code != exOK {
		t.Fatalf("--dry-run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	var envs []string
	ids := map[string]bool{}
	summary := false
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		m := wouldSend.FindStringSubmatch(line)
		switch {
		case m != nil:
			if ids[m[1]] {
				t.Errorf("--dry-run lists id %s twice", m[1])
			}
			ids[m[1]] = true
			if m[3] == "0" {
				t.Errorf("--dry-run: size 0 in %q", line)
			}
			envs = append(envs, m[2])
		case strings.Contains(line, "summary") && strings.Contains(line, "host="+host):
			summary = true
		case strings.HasPrefix(line, "event=would-quarantine"):
			t.Errorf("--dry-run would quarantine a fixture: %q", line)
		default:
			t.Errorf("--dry-run: unexpected stdout line %q", line)
		}
	}
	if !summary {
		t.Errorf("--dry-run printed no summary for host=%s:\n%s", host, out)
	}
	return envs
}

// TestCLIDryRun: --dry-run on a copy of real Exim spools lists every
// message with its envelope, connects nowhere and changes nothing.
func TestCLIDryRun(t *testing.T) {
	for _, tc := range []struct {
		name, fixture, host string
	}{
		{"file", "bsmtp/file/h1.bsmtp.example", "h1.bsmtp.example"},
		{"file-crlf", "bsmtp/file-crlf/h1.bsmtp-crlf.example", "h1.bsmtp-crlf.example"},
		{"dir", "bsmtp/dir/h1.bsmtp-dir.example", "h1.bsmtp-dir.example"},
		{"mailstore", "mailstore/plain/h1.mailstore.example", "h1.mailstore.example"},
		{"maildir", "maildir/batched/h1.maildir.example", "h1.maildir.example"},
		{"maildir-nobatch", "maildir/nobatch/h1.maildir-nobatch.example", "h1.maildir-nobatch.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join("testdata/exim", tc.fixture)
			info, err := os.Stat(src)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			spool := filepath.Join(dir, tc.host)
			if info.IsDir() {
				copyTree(t, src, spool)
			} else {
				copyFile(t, src, spool)
			}
			// A listener that must never see a connection.
			addr, accepted := countingListener(t)

			before := treeSnapshot(t, dir)
			got := dryRunEnvelopes(t, spool, tc.host, "--to", addr, "--tls", "none")
			after := treeSnapshot(t, dir)
			if d := diffSnapshots(before, after); d != "" {
				t.Errorf("--dry-run changed the spool directory:\n%s", d)
			}
			if n := accepted.Load(); n != 0 {
				t.Errorf("--dry-run connected %d times", n)
			}
			want := expectedEnvelopes(t, tc.fixture)
			if info.IsDir() {
				// Directory order is by mtime, which a copy does not keep.
				sort.Strings(got)
				sort.Strings(want)
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("--dry-run listed\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

func TestCLINothingToSend(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, spool string)
	}{
		{"missing", func(*testing.T, string) {}},
		{"empty-file", func(t *testing.T, spool string) {
			if err := os.WriteFile(spool, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty-dir", func(t *testing.T, spool string) {
			if err := os.Mkdir(spool, 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{"dir-with-exim-temp-file", func(t *testing.T, spool string) {
			if err := os.Mkdir(spool, 0o700); err != nil {
				t.Fatal(err)
			}
			// Exim is still writing it: not a message yet.
			if err := os.WriteFile(filepath.Join(spool, "temp.1234.mx.isp.example"), []byte("MAIL FROM:<a@b.example>\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			spool := filepath.Join(dir, "quiet.example")
			tc.setup(t, spool)
			before := treeSnapshot(t, dir)
			delete(before, ".etrnflush-quiet.example.lock")
			_, stderr, code := runEtrnflush(t, "--spool", spool, "--to", "127.0.0.1:1", "--tls", "none", "--helo", "test.example", "quiet.example")
			if code != exOK {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "event=summary host=quiet.example sent=0 deferred=0 failed=0 quarantined=0 uncertain=0 partial=0 messages=0 rcpts=0 ") {
				t.Errorf("no empty summary in stderr:\n%s", stderr)
			}
			after := treeSnapshot(t, dir)
			delete(after, ".etrnflush-quiet.example.lock")
			delete(after, ".etrnflush-quiet.example.last") // the run's record, for list
			if d := diffSnapshots(before, after); d != "" {
				t.Errorf("an empty flush changed the spool directory:\n%s", d)
			}
		})
	}
}

// TestCLIConnectionRefused: with the host unreachable, exit 75 and every
// message is still there; the only change allowed is the claim (the spool
// file renamed to a work file, byte for byte the same).
func TestCLIConnectionRefused(t *testing.T) {
	const host = "h1.bsmtp.example"
	src := filepath.Join("testdata/exim/bsmtp/file", host)
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	spool := filepath.Join(dir, host)
	copyFile(t, src, spool)
	want := dryRunEnvelopes(t, spool, host)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		start := time.Now()
		_, stderr, code := runEtrnflush(t, "--spool", spool, "--to", addr, "--tls", "none", "--helo", "test.example", "--timeout", "10s", host)
		if code != exTempFail {
			t.Fatalf("run %d: exit %d, want %d; stderr:\n%s", run, code, exTempFail, stderr)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("run %d: a refused connection took %s", run, time.Since(start))
		}
		if !strings.Contains(stderr, "event=summary host="+host+" sent=0 ") {
			t.Errorf("run %d: no summary in stderr:\n%s", run, stderr)
		}

		// What is on disk: the spool file or work files holding the same
		// bytes, and nothing else but the lock and journals.
		var held bytes.Buffer
		if data, err := os.ReadFile(spool); err == nil {
			held.Write(data)
		}
		var work []string
		for _, n := range dirNames(t, dir) {
			switch {
			case n == host:
			case n == ".etrnflush-"+host+".lock", n == ".etrnflush-"+host+".last":
			case strings.HasPrefix(n, ".etrnflush-"+host+".") && strings.HasSuffix(n, ".work"):
				work = append(work, n)
			case strings.HasPrefix(n, ".etrnflush-"+host+".") && strings.HasSuffix(n, ".journal"):
			default:
				t.Errorf("run %d: unexpected entry %q next to the spool", run, n)
			}
		}
		sort.Strings(work)
		for _, n := range work {
			f, err := os.Open(filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(&held, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(held.Bytes(), orig) {
			t.Errorf("run %d: the spool and work files hold %d bytes, not the original %d", run, held.Len(), len(orig))
		}
		if got := dryRunEnvelopes(t, spool, host); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("run %d: after the refused run the spool lists\n  %s\nwant\n  %s", run, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}

// TestDemoSpool keeps `make demo` honest: its sample spool parses cleanly
// and holds the cases the demo promises (multi-recipient, 8-bit, dots, a
// 550 and a 451 recipient for the demo sink).
func TestDemoSpool(t *testing.T) {
	dir := t.TempDir()
	spool := filepath.Join(dir, "demo.example")
	copyFile(t, "testdata/demo/spool/demo.example", spool)
	before := treeSnapshot(t, dir)
	got := dryRunEnvelopes(t, spool, "demo.example")
	if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
		t.Errorf("--dry-run changed the demo spool:\n%s", d)
	}
	want := []string{
		envelope("alice@sender.example", []string{"ann@demo.example"}),
		envelope("alice@sender.example", []string{"bob@demo.example", "carol@demo.example", "reject550-dave@demo.example"}),
		envelope("chloe@sender.example", []string{"erin@demo.example"}),
		envelope("alice@sender.example", []string{"frank@demo.example"}),
		envelope("", []string{"postmaster@demo.example"}),
		envelope("alice@sender.example", []string{"defer451-gina@demo.example", "hank@demo.example"}),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("demo spool lists\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	data, err := os.ReadFile(spool)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n..hidden\n", "\n..\n", "Grüße"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("demo spool lacks %q", want)
		}
	}
}

// TestCLIClosesInheritedDescriptors: Exim starts its ETRN command with its
// lookup file and a pipe still open (../shared/reference/exim.md, surprise
// 14). A flush that waits on a slow host must not hold them: here the write
// end of a pipe is handed to the binary, which then waits on a server that
// never greets; the read end must see EOF long before the run ends.
func TestCLIClosesInheritedDescriptors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the listener goes
		}
	}()
	dir := t.TempDir()
	spool := filepath.Join(dir, "slow.example")
	if err := os.WriteFile(spool, []byte("MAIL FROM:<a@s.example>\nRCPT TO:<b@slow.example>\nDATA\nSubject: x\n\nbody\n.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(etrnflushBin, "--spool", spool, "--to", l.Addr().String(), "--tls", "none",
		"--helo", "test.example", "--timeout", "4s", "slow.example")
	cmd.Env = childEnv()
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	eof := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(io.Discard, r)
		eof <- time.Since(start)
	}()
	var took time.Duration
	select {
	case took = <-eof:
	case <-time.After(runTimeout):
		t.Fatal("the pipe never saw EOF")
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exTempFail {
		t.Errorf("run against a silent server: %v, want exit %d", err, exTempFail)
	}
	if ran := time.Since(start); took > ran/2 {
		t.Errorf("inherited pipe closed after %s of a %s run: it was held, not closed at start", took, ran)
	}
}

// TestCLIOptionPlacement: the flush options work before and after the
// command word, and after "--" a command word is a host name. Before this
// was fixed, "--dry-run flush HOST" ran a real flush, and
// "-- check-config" (a host name from the network) printed the config.
func TestCLIOptionPlacement(t *testing.T) {
	mkSpool := func(t *testing.T, host string) (string, map[string]string) {
		dir := t.TempDir()
		spool := filepath.Join(dir, host)
		if err := os.WriteFile(spool, []byte("MAIL FROM:<a@s.example>\nRCPT TO:<b@"+host+">\nDATA\nSubject: x\n\nbody\n.\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return spool, treeSnapshot(t, dir)
	}
	for _, args := range [][]string{
		{"--dry-run", "flush", "--to", "127.0.0.1:1", "place.example"},
		{"--dry-run", "--to", "127.0.0.1:1", "flush", "place.example"},
		{"flush", "--dry-run", "--to", "127.0.0.1:1", "place.example"},
		{"--to", "127.0.0.1:1", "--dry-run", "--", "place.example"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			spool, before := mkSpool(t, "place.example")
			full := append([]string{"--spool", spool}, args...)
			if args[0] == "flush" {
				full = append([]string{"flush", "--spool", spool}, args[1:]...)
			}
			stdout, stderr, code := runEtrnflush(t, full...)
			if code != exOK || !strings.Contains(stdout, "event=would-send ") {
				t.Fatalf("exit %d, stdout %q, stderr %q: not a dry run", code, stdout, stderr)
			}
			if d := diffSnapshots(before, treeSnapshot(t, filepath.Dir(spool))); d != "" {
				t.Errorf("the dry run changed the spool directory:\n%s", d)
			}
		})
	}
	t.Run("timeout before the command word", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "c.toml")
		if err := os.WriteFile(cfg, []byte("log = \"stderr\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := runEtrnflush(t, "-c", cfg, "--timeout", "17s", "--tls", "verify", "check-config", "place.example")
		if code != exOK || !strings.Contains(out, `timeout = "17s"`) || !strings.Contains(out, `tls = "verify"`) {
			t.Errorf("exit %d; check-config printed\n%s\nstderr %s", code, out, stderr)
		}
	})
	for _, word := range []string{"check-config", "help", "h", "flush"} {
		t.Run("-- "+word, func(t *testing.T) {
			spool, _ := mkSpool(t, word)
			stdout, stderr, code := runEtrnflush(t, "--spool", spool, "--dry-run", "--", word)
			if code != exOK || !strings.Contains(stdout, "event=would-send ") || !strings.Contains(stdout, "host="+word+" ") {
				t.Errorf("%q after -- was not taken as the host: exit %d, stdout %q, stderr %q", word, code, stdout, stderr)
			}
		})
	}
}
