//go:build e2e

package e2e

// The real ODMR and ETRN client: fetchmail 6.4 (Debian package) against
// etrnflush serve under a real xinetd, with a real Exim on each side:
// the writer Exim makes the spool, the sink Exim receives what fetchmail
// relays (ODMR) or what the spawned flush sends (ETRN).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needFetchmailXinetd returns the fetchmail and xinetd binaries, or skips
// the test with one line (fails it when CI=true): xinetd must run as
// root to bind and to start services.
func needFetchmailXinetd(t *testing.T) (fetchmail, xinetd string) {
	t.Helper()
	fetchmail, err1 := exec.LookPath("fetchmail")
	xinetd, err2 := exec.LookPath("xinetd")
	if err2 != nil {
		if p := "/usr/sbin/xinetd"; fileExists(p) {
			xinetd, err2 = p, nil
		}
	}
	msg := ""
	switch {
	case err1 != nil || err2 != nil:
		msg = "fetchmail or xinetd not installed: apt-get install fetchmail xinetd"
	case os.Geteuid() != 0:
		msg = "not root: xinetd needs root"
	}
	if msg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return fetchmail, xinetd
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// startXinetd runs xinetd in the foreground with one service on a free
// loopback port, running the built etrnflush with args, and returns the
// port. The test stops exactly that process.
func startXinetd(t *testing.T, xinetd, dir string, args []string) int {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, fmt.Sprintf("xinetd-%d.conf", attempt))
		text := fmt.Sprintf(`defaults
{
	log_type = FILE %s
}

service etrnflush-test
{
	type        = UNLISTED
	socket_type = stream
	protocol    = tcp
	bind        = 127.0.0.1
	port        = %d
	wait        = no
	user        = root
	server      = %s
	server_args = %s
	instances   = 20
	disable     = no
	log_on_success = PID HOST EXIT
	log_on_failure = HOST
}
`, filepath.Join(dir, "xinetd.log"), port, etrnflushBin, strings.Join(args, " "))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(xinetd, "-dontfork", "-f", conf)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(10 * time.Second)
		for !canConnect(addr) && time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Now()
			case <-time.After(50 * time.Millisecond):
			}
		}
		if canConnect(addr) {
			t.Cleanup(stop)
			return port
		}
		stop()
	}
	b, _ := os.ReadFile(filepath.Join(dir, "xinetd.log"))
	t.Fatalf("xinetd did not listen after 5 attempts; its log:\n%s", b)
	return 0
}

// runFetchmail runs fetchmail on rcfile (written 0600, as fetchmail
// demands) with its state in dir, and returns its exit status and output.
func runFetchmail(t *testing.T, fetchmail, dir, rc string) (int, string) {
	t.Helper()
	rcfile := filepath.Join(dir, "fetchmailrc")
	if err := os.WriteFile(rcfile, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fetchmail, "--nosyslog", "-v", "-f", rcfile, "--pidfile", filepath.Join(dir, "fetchmail.pid"))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "FETCHMAILHOME=" + dir}
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("fetchmail still running after 120s:\n%s", out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// exampleRC is an rcfile of examples/ with its names replaced by the
// test's (pairs of old, new); each old one must be in the file, so the
// example cannot drift away from what is tested.
func exampleRC(t *testing.T, path string, oldNew ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(text, oldNew[i]) {
			t.Fatalf("%s no longer holds %q; update this test", path, oldNew[i])
		}
		text = strings.ReplaceAll(text, oldNew[i], oldNew[i+1])
	}
	return text
}

// fetchmailSetup is a rig with a sink, a writer holding the round-trip
// corpus for host, and a serve config for it.
type fetchmailSetup struct {
	r         *rig
	s         *sink
	w         *writer
	state     string
	conf      string
	logFile   string
	want      []envMsg
	spoolPath string
}

const fetchmailSecret = "carol's CRAM secret"

// assertNothingRoots: serve ran as root under xinetd, yet nothing it or
// its flushes created under the spool directory or in state_dir belongs
// to root, so the Exim user's own runs can use all of it.
func (f *fetchmailSetup) assertNothingRoots(t *testing.T) {
	t.Helper()
	for _, d := range []string{filepath.Dir(f.spoolPath), filepath.Dir(f.conf)} {
		if bad := rootOwned(t, d); len(bad) > 0 {
			t.Errorf("these belong to root: %q", bad)
		}
	}
}

