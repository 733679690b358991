package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, text string
		mode       os.FileMode
		want, err  string
	}{
		{"one line", "s3cret\n", 0o600, "s3cret", ""},
		{"no newline", "s3cret", 0o400, "s3cret", ""},
		{"CRLF", "s3cret\r\n", 0o600, "s3cret", ""},
		{"only the first line", "s3cret\nsecond line\n", 0o600, "s3cret", ""},
		{"spaces kept", " a b \n", 0o600, " a b ", ""},
		{"empty", "\nx\n", 0o600, "", "is empty"},
		{"group-readable", "s3cret\n", 0o640, "", "chmod go-rwx "},
		{"world-readable", "s3cret\n", 0o604, "", "(mode 0604)"},
		{"too long", strings.Repeat("x", 2000) + "\n", 0o600, "", "longer than"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, "s"+string(rune('a'+i)))
			if err := os.WriteFile(p, []byte(c.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, c.mode); err != nil {
				t.Fatal(err)
			}
			got, err := ReadSecret(p)
			if c.err == "" {
				if err != nil || got != c.want {
					t.Fatalf("ReadSecret = %q, %v; want %q", got, err, c.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("ReadSecret = %q, %v; want an error with %q", got, err, c.err)
			}
			if c.mode&0o044 != 0 && (!errors.Is(err, ErrNotPrivate) || !strings.HasSuffix(err.Error(), "chmod go-rwx "+p)) {
				t.Errorf("error %q does not end with the chmod for %s", err, p)
			}
		})
	}
}

// TestConfigWithHashesMustBePrivate: a file with [user] password hashes
// that group or others may read is refused, with the chmod; without
// hashes (or once private) it loads.
func TestConfigWithHashesMustBePrivate(t *testing.T) {
	withHash := "[user.alice]\npassword_hash = \"" + testHash + "\"\nhosts = [\"h.example\"]\n"
	p := write(t, withHash)
	if _, err := Load(p, true); err != nil {
		t.Fatalf("0600: %v", err)
	}
	for _, m := range []os.FileMode{0o640, 0o644, 0o604} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, true)
		if err == nil || !strings.Contains(err.Error(), "chmod go-rwx "+p) || !strings.HasPrefix(err.Error(), p+": ") {
			t.Errorf("mode %04o: %v; want the chmod that fixes it", m, err)
		}
	}
	q := write(t, "[user.bob]\nsecret_file = \"/etc/etrnflush/bob.secret\"\nhosts = [\"h.example\"]\n")
	if err := os.Chmod(q, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(q, true); err != nil {
		t.Errorf("a file without hashes, 0644: %v", err)
	}
}

func TestWarningsMixedCosts(t *testing.T) {
	const cost5 = "$2a$05$eGnrszirNzr5CVmU6FjVee89C9DKksB1cs0DABYMX/CyCvjbrxLR6"
	c, err := Load(write(t, "[user.alice]\npassword_hash = \""+testHash+"\"\nhosts = [\"h.example\"]\n[user.bob]\npassword_hash = \""+testHash+"\"\nhosts = [\"h.example\"]\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 0 || c.MaxBcryptCost() != 4 {
		t.Errorf("same costs: warnings %q, max %d", w, c.MaxBcryptCost())
	}
	c.Users["carol"] = User{PasswordHash: cost5, Hosts: []string{"h.example"}}
	w := c.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "cost 4: [alice bob]; cost 5: [carol]") || c.MaxBcryptCost() != 5 {
		t.Errorf("mixed costs: warnings %q, max %d", w, c.MaxBcryptCost())
	}
}

func TestWarningsSecretFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	open := filepath.Join(dir, "open")
	for _, p := range []string{good, open} {
		if err := os.WriteFile(p, []byte("pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(write(t, "[user.a]\nsecret_file = \""+good+"\"\nhosts = [\"h.example\"]\n[user.b]\nsecret_file = \""+open+"\"\nhosts = [\"h.example\"]\n[user.c]\nsecret_file = \""+filepath.Join(dir, "missing")+"\"\nhosts = [\"h.example\"]\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	w := c.Warnings()
	if len(w) != 2 || !strings.HasPrefix(w[0], "[user.b] secret_file: ") || !strings.Contains(w[0], "chmod go-rwx "+open) ||
		!strings.HasPrefix(w[1], "[user.c] secret_file: ") {
		t.Errorf("warnings %q", w)
	}
}
