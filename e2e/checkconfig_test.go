//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigAllErrors: a file with three errors gets all three in
// one run, in file order, each with its hint; a flush names the first
// and says how many more there are.
func TestCheckConfigAllErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "etrnflush.toml")
	// Found in another order than written: the host table is checked
	// after the global keys, and the unknown key before any value.
	text := `log = "stderr"
tls = "sometimes"

[host.cust1.example]
route = "192.0.2.1"

[host."b.example"]
tls = "none"
rout = "192.0.2.2"
`
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runEtrnflush(t, "-c", cfg, "check-config")
	if code != exConfig {
		t.Fatalf("exit %d, want %d\n%s", code, exConfig, stderr)
	}
	want := []string{
		cfg + `:2: key "tls": "sometimes" is not one of none, may, encrypt, verify`,
		cfg + `:4: key "host.cust1.example": unknown key: [host.cust1.example] is read as host "cust1" with a table "example"; a name with dots must be quoted: [host."cust1.example"]`,
		cfg + `:9: key host."b.example".rout: unknown key; did you mean "route"?`,
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), stderr)
	}
	for i, w := range want {
		if lines[i] != "etrnflush: error: "+w {
			t.Errorf("line %d:\n  %s\nwant\n  etrnflush: error: %s", i+1, lines[i], w)
		}
	}
	_, stderr, code = runEtrnflush(t, "-c", cfg, "--dry-run", "x.example")
	if line := oneErrorLine(t, stderr); code != exConfig || !strings.HasPrefix(line, "etrnflush: error: "+want[0]) ||
		!strings.HasSuffix(line, "(and 2 more; etrnflush check-config lists them all)") {
		t.Errorf("flush: exit %d, %s", code, line)
	}
}