func newFetchmailSetup(t *testing.T, host, layout string) *fetchmailSetup {
	t.Helper()
	f := &fetchmailSetup{r: newRig(t)}
	f.s = f.r.startSink(t)
	f.w = f.r.newWriter(t)
	f.spoolPath = f.w.filePath(host)
	if layout == "dir" {
		f.spoolPath = f.w.dirPath(host)
	}
	corpus := roundTripCorpus(t, host)
	for _, in := range corpus {
		if err := f.w.inject(in.from, in.to, in.data); err != nil {
			t.Fatal(err)
		}
	}
	f.want = spoolMessages(t, f.spoolPath)
	if len(f.want) != len(corpus) {
		t.Fatalf("the writer Exim stored %d messages, want %d", len(f.want), len(corpus))
	}
	f.state = t.TempDir()
	secret := filepath.Join(f.state, "carol.secret")
	if err := os.WriteFile(secret, []byte(fetchmailSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// xinetd starts serve as root; serve then acts as the spool's owner
	// (the Exim user), and so do the flushes it starts. What they read
	// after that (the config) and write (the log, state_dir) belongs to
	// that user, as it must for Exim's own ETRN hook; the CRAM secret is
	// root's, read before the switch.
	own := f.r.mkdir(t, "serve")
	f.logFile = filepath.Join(own, "etrnflush.log")
	f.conf = filepath.Join(own, "etrnflush.toml")
	text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"
timeout = "30s"

[serve]
state_dir = %q
etrn_clients = ["127.0.0.0/8"]
allow_plaintext_auth = true

[host.%q]
spool = %q
route = %q
tls = "none"

[user.carol]
secret_file = %q
hosts = [%q]
`, filepath.Dir(f.spoolPath), f.logFile, filepath.Join(own, "serve-state"), host, f.spoolPath, f.s.addr(), secret, host)
	for _, p := range []struct {
		path string
		data []byte
	}{{f.conf, []byte(text)}, {f.logFile, nil}} {
		if err := os.WriteFile(p.path, p.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p.path, f.r.uid, f.r.gid); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fetchmailSetup) log(t *testing.T) string {
	t.Helper()
	b, _ := os.ReadFile(f.logFile)
	return string(b)
}

// TestFetchmailODMR: fetchmail's protocol ODMR (EHLO, AUTH CRAM-MD5, ATRN,
// then a byte relay to its smtphost) against serve under xinetd: the
// whole Exim-written spool arrives at the sink Exim byte for byte, and the
// spool is empty afterwards.
func TestFetchmailODMR(t *testing.T) {
	fetchmail, xinetd := needFetchmailXinetd(t)
	const host = "file.rt.example"
	f := newFetchmailSetup(t, host, "file")
	port := startXinetd(t, xinetd, f.state, []string{"-c", f.conf, "serve"})
	home := t.TempDir()
	rc := exampleRC(t, "examples/fetchmailrc-odmr",
		"odmr.isp.example", "127.0.0.1",
		"service 366", fmt.Sprintf("service %d", port),
		`user "fetchmail"`, `user "carol"`,
		"the first line of the secret_file", fetchmailSecret,
		"home.example", host,
		`"localhost/25"`, fmt.Sprintf(`"127.0.0.1/%d"`, f.s.port))
	code, out := runFetchmail(t, fetchmail, home, rc)
	if code != 0 {
		t.Fatalf("fetchmail exit %d, want 0:\n%s\netrnflush log:\n%s", code, out, f.log(t))
	}
	if !strings.Contains(out, "AUTH CRAM-MD5") {
		t.Errorf("fetchmail did not use CRAM-MD5:\n%s", out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fetchmail:\n%s\netrnflush log:\n%s", out, f.log(t))
		}
	})
	f.s.waitReplayed(t, f.want)
	assertNoMailLeft(t, f.spoolPath)
	f.assertNothingRoots(t)
	log := f.log(t)
	for _, w := range []string{`auth=CRAM-MD5 user="carol" status=ok`, fmt.Sprintf("event=summary host=%s sent=%d ", host, len(f.want))} {
		if !strings.Contains(log, w) {
			t.Errorf("etrnflush log lacks %q:\n%s", w, log)
		}
	}
	if strings.Contains(log, "closed network connection") {
		t.Errorf("spurious error line at the end of the ATRN session:\n%s", log)
	}

	// Again: nothing left, so ATRN is answered 453. (fetchmail 6.4.37
	// ends ODMR's 453 with status 0, not 1: its ODMR driver reports no
	// message count.)
	if code, out := runFetchmail(t, fetchmail, home, rc); (code != 0 && code != 1) || !strings.Contains(out, "453 4.7.0 You have no mail") {
		t.Errorf("second fetchmail exit %d, want the 453 and 0 or 1:\n%s", code, out)
	}
	// A wrong password is refused: exit 3 (authentication failed).
	bad := strings.Replace(rc, fetchmailSecret, "wrong", 1)
	if code, out := runFetchmail(t, fetchmail, home, bad); code == 0 || code == 1 {
		t.Errorf("fetchmail with a wrong password exit %d:\n%s", code, out)
	}
}

// TestFetchmailETRN: fetchmail's protocol ETRN against serve under
// xinetd starts a flush (a process of its own, detached) that delivers
// the whole spool to the host's route, the sink Exim.
func TestFetchmailETRN(t *testing.T) {
	fetchmail, xinetd := needFetchmailXinetd(t)
	const host = "dir.rt.example"
	f := newFetchmailSetup(t, host, "dir")
	port := startXinetd(t, xinetd, f.state, []string{"-c", f.conf, "serve"})
	rc := exampleRC(t, "examples/fetchmailrc-etrn",
		"mx.isp.example", "127.0.0.1",
		"service 366", fmt.Sprintf("service %d", port),
		"home.example", host)
	code, out := runFetchmail(t, fetchmail, t.TempDir(), rc)
	if code != 0 {
		t.Fatalf("fetchmail exit %d, want 0:\n%s\netrnflush log:\n%s", code, out, f.log(t))
	}
	if !strings.Contains(out, fmt.Sprintf("%d pending messages for node %s started", len(f.want), host)) {
		t.Errorf("fetchmail did not see the 253 count:\n%s", out)
	}
	f.s.waitReplayed(t, f.want)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(f.log(t), "event=summary host="+host) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	assertNoMailLeft(t, f.spoolPath)
	f.assertNothingRoots(t)
	if log := f.log(t); !strings.Contains(log, fmt.Sprintf("event=summary host=%s sent=%d ", host, len(f.want))) {
		t.Errorf("etrnflush log:\n%s", log)
	}
}

// TestFetchmailODMRTLS: fetchmail's ssl option (TLS from the start,
// certificate checked) against serve --tls-on-connect under xinetd. Its
// relay reads TLS a line at a time while waiting on the raw socket, so it
// stalled as soon as one TLS record held two lines (tried: nothing
// delivered, every message deferred after the timeout); with serve's one
// line per record the whole spool arrives byte for byte.
func TestFetchmailODMRTLS(t *testing.T) {
	fetchmail, xinetd := needFetchmailXinetd(t)
	const host = "file.rt.example"
	f := newFetchmailSetup(t, host, "file")
	certFile, keyFile, _ := writeTestCert(t, f.state)
	b, err := os.ReadFile(f.conf)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "[serve]\n", fmt.Sprintf("[serve]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile), 1)
	text = strings.Replace(text, "allow_plaintext_auth = true\n", "", 1)
	if err := os.WriteFile(f.conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	port := startXinetd(t, xinetd, f.state, []string{"-c", f.conf, "serve", "--tls-on-connect"})
	rc := exampleRC(t, "examples/fetchmailrc-odmr",
		"odmr.isp.example", "127.0.0.1",
		"service 366", fmt.Sprintf("service %d", port),
		`user "fetchmail"`, `user "carol"`,
		"the first line of the secret_file", fetchmailSecret,
		"home.example", host,
		`"localhost/25"`, fmt.Sprintf(`"127.0.0.1/%d"`, f.s.port))
	rc += fmt.Sprintf("  ssl sslcertck sslcertfile %q sslcommonname \"provider.example\"\n", certFile)
	code, out := runFetchmail(t, fetchmail, t.TempDir(), rc)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fetchmail:\n%s\netrnflush log:\n%s", out, f.log(t))
		}
	})
	if code != 0 {
		t.Fatalf("fetchmail exit %d, want 0", code)
	}
	if !strings.Contains(out, "SSL/TLS: using protocol") || strings.Contains(out, "insecure") {
		t.Errorf("fetchmail did not do checked TLS")
	}
	f.s.waitReplayed(t, f.want)
	assertNoMailLeft(t, f.spoolPath)
	f.assertNothingRoots(t)
	if log := f.log(t); !strings.Contains(log, fmt.Sprintf("event=summary host=%s sent=%d deferred=0", host, len(f.want))) || !strings.Contains(log, "tls=true") {
		t.Errorf("etrnflush log:\n%s", log)
	}
}
