//go:build e2e

package e2e

import (
	"encoding/base64"
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

// atrnSession runs AUTH and ATRN on a new `etrnflush serve` and then serves
// the turned-around connection with rcv until the provider is done or
// gone.
func atrnSession(t *testing.T, conf string, rcv *fakesmtp.Server) *serveProc {
	t.Helper()
	p := startServe(t, conf)
	p.cmd(t, "", 220, "")
	p.cmd(t, "EHLO customer.example", 250, "ATRN")
	p.cmd(t, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00erin\x00erin pw")), 235, "")
	p.cmd(t, "ATRN", 250, "reversing")
	rcv.Domain = "customer.example"
	rcv.DiscardTruncated = true
	go func() { _ = rcv.Serve(fakesmtp.OneConn(p.c)) }()
	t.Cleanup(func() {
		if err := rcv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Error(err)
		}
	})
	return p
}

// TestCLIServeATRNKilled: `etrnflush serve` is killed with SIGKILL in the
// middle of an ATRN delivery. Nothing is lost: what the customer
// acknowledged and whose reply was recorded is gone from the spool, the
// messages in flight and those not yet offered stay, and the next ATRN
// delivers them (at most a window of them twice).
func TestCLIServeATRNKilled(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The window is what a kill may cause to be delivered twice: the
	// messages whose end was sent and not yet answered.
	const n, window = 8, 3
	want := holdBSMTP(t, filepath.Join(spoolDir, "erin.example"), "erin.example", n)
	hash, err := bcrypt.GenerateFromPassword([]byte("erin pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "etrnflush.toml")
	text := fmt.Sprintf(`spool_dir = %q
log = %q
helo = "provider.example"
max_inflight = %d

[serve]
allow_plaintext_auth = true

[user.erin]
password_hash = %q
hosts = ["erin.example"]
`, spoolDir, filepath.Join(dir, "etrnflush.log"), window, hash)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	gate := make(chan struct{})
	first := &fakesmtp.Server{Gate: gate, GateAfter: 2, Blocked: make(chan struct{})}
	blocked := first.Blocked
	p := atrnSession(t, conf, first)
	select {
	case <-blocked:
	case <-time.After(60 * time.Second):
		t.Fatal("the third message never reached the customer")
	}
	if err := p.proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	close(gate) // the customer takes the third message; nobody hears it
	select {
	case <-first.LoggedOut():
	case <-time.After(30 * time.Second):
		t.Fatal("the customer's session did not end after the provider died")
	}
	acked := received(first)
	if len(acked) < 3 || len(acked) > 2+window {
		t.Fatalf("customer holds %d messages, want 2 acknowledged and 1 to %d in flight", len(acked), window)
	}

	second := &fakesmtp.Server{}
	p = atrnSession(t, conf, second)
	select {
	case <-second.LoggedOut():
	case <-time.After(60 * time.Second):
		t.Fatal("the second ATRN did not finish")
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("second serve exited %d: %s", code, p.stderr.String())
	}
	again := received(second)
	// The replies to the messages the customer took may not have been
	// recorded when the kill came: up to a window of them come again.
	if len(again) < n-len(acked) || len(again) > n-len(acked)+window {
		t.Errorf("second ATRN delivered %d messages, want %d to %d (those in flight again)", len(again), n-len(acked), n-len(acked)+window)
	}
	all := append(append([]string(nil), acked...), again...)
	seen := map[string]int{}
	for _, m := range all {
		seen[m]++
	}
	twice := 0
	for _, w := range want {
		switch seen[w] {
		case 0:
			t.Errorf("lost: %q", w)
		case 1:
		case 2:
			twice++
		default:
			t.Errorf("delivered %d times: %q", seen[w], w)
		}
	}
	if twice > window {
		t.Errorf("%d messages delivered twice; at most the %d of a window may be", twice, window)
	}
	if b, err := os.ReadFile(filepath.Join(spoolDir, "erin.example")); err == nil && len(b) > 0 {
		t.Errorf("spool still holds %d octets", len(b))
	}
	ents, err := os.ReadDir(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if name := e.Name(); strings.HasPrefix(name, ".etrnflush-") && !strings.HasSuffix(name, ".lock") && !strings.HasSuffix(name, ".last") && name != ".etrnflush-serve" {
			t.Errorf("left in the spool directory: %s", name)
		}
	}
}
