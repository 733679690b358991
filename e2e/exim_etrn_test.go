//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEximETRNRecipe runs the documented recipe, examples/exim-etrn.conf,
// end to end: a real Exim daemon with that snippet, the real etrnflush
// binary as its smtp_etrn_command (no wrapper), a spool written by a real
// Exim, and a receiving Exim. ETRN for a listed host delivers the held
// mail and empties the spool; ETRN for an unlisted or hostile name is
// refused by the ACL and starts nothing.
func TestEximETRNRecipe(t *testing.T) {
	r := newRig(t)
	s := r.startSink(t)
	w := r.newWriter(t)
	const host = "file.rt.example"
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("From: <alice@sender.example>\nSubject: held %d\nMessage-ID: <etrn-%d@test.example>\n\nheld for %s\n.\n..dot\n", i, i, host)
		if err := w.inject("alice@sender.example", []string{fmt.Sprintf("user%d@%s", i, host)}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	spoolPath := w.filePath(host)
	want := spoolMessages(t, spoolPath)
	if len(want) != 3 {
		t.Fatalf("writer spooled %d messages, want 3", len(want))
	}

	d, logFile := startRecipe(t, r, host, s.addr(), spoolPath)

	// Refusals first: the ACL answers 458, and Exim then runs nothing.
	before := snapTree(t, filepath.Dir(spoolPath))
	for _, arg := range []string{"unknown.example", "../x", "../" + host, "", "@" + host, host + " x", "x;touch pwned"} {
		if code, text := etrnReply(t, d.addr(), arg); code != 458 {
			t.Errorf("ETRN %q: %d %s, want 458 from the ACL", arg, code, text)
		}
	}
	// Nothing may happen now; give a wrongly started flush time to act.
	time.Sleep(2 * time.Second)
	diffTrees(t, "after refused ETRNs", before, snapTree(t, filepath.Dir(spoolPath)))
	if b, err := os.ReadFile(logFile); err == nil {
		t.Errorf("refused ETRNs ran etrnflush; its log:\n%s", b)
	}
	if got := s.delivered(t); len(got) != 0 {
		t.Errorf("the sink received %d messages after refused ETRNs", len(got))
	}

	// The listed host, in another case: Exim's lsearch hands the name back
	// as typed; etrnflush folds it.
	if code, text := etrnReply(t, d.addr(), "FILE.rt.example"); code != 250 {
		t.Fatalf("ETRN FILE.rt.example: %d %s, want 250", code, text)
	}
	got := s.waitDelivered(t, 3)
	sameMessages(t, "delivered after ETRN", want, got)
	logText := waitLog(t, logFile, "event=summary host="+host+" sent=3")
	assertNoMailLeft(t, spoolPath)
	if strings.Contains(logText, "error") {
		t.Errorf("etrnflush logged an error:\n%s", logText)
	}
	// Exim recorded the one command it ran, with the folded-by-lookup
	// argument, and no other.
	mainlog, err := os.ReadFile(filepath.Join(d.dir, "log", "mainlog"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(mainlog), "ETRN FILE.rt.example"); n < 1 {
		t.Errorf("Exim's mainlog has no accepted ETRN:\n%s", mainlog)
	}
}

// startRecipe starts an Exim ETRN server running the documented recipe,
// examples/exim-etrn.conf, with its paths pointed at this test's state, the
// built binary as smtp_etrn_command and a config that flushes host's spool
// to route. It returns the daemon and etrnflush's log file.
func startRecipe(t *testing.T, r *rig, host, route, spoolPath string) (*daemon, string) {
	t.Helper()
	dir := r.mkdir(t, "recipe")
	etc := filepath.Join(dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "etrnflush.log")
	conf := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"
timeout = "60s"

[host.%q]
route = %q
spool = %q
tls = "none"
`, filepath.Join(dir, "spool-unused"), logFile, host, route, spoolPath)
	for name, text := range map[string]string{"etrnflush.toml": conf, "hosts": host + "\n"} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	snippet, err := os.ReadFile(filepath.Join("examples", "exim-etrn.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/usr/local/sbin/etrnflush", "/etc/etrnflush/", "/etc/exim4/etrn-hosts"} {
		if !strings.Contains(string(snippet), p) {
			t.Fatalf("examples/exim-etrn.conf no longer mentions %s; update this test", p)
		}
	}
	sn := strings.NewReplacer("/usr/local/sbin/etrnflush", etrnflushBin, "/etc/etrnflush/", etc+"/",
		"/etc/exim4/etrn-hosts", filepath.Join(etc, "hosts")).Replace(string(snippet))
	base, err := os.ReadFile(filepath.Join("testdata", "rig", "etrn-recipe.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(base), "\n#@SNIPPET@\n") {
		t.Fatal("etrn-recipe.conf has no #@SNIPPET@ line")
	}
	full := strings.Replace(string(base), "\n#@SNIPPET@\n", "\n"+sn+"\n", 1)
	if err := os.WriteFile(filepath.Join(r.dir, "etrn-recipe.conf"), []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	return r.startDaemon(t, "etrn-recipe.conf", dir, "RECIPE_PORT", "-DRECIPE_DIR="+dir), logFile
}

// etrnReply sends one ETRN over a fresh SMTP session and returns Exim's
// reply to it.
func etrnReply(t *testing.T, addr, arg string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	reply := func() (int, string) {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("ETRN %q: reading reply: %v", arg, err)
			}
			if len(l) < 4 || l[3] != '-' {
				var code int
				fmt.Sscanf(l, "%d", &code)
				return code, strings.TrimRight(l, "\r\n")
			}
		}
	}
	if code, l := reply(); code != 220 {
		t.Fatalf("banner %q", l)
	}
	line := "ETRN"
	if arg != "" {
		line += " " + arg
	}
	var code int
	var text string
	for _, cmd := range []string{"EHLO test.example", line, "QUIT"} {
		if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
			t.Fatal(err)
		}
		n, l := reply()
		switch {
		case cmd == line:
			code, text = n, l
		case n/100 != 2:
			t.Fatalf("%q: %q", cmd, l)
		}
	}
	return code, text
}

// waitLog waits until the log file holds want and returns its text.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not say %q after 60s:\n%s", path, want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
