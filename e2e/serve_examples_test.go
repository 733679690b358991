//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"etrnflush/config"
)

// TestServeExampleConfig: examples/serve.toml loads, shows every [serve]
// and [user.NAME] key, and its hash is what its comment says.
func TestServeExampleConfig(t *testing.T) {
	const p = "examples/serve.toml"
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// It holds a password hash, so it loads only when private; a
	// checkout is 0644 (or 0600 under umask 077): load a 0600 copy.
	priv := filepath.Join(t.TempDir(), "serve.toml")
	if err := os.WriteFile(priv, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(priv, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append(tomlKeys(config.Serve{}), tomlKeys(config.User{})...) {
		if !strings.Contains(string(b), "\n"+k+" ") {
			t.Errorf("%s does not show the key %s", p, k)
		}
	}
	u, ok := c.Users["dialup"]
	if !ok {
		t.Fatalf("%s: no [user.dialup]", p)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte("example only")); err != nil {
		t.Errorf("%s: the hash is not of \"example only\": %v", p, err)
	}
	if port, ok := config.IsClientRoute(c.Hosts["dynamic.example"].Route); !ok || port != "25" {
		t.Errorf("%s: dynamic.example route is not client", p)
	}
}

// keyValues reads "key = value" (xinetd) or "Key=Value" (systemd) lines.
func keyValues(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == '[' || l == "{" || l == "}" {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		kv[strings.TrimSpace(strings.TrimSuffix(k, "+"))] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestServeExampleUnits checks the xinetd service and the systemd socket
// and service pair for the settings serve depends on, then runs the very
// command line each gives (binary and config path pointed at the test's)
// on a connection, as xinetd and systemd would.
func TestServeExampleUnits(t *testing.T) {
	xi := keyValues(t, "examples/xinetd-etrnflush")
	sock := keyValues(t, "examples/etrnflush.socket")
	svc := keyValues(t, "examples/etrnflush@.service")
	for _, c := range []struct {
		what, got, want string
	}{
		{"xinetd socket_type", xi["socket_type"], "stream"},
		{"xinetd wait", xi["wait"], "no"},
		{"xinetd server", xi["server"], "/usr/local/sbin/etrnflush"},
		{"systemd Accept", sock["Accept"], "yes"},
		{"systemd StandardInput", svc["StandardInput"], "socket"},
		{"systemd StandardOutput", svc["StandardOutput"], "socket"},
		{"systemd StandardError", svc["StandardError"], "journal"},
		{"systemd KillMode", svc["KillMode"], "process"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "etrnflush.log")
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf("spool_dir = %q\nlog = %q\nhelo = \"provider.example\"\n", spoolDir, logFile)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, line := range map[string]string{
		"xinetd":  xi["server"] + " " + xi["server_args"],
		"systemd": svc["ExecStart"],
	} {
		t.Run(name, func(t *testing.T) {
			argv := strings.Fields(line)
			if len(argv) < 2 || argv[0] != "/usr/local/sbin/etrnflush" || !slices.Contains(argv, "/etc/etrnflush/etrnflush.toml") {
				t.Fatalf("command line %q", line)
			}
			for i, a := range argv {
				if a == "/etc/etrnflush/etrnflush.toml" {
					argv[i] = conf
				}
			}
			p := startServeArgv(t, argv[1:])
			p.cmd(t, "", 220, "provider.example ESMTP")
			p.cmd(t, "EHLO client.example", 250, "ETRN")
			p.cmd(t, "ETRN unknown.example", 459, "not allowed")
			p.cmd(t, "QUIT", 221, "")
			if code := p.wait(t); code != 0 {
				t.Errorf("exit %d; stderr %q", code, p.stderr.String())
			}
		})
	}
	b, err := os.ReadFile(logFile)
	if err != nil || strings.Count(string(b), "event=connect client=127.0.0.1") != 2 {
		t.Errorf("log (%v):\n%s", err, b)
	}
}

// TestServeExampleSystemdVerify lets systemd judge the unit pair, where
// systemd-analyze exists: an unknown key or a bad value is reported.
func TestServeExampleSystemdVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	for _, name := range []string{"etrnflush.socket", "etrnflush@.service"} {
		b, err := os.ReadFile(filepath.Join("examples", name))
		if err != nil {
			t.Fatal(err)
		}
		// verify wants the ExecStart binary to exist.
		text := strings.ReplaceAll(string(b), "/usr/local/sbin/etrnflush", etrnflushBin)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sa, "verify", "--man=no", "./etrnflush.socket", "./etrnflush@.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestServeExampleTLSUnits runs the command lines of the implicit-TLS
// recipes (xinetd, systemd, and both inetd.conf lines) on a connection:
// the TLS ones do the handshake before the greeting and offer no
// STARTTLS; the plain inetd line greets in clear.
func TestServeExampleTLSUnits(t *testing.T) {
	xi := keyValues(t, "examples/xinetd-etrnflush-tls")
	svc := keyValues(t, "examples/etrnflush-tls@.service")
	sock := keyValues(t, "examples/etrnflush-tls.socket")
	if sock["Accept"] != "yes" || svc["StandardInput"] != "socket" || svc["KillMode"] != "process" || xi["wait"] != "no" {
		t.Errorf("unit settings: socket %v, service %v, xinetd %v", sock, svc, xi)
	}
	lines := map[string]string{
		"xinetd":  xi["server"] + " " + xi["server_args"],
		"systemd": svc["ExecStart"],
	}
	b, err := os.ReadFile("examples/inetd.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || strings.HasPrefix(l, "#") {
			continue
		}
		// service type proto wait user server argv0 args...
		lines["inetd "+f[0]] = f[5] + " " + strings.Join(f[7:], " ")
	}
	if len(lines) != 4 {
		t.Fatalf("command lines found: %q", lines)
	}
	dir := t.TempDir()
	certFile, keyFile, pool := writeTestCert(t, dir)
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf("spool_dir = %q\nlog = %q\nhelo = \"provider.example\"\n[serve]\ntls_cert = %q\ntls_key = %q\n",
		dir, filepath.Join(dir, "etrnflush.log"), certFile, keyFile)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, line := range lines {
		t.Run(name, func(t *testing.T) {
			argv := strings.Fields(line)
			if argv[0] != "/usr/local/sbin/etrnflush" || !slices.Contains(argv, "/etc/etrnflush/etrnflush.toml") {
				t.Fatalf("command line %q", line)
			}
			for i, a := range argv {
				if a == "/etc/etrnflush/etrnflush.toml" {
					argv[i] = conf
				}
			}
			implicit := slices.Contains(argv, "--tls-on-connect")
			if implicit == (name == "inetd odmr") {
				t.Fatalf("%q: --tls-on-connect present=%v", line, implicit)
			}
			p := startServeArgv(t, argv[1:])
			if implicit {
				tc := tls.Client(p.c, &tls.Config{RootCAs: pool, ServerName: "provider.example", MinVersion: tls.VersionTLS12})
				if err := tc.Handshake(); err != nil {
					t.Fatalf("handshake: %v; stderr %q", err, p.stderr.String())
				}
				p.c, p.br = tc, bufio.NewReader(tc)
			}
			p.cmd(t, "", 220, "provider.example ESMTP")
			ehlo := p.cmd(t, "EHLO client.example", 250, "ETRN")
			if strings.Contains(ehlo, "STARTTLS") == implicit {
				t.Errorf("EHLO %q: STARTTLS offered=%v with implicit TLS=%v", ehlo, !implicit, implicit)
			}
			p.cmd(t, "QUIT", 221, "")
			if code := p.wait(t); code != 0 {
				t.Errorf("exit %d; stderr %q", code, p.stderr.String())
			}
		})
	}
}

// tomlKeys lists the keys of a configuration table as config.Load decodes
// it: the toml tags of v's fields, without the nested tables (maps,
// structs). The root package's docs tests have the same helper.
func tomlKeys(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if k := f.Type.Kind(); tag == "" || tag == "-" || k == reflect.Map || k == reflect.Struct {
			continue
		}
		out = append(out, tag)
	}
	return out
}
