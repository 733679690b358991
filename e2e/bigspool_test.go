//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// bigMaildirRun is what one flush of a large maildir showed.
type bigMaildirRun struct {
	first   time.Duration // from start to the first message received
	rate    float64       // messages per second after the first
	maxRSS  int64         // peak resident set of the etrnflush process, KiB
	sampled int           // messages received before the run was stopped
}

// flushBigMaildir writes n small messages into a maildir (Exim style, a
// few hundred octets each), runs etrnflush on it against the recorder,
// and stops it with SIGKILL once `sample` messages arrived (a kill is
// safe, as the crash tests show), reporting time to the first message,
// the rate after it and the process's peak RSS.
func flushBigMaildir(t *testing.T, n, sample int) bigMaildirRun {
	t.Helper()
	dir := t.TempDir()
	const host = "big.example"
	path := filepath.Join(dir, host)
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(path, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-24 * time.Hour)
	var b bytes.Buffer
	for i := range n {
		b.Reset()
		fmt.Fprintf(&b, "Return-path: <alice@sender.example>\nEnvelope-to: u%d@%s,\n v%d@%s\nDelivery-date: Sat, 28 Nov 2026 15:54:14 +0000\n", i, host, i, host)
		fmt.Fprintf(&b, "Received: from root by mx.isp.example with local (Exim 4.96)\n\tid 1xXKkg-%06d-11\n\tfor u%d@%s;\n\tSat, 28 Nov 2026 15:54:14 +0000\n", i, i, host)
		fmt.Fprintf(&b, "From: Alice <alice@sender.example>\nSubject: big %d\nMessage-ID: <big-%d@test.example>\n\nBody of message %d.\n.\n", i, i, i)
		mt := t0.Add(time.Duration(i) * time.Millisecond)
		p := filepath.Join(path, "new", fmt.Sprintf("%d.M%dP%d.mx.isp.example", mt.Unix(), mt.Nanosecond()/1000, i))
		if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder(t)
	cmd := exec.Command(etrnflushBin, "flush", "--spool", path, "--to", rec.addr, "--tls", "none",
		"--helo", "test.example", "--timeout", "30s", host)
	cmd.Env = childEnv()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var run bigMaildirRun
	var firstAt time.Time
	deadline := start.Add(runTimeout)
	exited := false
	for !exited {
		got := len(rec.messages())
		if got > 0 && firstAt.IsZero() {
			firstAt = time.Now()
			run.first = firstAt.Sub(start)
		}
		if got >= sample {
			run.sampled = got
			if s := time.Since(firstAt).Seconds(); s > 0 {
				run.rate = float64(got-1) / s
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-done
			exited = true
			break
		}
		select {
		case err := <-done:
			exited = true
			if err != nil {
				t.Fatalf("etrnflush ended before %d messages: %v\n%s", sample, err, errb.String())
			}
			run.sampled = len(rec.messages())
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("%d of %d messages after %s\n%s", got, sample, runTimeout, errb.String())
		}
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		run.maxRSS = ru.Maxrss
	}
	return run
}

// TestBigMaildir: 100,000 maildir messages are listed and the first one
// is on its way within seconds, the rate after it does not depend on the
// number of messages, and the process's memory grows only by the listing
// (names and dates), not with what the messages hold. 1,000 messages are
// the baseline.
func TestBigMaildir(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 files")
	}
	small := flushBigMaildir(t, 1000, 500)
	big := flushBigMaildir(t, 100000, 500)
	t.Logf("1,000 messages:   first after %s, %.0f msg/s after it, peak RSS %d KiB", small.first.Round(time.Millisecond), small.rate, small.maxRSS)
	t.Logf("100,000 messages: first after %s, %.0f msg/s after it, peak RSS %d KiB", big.first.Round(time.Millisecond), big.rate, big.maxRSS)
	if big.first > 10*time.Second {
		t.Errorf("100,000 messages: the first was received after %s, want seconds", big.first)
	}
	// About 100 octets of listing per message; a copy of the messages
	// (some 500 octets each) would be 50 MB.
	if grow := big.maxRSS - small.maxRSS; grow > 30*1024 {
		t.Errorf("peak RSS grew by %d KiB from 1,000 to 100,000 messages, want under 30 MiB", grow)
	}
}