// TestCheckConfigLoadsBack: what check-config prints is a configuration
// that check-config accepts and prints the same way, with or without a
// HOST and flags.
func TestCheckConfigLoadsBack(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "alice.secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, `tls = "encrypt"
helo = "mx.isp.example"
warn_age = "2d"
sendmail = ["/usr/sbin/exim", "-f", "<>", "--"]

[host."a.example"]
route = "192.0.2.17:2525"
tls = "none"
chunking = false

[host."b.example"]
format = "bsmtp"
spool = "/srv/other/b"

[serve]
etrn_clients = ["192.0.2.0/24"]

[user.alice]
secret_file = "`+secret+`"
hosts = ["a.example"]
`)
	for _, args := range [][]string{
		{"check-config"},
		{"check-config", "a.example"},
		{"--timeout", "7s", "check-config", "--to", "192.0.2.99:26", "--no-pipelining", "b.example"},
		{"check-config", "unknown.example"},
	} {
		out, stderr, code := runEtrnflush(t, append([]string{"-c", cfg}, args...)...)
		if code != exOK {
			t.Fatalf("%q: exit %d\n%s", args, code, stderr)
		}
		back := filepath.Join(t.TempDir(), "back.toml")
		if err := os.WriteFile(back, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		// Loaded back, the flags are in the file: the same HOST alone
		// gives the same settings.
		again := []string{"-c", back, "check-config"}
		if host := args[len(args)-1]; host != "check-config" {
			again = append(again, host)
		}
		out2, stderr, code := runEtrnflush(t, again...)
		if code != exOK {
			t.Fatalf("%q: the output does not load back: exit %d\n%s\noutput was:\n%s", args, code, stderr, out)
		}
		_, rest, _ := strings.Cut(out, "\n")
		_, rest2, _ := strings.Cut(out2, "\n")
		if rest != rest2 {
			t.Errorf("%q: loaded back, check-config prints\n%s\nnot\n%s", args, rest2, rest)
		}
	}
	out, _, _ := runEtrnflush(t, "-c", cfg, "--timeout", "7s", "check-config", "--to", "192.0.2.99:26", "b.example")
	for _, want := range []string{"\ntimeout = \"7s\"\n", "\n[host.\"b.example\"]\nroute = \"192.0.2.99:26\"\n", "\nwarn_age = \"2d\"\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckConfigUnconfiguredHost: a HOST without a table is marked so,
// its settings are shown commented out (loaded back, the output must
// not configure it), and one with nothing held gets a warning.
func TestCheckConfigUnconfiguredHost(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "[host.\"known.example\"]\nroute = \"192.0.2.1\"\n")
	out, stderr, code := runEtrnflush(t, "-c", cfg, "check-config", "misspelt.example")
	if code != exOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(out, "\n# host \"misspelt.example\" is not configured (no [host.\"misspelt.example\"] table)") ||
		strings.Contains(out, "\n[host.") || !strings.Contains(out, "\n# spool = \""+filepath.Join(dir, "misspelt.example")+"\"\n") {
		t.Errorf("not marked as unconfigured:\n%s", out)
	}
	if !strings.Contains(stderr, "etrnflush: warning: host misspelt.example is not configured and nothing is held for it in "+filepath.Join(dir, "misspelt.example")+": is the name misspelt?") {
		t.Errorf("no warning:\n%s", stderr)
	}
	// Something held: not a typo, no warning.
	if err := os.WriteFile(filepath.Join(dir, "held.example"), []byte(bsmtpEntry("a@s.example", "b@held.example", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runEtrnflush(t, "-c", cfg, "check-config", "held.example"); code != exOK || strings.Contains(stderr, "held.example") {
		t.Errorf("held.example: exit %d\n%s", code, stderr)
	}
}

// TestCheckConfigEnvironment: what the file names is checked on this
// machine, as warnings (exit 0): a missing spool directory, an unreadable
// password file, a log that cannot be created, a route that does not
// resolve; a good setup gets none.
func TestCheckConfigEnvironment(t *testing.T) {
	dir := t.TempDir()
	good := writeConfig(t, dir, "[host.\"a.example\"]\nroute = \"192.0.2.1:25\"\n")
	if os.Geteuid() == 0 {
		// As Exim's would be: root acts as the owner.
		if _, stderr, _ := runEtrnflush(t, "-c", good, "check-config"); !strings.Contains(stderr, "etrnflush: warning: spool directory "+dir+" belongs to root: ") {
			t.Errorf("no warning for a spool directory of root's:\n%s", stderr)
		}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr, code := runEtrnflush(t, "-c", good, "check-config"); code != exOK || stderr != "" {
		t.Errorf("good setup: exit %d, warnings:\n%s", code, stderr)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	text := `spool_dir = "` + dir + `/missing"
log = "` + dir + `/no-such-dir/etrnflush.log"
[host."a.example"]
route = "no-such-name.invalid:2525"
tls = "verify"
auth_user = "a"
auth_password_file = "` + dir + `/no-such.pw"
`
	if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runEtrnflush(t, "-c", bad, "check-config")
	if code != exOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"etrnflush: warning: spool directory " + dir + "/missing does not exist",
		"etrnflush: warning: host a.example: auth_password_file: open " + dir + "/no-such.pw: no such file or directory",
		"etrnflush: warning: log " + dir + "/no-such-dir/etrnflush.log does not exist and ",
		"etrnflush: warning: host a.example: route no-such-name.invalid:2525: no-such-name.invalid does not resolve",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no warning %q in:\n%s", want, stderr)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the spool owner's rights are checked for a run as root")
	}
	// Root acts as the spool directory's owner: one that cannot write
	// its own directory cannot flush it, though root could.
	ro := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(ro, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, ro, "")
	_, stderr, _ = runEtrnflush(t, "-c", cfg, "check-config")
	if !strings.Contains(stderr, "etrnflush: warning: spool directory "+ro+" is not writable by user ") {
		t.Errorf("no warning for a spool directory its owner cannot write:\n%s", stderr)
	}
}
