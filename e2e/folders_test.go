//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

// refusingServer is a receiver (fakesmtp's server) that refuses
// recipients whose local part starts with "reject" while refuse is set.
type refusingServer struct {
	refuse atomic.Bool
	srv    *fakesmtp.Server
}

// taken returns "from>to" of each accepted recipient.
func (b *refusingServer) taken() []string {
	var got []string
	for _, m := range b.srv.Messages() {
		for _, t := range m.To {
			got = append(got, m.From+">"+t)
		}
	}
	return got
}

func startRefusingServer(t *testing.T) (*refusingServer, string) {
	t.Helper()
	be := &refusingServer{}
	be.srv = &fakesmtp.Server{
		Domain:  "rx.example",
		Timeout: 30 * time.Second,
		OnRcpt: func(_ *fakesmtp.Txn, to string, _ int) error {
			if be.refuse.Load() && strings.HasPrefix(to, "reject") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		},
	}
	return be, fakesmtp.Run(t, be.srv)
}

type failedList struct {
	Host   string `json:"host"`
	Copies []struct {
		ID     string   `json:"id"`
		Reason string   `json:"reason"`
		From   string   `json:"from"`
		To     []string `json:"to"`
	} `json:"copies"`
}

func failedJSON(t *testing.T, cfg, which, host string) failedList {
	t.Helper()
	out, stderr, code := runEtrnflush(t, "-c", cfg, which, "--json", host)
	var fl failedList
	if code != exOK || json.Unmarshal([]byte(out), &fl) != nil || fl.Host != host {
		t.Fatalf("%s --json %s: exit %d\n%s%s", which, host, code, out, stderr)
	}
	return fl
}

// TestCLIReleaseRoundTrip: a recipient refused with 550 is set aside in
// the failed folder; failed lists it with its envelope and the server's
// reason; release puts it back into the BSMTP directory spool and the next
// flush delivers it; the failed folder is then empty. While the directory
// is empty and the format "auto", release refuses: an emptied mailstore
// looks the same.
func TestCLIReleaseRoundTrip(t *testing.T) {
	rx, addr := startRefusingServer(t)
	rx.refuse.Store(true)
	dir := t.TempDir()
	const host = "h.example"
	sp := filepath.Join(dir, host)
	if err := os.Mkdir(sp, 0o700); err != nil {
		t.Fatal(err)
	}
	msg := "MAIL FROM:<a@x.example>\nRCPT TO:<ok@h.example>\nRCPT TO:<reject1@h.example>\nDATA\nSubject: t\n\nbody\n.\n"
	if err := os.WriteFile(filepath.Join(sp, "q1aaaaa-1"), []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, "")
	cfgBSMTP := writeConfig(t, dir, "[host.\"h.example\"]\nformat = \"bsmtp\"\n")
	flush := func() string {
		t.Helper()
		_, stderr, code := runEtrnflush(t, "-c", cfg, "--to", addr, "--tls", "none", "--helo", "tx.example", host)
		if code != exOK {
			t.Fatalf("flush: exit %d\n%s", code, stderr)
		}
		return stderr
	}
	logged := flush()
	if got := strings.Join(rx.taken(), " "); got != "a@x.example>ok@h.example" {
		t.Fatalf("first flush delivered %q", got)
	}
	fl := failedJSON(t, cfg, "failed", host)
	if len(fl.Copies) != 1 || fl.Copies[0].From != "a@x.example" || strings.Join(fl.Copies[0].To, ",") != "reject1@h.example" ||
		!strings.Contains(fl.Copies[0].Reason, "550") {
		t.Fatalf("failed --json: %+v", fl)
	}
	id := fl.Copies[0].ID
	// The copy is named after the message's id in the log, and that id
	// names it for release too.
	m := regexp.MustCompile(`event=message host=h\.example id=(\S+) .*status=partial`).FindStringSubmatch(logged)
	if m == nil || !strings.HasPrefix(id, m[1]+"-") {
		t.Fatalf("failed copy %s is not named after the message's logged id:\n%s", id, logged)
	}
	msgID := m[1]
	out, _, code := runEtrnflush(t, "-c", cfg, "failed", host)
	if code != exOK || !strings.HasPrefix(out, "host="+host+" id="+id+" ") || strings.Count(out, "\n") != 1 {
		t.Errorf("failed %s: exit %d\n%s", host, code, out)
	}

	rx.refuse.Store(false)
	before := treeSnapshot(t, dir)
	_, stderr, code := runEtrnflush(t, "-c", cfg, "release", host, id)
	if code != exDataErr || !strings.Contains(stderr, "empty directory") {
		t.Errorf("release into an empty directory, format auto: exit %d, stderr %q", code, stderr)
	}
	if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
		t.Errorf("a refused release changed:\n%s", d)
	}
	out, stderr, code = runEtrnflush(t, "-c", cfgBSMTP, "release", host, msgID)
	if code != exOK || !strings.HasPrefix(out, "host="+host+" id="+id+" released from=failed to="+sp+"/q") {
		t.Fatalf("release: exit %d\n%s%s", code, out, stderr)
	}
	if fl := failedJSON(t, cfg, "failed", host); len(fl.Copies) != 0 {
		t.Errorf("after release the failed folder still holds %+v", fl.Copies)
	}
	flush()
	if got := strings.Join(rx.taken(), " "); got != "a@x.example>ok@h.example a@x.example>reject1@h.example" {
		t.Errorf("after release the flush delivered %q", got)
	}
	if names := dirNames(t, sp); len(names) != 0 {
		t.Errorf("spool still holds %v", names)
	}
	// Released again: it is gone, so the id is unknown.
	_, stderr, code = runEtrnflush(t, "-c", cfg, "release", host, id)
	if code != exUsage || !strings.Contains(stderr, "no such copy") {
		t.Errorf("second release: exit %d, stderr %q", code, stderr)
	}
}

