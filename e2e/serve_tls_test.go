//go:build e2e

package e2e

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // CRAM-MD5 is HMAC-MD5
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"etrnflush/internal/fakesmtp"
)

// cramResponse answers a CRAM-MD5 challenge line (the text of a 334).
func cramResponse(t *testing.T, challenge64, user, secret string) string {
	t.Helper()
	ch, err := base64.StdEncoding.DecodeString(challenge64)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(md5.New, []byte(secret))
	m.Write(ch)
	return base64.StdEncoding.EncodeToString([]byte(user + " " + hex.EncodeToString(m.Sum(nil))))
}

// TestCLIServeTLSOnConnect: `serve --tls-on-connect` (implicit TLS, the
// odmrs way): the TLS handshake comes first, AUTH and ATRN are offered at
// once without allow_plaintext_auth, STARTTLS is not; a TLS client does
// AUTH CRAM-MD5 with the secret_file's first line and ATRN, and receives
// the spool byte for byte.
func TestCLIServeTLSOnConnect(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	want := holdBSMTP(t, filepath.Join(spoolDir, "odmr.example"), "odmr.example", 3)
	certFile, keyFile, pool := writeTestCert(t, dir)
	secret := filepath.Join(dir, "carol.secret")
	if err := os.WriteFile(secret, []byte("pw of carol\nsecond line is no part of it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "etrnflush.log")
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"

[serve]
tls_cert = %q
tls_key = %q

[user.carol]
secret_file = %q
hosts = ["odmr.example"]
`, spoolDir, logFile, certFile, keyFile, secret)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServeArgv(t, []string{"-c", conf, "serve", "--tls-on-connect"})
	tc := tls.Client(p.c, &tls.Config{RootCAs: pool, ServerName: "provider.example", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v (stderr %q)", err, p.stderr.String())
	}
	p.c, p.br = tc, bufio.NewReader(tc)
	p.cmd(t, "", 220, "provider.example ESMTP")
	ehlo := p.cmd(t, "EHLO customer.example", 250, "AUTH CRAM-MD5 PLAIN LOGIN")
	if !strings.Contains(ehlo, "ATRN") || strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO over implicit TLS: %q", ehlo)
	}
	ch := strings.TrimSpace(p.cmd(t, "AUTH CRAM-MD5", 334, ""))
	p.cmd(t, cramResponse(t, ch, "carol", "pw of carol\nsecond line is no part of it"), 535, "")
	ch = strings.TrimSpace(p.cmd(t, "AUTH CRAM-MD5", 334, ""))
	p.cmd(t, cramResponse(t, ch, "carol", "pw of carol"), 235, "")
	p.cmd(t, "ATRN odmr.example", 250, "reversing")

	rcv := &fakesmtp.Server{Domain: "customer.example"}
	go func() { _ = rcv.Serve(fakesmtp.OneConn(tc)) }()
	select {
	case <-rcv.LoggedOut():
	case <-time.After(60 * time.Second):
		t.Fatal("the provider did not end the session")
	}
	if err := rcv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Error(err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("serve exited %d; stderr %q", code, p.stderr.String())
	}
	if got := received(rcv); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("received\n%q\nwant\n%q", got, want)
	}
	logText, _ := os.ReadFile(logFile)
	for _, w := range []string{"auth=CRAM-MD5 user=\"carol\" status=ok", "tls=true", "event=summary host=odmr.example sent=3"} {
		if !strings.Contains(string(logText), w) {
			t.Errorf("log lacks %q:\n%s", w, logText)
		}
	}
	if strings.Contains(string(logText), "closed network connection") || strings.Contains(string(logText), "pw of carol") {
		t.Errorf("log has a spurious error or the password:\n%s", logText)
	}
}

// TestCLIServeSecretsPrivate: a secret_file or tls_key that group or
// others may read, and --tls-on-connect without a certificate, stop serve
// before it says anything but 421: exit 78, and the error names the
// chmod that fixes it.
func TestCLIServeSecretsPrivate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := writeTestCert(t, dir)
	secret := filepath.Join(dir, "carol.secret")
	if err := os.WriteFile(secret, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	logf := filepath.Join(dir, "etrnflush.log")
	withSecret := write("secret.toml", fmt.Sprintf("spool_dir = %q\nlog = %q\nhelo = \"provider.example\"\n[user.carol]\nsecret_file = %q\nhosts = [\"h.example\"]\n", dir, logf, secret))
	withKey := write("key.toml", fmt.Sprintf("spool_dir = %q\nlog = %q\nhelo = \"provider.example\"\n[serve]\ntls_cert = %q\ntls_key = %q\n", dir, logf, certFile, keyFile))
	noCert := write("nocert.toml", fmt.Sprintf("spool_dir = %q\nlog = %q\nhelo = \"provider.example\"\n", dir, logf))
	cases := []struct {
		name  string
		chmod string // file made 0644 for the case
		argv  []string
		want  string
	}{
		{"secret_file 0644", secret, []string{"-c", withSecret, "serve"}, "chmod go-rwx " + secret},
		{"tls_key 0644", keyFile, []string{"-c", withKey, "serve"}, "chmod go-rwx " + keyFile},
		{"tls-on-connect without a certificate", "", []string{"-c", noCert, "serve", "--tls-on-connect"}, "needs [serve] tls_cert and tls_key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.chmod != "" {
				if err := os.Chmod(c.chmod, 0o644); err != nil {
					t.Fatal(err)
				}
				defer os.Chmod(c.chmod, 0o600) //nolint:errcheck // the next case checks its own files
			}
			p := startServeArgv(t, c.argv)
			p.cmd(t, "", 421, "Service not available")
			if code := p.wait(t); code != exConfig {
				t.Errorf("exit %d, want %d", code, exConfig)
			}
			if line := oneErrorLine(t, p.stderr.String()); !strings.Contains(line, c.want) {
				t.Errorf("error line %q lacks %q", line, c.want)
			}
		})
	}
	// Once private again, the same configs serve.
	p := startServeArgv(t, []string{"-c", withSecret, "serve"})
	p.cmd(t, "", 220, "provider.example")
	p.cmd(t, "QUIT", 221, "")
}

// TestCLIAuthPasswordFilePrivate: flush refuses an auth_password_file that
// group or others may read (exit 78, the chmod in the error) before it
// connects anywhere, and a --tls other than verify with auth_user.
func TestCLIAuthPasswordFilePrivate(t *testing.T) {
	dir := t.TempDir()
	spool := filepath.Join(dir, "auth.example")
	holdBSMTP(t, spool, "auth.example", 1)
	pw := filepath.Join(dir, "relay.password")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pw, 0o640); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf("spool_dir = %q\nlog = \"stderr\"\nhelo = \"client.example\"\n[host.\"auth.example\"]\nroute = \"127.0.0.1:1\"\ntls = \"verify\"\nauth_user = \"relay\"\nauth_password_file = %q\n", dir, pw)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runEtrnflush(t, "-c", conf, "auth.example")
	if code != exConfig || !strings.Contains(stderr, "chmod go-rwx "+pw) {
		t.Errorf("group-readable password file: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runEtrnflush(t, "-c", conf, "--tls", "encrypt", "auth.example")
	if code != exUsage || !strings.Contains(stderr, "--tls encrypt is refused") {
		t.Errorf("--tls encrypt with auth_user: exit %d, stderr %q", code, stderr)
	}
	if b, err := os.ReadFile(spool); err != nil || len(b) == 0 {
		t.Errorf("spool touched: %v, %d octets", err, len(b))
	}
}

// TestCLICheckConfigMixedCosts: check-config warns when the [user]
// hashes have different bcrypt costs (the time of a failed AUTH would
// tell the users apart), and is quiet when they do not.
func TestCLICheckConfigMixedCosts(t *testing.T) {
	dir := t.TempDir()
	h4, err := bcrypt.GenerateFromPassword([]byte("a"), 4)
	if err != nil {
		t.Fatal(err)
	}
	h5, err := bcrypt.GenerateFromPassword([]byte("b"), 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		second   []byte
		warnings int
	}{{"same", h4, 0}, {"mixed", h5, 1}} {
		conf := filepath.Join(dir, c.name+".toml")
		text := fmt.Sprintf("log = \"stderr\"\n[user.alice]\npassword_hash = %q\nhosts = [\"a.example\"]\n[user.bob]\npassword_hash = %q\nhosts = [\"b.example\"]\n", h4, c.second)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := runEtrnflush(t, "-c", conf, "check-config")
		if code != 0 || strings.Count(stderr, "different bcrypt costs") != c.warnings {
			t.Errorf("%s: exit %d, stderr %q; want %d warnings", c.name, code, stderr, c.warnings)
		}
		if c.warnings > 0 && !strings.Contains(stderr, "cost 4: [alice]; cost 5: [bob]") {
			t.Errorf("%s: the warning does not name the users by cost: %q", c.name, stderr)
		}
	}
}
