//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// openPTY returns the master and slave ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// ttyOutput collects what the program writes to the terminal.
type ttyOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// readFrom copies what the terminal shows into o until the slave side
// is closed everywhere (EIO); the channel is closed then.
func (o *ttyOutput) readFrom(master *os.File) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			o.mu.Lock()
			o.b.Write(buf[:n])
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return done
}

func (o *ttyOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

func (o *ttyOutput) waitFor(t *testing.T, s string, from int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := o.String()
		if i := strings.Index(out[from:], s); i >= 0 {
			return from + i + len(s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("terminal shows %q, no %q", out, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCLIPasswdTerminal: from a terminal, passwd asks twice with echo
// off, prints only the hash on standard output, refuses two different
// entries, and leaves the terminal echoing again.
func TestCLIPasswdTerminal(t *testing.T) {
	for _, tc := range []struct {
		name         string
		first, again string
		code         int
	}{
		{"same", "tty secret", "tty secret", 0},
		{"different", "tty secret", "tty secreT", exUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t)
			defer func() {
				if err := master.Close(); err != nil {
					t.Error(err)
				}
			}()
			out := &ttyOutput{}
			readDone := out.readFrom(master)
			var stdout bytes.Buffer
			cmd := exec.Command(etrnflushBin, "passwd")
			cmd.Env = childEnv()
			cmd.Stdin, cmd.Stderr = slave, slave
			cmd.Stdout = &stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			at := out.waitFor(t, "Password: ", 0)
			if _, err := master.Write([]byte(tc.first + "\n")); err != nil {
				t.Fatal(err)
			}
			out.waitFor(t, "Password again: ", at)
			if _, err := master.Write([]byte(tc.again + "\n")); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if tio.Lflag&unix.ECHO == 0 {
				t.Error("the terminal was left without echo")
			}
			if err := slave.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-readDone:
			case <-time.After(10 * time.Second):
				t.Fatal("terminal not closed after exit")
			}
			shown := out.String()
			if strings.Contains(shown, "secret") {
				t.Errorf("the password was echoed: %q", shown)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d; terminal %q", code, tc.code, shown)
			}
			if tc.code != 0 {
				if stdout.Len() != 0 || !strings.Contains(shown, "differ") {
					t.Errorf("stdout %q, terminal %q", stdout.String(), shown)
				}
				return
			}
			hash := strings.TrimSuffix(stdout.String(), "\n")
			if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(tc.first)); err != nil {
				t.Errorf("stdout %q is not a hash of the password: %v", stdout.String(), err)
			}
		})
	}
}