// TestCLIReleaseAppendAndRefusals: into an appended BSMTP file a copy is
// appended (the dry run then lists it after Exim's message); a damaged
// quarantined copy is refused and kept (65), so is any copy while the
// spool path does not exist (its layout is unknown); delete removes a
// copy's files and says so; an unknown id is 64, with the others done.
func TestCLIReleaseAppendAndRefusals(t *testing.T) {
	dir := t.TempDir()
	const host = "f.example"
	sp := filepath.Join(dir, host)
	failed := filepath.Join(dir, ".etrnflush-"+host+".failed")
	quar := filepath.Join(dir, ".etrnflush-"+host+".quarantine")
	for _, d := range []string{failed, quar} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(failed, "c1.bsmtp"), bsmtpEntry("a@x.example", "r1@f.example", ""))
	write(filepath.Join(failed, "c1.why"), "550 no")
	write(filepath.Join(failed, "c2.bsmtp"), bsmtpEntry("a@x.example", "r2@f.example", ""))
	write(filepath.Join(failed, "c2.why"), "550 no")
	write(filepath.Join(quar, "d1.bsmtp"), "MAIL FROM:<a@x.example>\nRCPT TO:<r3@f.example>\nDATA\nSubject: cut\n")
	write(filepath.Join(quar, "d1.why"), "no final dot")
	cfg := writeConfig(t, dir, "")

	// No spool yet: refused, nothing changed.
	before := treeSnapshot(t, dir)
	_, stderr, code := runEtrnflush(t, "-c", cfg, "release", host, "c1")
	if code != exDataErr || !strings.Contains(stderr, "does not exist") {
		t.Errorf("release without a spool: exit %d, stderr %q", code, stderr)
	}
	if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
		t.Errorf("a refused release changed:\n%s", d)
	}

	write(sp, bsmtpEntry("e@x.example", "first@f.example", ""))
	out, stderr, code := runEtrnflush(t, "-c", cfg, "release", host, "c1", "d1", "nosuch")
	if code != exDataErr || !strings.Contains(out, "host="+host+" id=c1 released from=failed to="+sp+"\n") ||
		!strings.Contains(stderr, "id=d1 not released") || !strings.Contains(stderr, "id=nosuch: no such copy") {
		t.Errorf("release c1 d1 nosuch: exit %d\nstdout:\n%sstderr:\n%s", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(quar, "d1.bsmtp")); err != nil {
		t.Errorf("the refused quarantined copy is gone: %v", err)
	}
	if _, err := os.Stat(sp + ".lock"); !os.IsNotExist(err) {
		t.Errorf("Exim's lock file is left behind (%v)", err)
	}
	got := dryRunEnvelopes(t, sp, host)
	if strings.Join(got, " ") != "from=<e@x.example> to=<first@f.example> from=<a@x.example> to=<r1@f.example>" {
		t.Errorf("after release the spool holds %v", got)
	}

	out, _, code = runEtrnflush(t, "-c", cfg, "delete", host, "c2", "d1")
	if code != exOK || out != "host="+host+" id=c2 deleted from=failed\nhost="+host+" id=d1 deleted from=quarantine\n" {
		t.Errorf("delete: exit %d\n%s", code, out)
	}
	for _, d := range []string{failed, quar} {
		if names := dirNames(t, d); len(names) != 0 {
			t.Errorf("%s still holds %v", d, names)
		}
	}
}

// TestFolderChangeLogged: what release, delete and bounce did, or failed
// to do, also reaches the log when it is not standard error (run from
// cron, nobody reads standard error).
func TestFolderChangeLogged(t *testing.T) {
	rx, addr := startRefusingServer(t)
	rx.refuse.Store(true)
	dir := t.TempDir()
	const host = "h.example"
	sp := filepath.Join(dir, host)
	msg := "MAIL FROM:<a@x.example>\nRCPT TO:<reject1@h.example>\nDATA\nSubject: t\n\nbody\n.\n"
	if err := os.WriteFile(sp, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, "")
	if _, stderr, code := runEtrnflush(t, "-c", cfg, "--to", addr, "--tls", "none", "--helo", "tx.example", host); code != exOK {
		t.Fatalf("flush: exit %d\n%s", code, stderr)
	}
	fl := failedJSON(t, cfg, "failed", host)
	if len(fl.Copies) != 1 {
		t.Fatalf("failed --json: %+v", fl)
	}
	logFile := filepath.Join(t.TempDir(), "etrnflush.log")
	if _, stderr, code := runEtrnflush(t, "-c", cfg, "delete", "--log", logFile, host, fl.Copies[0].ID, "nosuchid"); code != exUsage {
		t.Fatalf("delete: exit %d, want %d for the unknown id\n%s", code, exUsage, stderr)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	done := "event=folder-change action=delete host=h.example id=" + fl.Copies[0].ID + " folder=failed status=done"
	failed := "event=folder-change action=delete host=h.example id=nosuchid folder=- status=failed error="
	if !strings.Contains(log, done) || !strings.Contains(log, failed) {
		t.Errorf("log file lacks %q or %q:\n%s", done, failed, log)
	}
}
