package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// ErrNotPrivate is wrapped by the errors of files that hold a secret but
// that group or others may read.
var ErrNotPrivate = errors.New("readable by group or others")

// checkPrivate refuses a file holding a secret that group or others may
// read: whoever can read it can log in (or relay) as its owner. The error
// names the chmod that fixes it.
func checkPrivate(path string, fi fs.FileInfo) error {
	if m := fi.Mode().Perm(); m&0o044 != 0 {
		return fmt.Errorf("%s is %w (mode %04o); it holds a secret: chmod go-rwx %s", path, ErrNotPrivate, m, path)
	}
	return nil
}

// CheckPrivateFile refuses path (followed if a symlink) when group or
// others may read it; for tls_key, which the TLS library reads itself.
func CheckPrivateFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return checkPrivate(path, fi)
}

// maxSecretLine bounds the first line of a secret file.
const maxSecretLine = 1024

// ReadSecret returns the first line of path, without its line end: the
// password of auth_password_file or of a user's secret_file. Only the first
// line counts, so an editor's trailing newline or a comment below it never
// becomes part of the password. A file that group or others may read, an
// empty first line and an over-long one are refused.
func ReadSecret(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer f.Close() //nolint:errcheck // read-only: nothing to lose on close
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if err := checkPrivate(path, fi); err != nil {
		return "", err
	}
	line, err := bufio.NewReaderSize(f, maxSecretLine+2).ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", fmt.Errorf("%s: first line longer than %d octets", path, maxSecretLine)
	case err != nil && !errors.Is(err, io.EOF):
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return "", fmt.Errorf("%s: the first line (the password) is empty", path)
	}
	return string(line), nil
}

// Warnings are things a configuration that loads may still get wrong,
// for check-config to show.
func (c *Config) Warnings() []string {
	var out []string
	costs := map[int][]string{}
	for n, u := range c.Users {
		if u.PasswordHash == "" {
			continue
		}
		if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil {
			costs[cost] = append(costs[cost], n)
		}
	}
	var names []string
	for n, u := range c.Users {
		if u.SecretFile != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		// serve reads these only when it starts; say now what it
		// would refuse. (Read as the user check-config runs as, which
		// may not be serve's.)
		if _, err := ReadSecret(c.Users[n].SecretFile); err != nil {
			out = append(out, fmt.Sprintf("[user.%s] secret_file: %v; etrnflush serve will refuse to start", n, err))
		}
	}
	if len(costs) > 1 {
		var list []int
		for k := range costs {
			list = append(list, k)
		}
		sort.Ints(list)
		s := ""
		for _, k := range list {
			sort.Strings(costs[k])
			s += fmt.Sprintf(" cost %d: %v;", k, costs[k])
		}
		out = append(out, fmt.Sprintf("[user] password hashes have different bcrypt costs (%s): a failed AUTH takes as long as its user's cost, so the time tells which users exist with the cheaper costs; make every hash again with etrnflush passwd", s[1:len(s)-1]))
	}
	return out
}

// MaxBcryptCost is the highest cost of the configured password hashes, 0
// when there is none.
func (c *Config) MaxBcryptCost() int {
	max := 0
	for _, u := range c.Users {
		if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && cost > max {
			max = cost
		}
	}
	return max
}
