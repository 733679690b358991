package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCheckHostName: the ETRN argument comes from the network. Whatever
// CheckHostName accepts must be safe as a file name component and must be
// its own canonical form.
func FuzzCheckHostName(f *testing.F) {
	for _, s := range []string{"client.example", "@Client.Example", "#queue-1", "../etc", "a b", "-x", "", "a..b", "a/b", "x\x00y", "é.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		h, err := CheckHostName(in)
		if err != nil {
			if h != "" {
				t.Fatalf("CheckHostName(%q) = %q with error %v", in, h, err)
			}
			return
		}
		if h == "" || len(h) > 253 || h[0] == '-' || h[0] == '.' || strings.Contains(h, "..") {
			t.Fatalf("CheckHostName(%q) accepted %q", in, h)
		}
		for i := 0; i < len(h); i++ {
			c := h[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				t.Fatalf("CheckHostName(%q) = %q holds %q", in, h, c)
			}
		}
		if again, err := CheckHostName(h); err != nil || again != h {
			t.Fatalf("CheckHostName(%q) = %q, %v: not canonical", h, again, err)
		}
	})
}

// FuzzLoad: any file content either loads into a valid configuration or
// fails with a *Error (exit 78) that names the file; never a panic, never
// an error of another kind.
func FuzzLoad(f *testing.F) {
	f.Add("spool_dir = \"/var/spool/x\"\ntimeout = \"5m\"\n")
	f.Add("[host.\"a.example\"]\nroute = \"192.0.2.1:2525\"\ntls = \"verify\"\ntls_name = \"mx.a.example\"\n")
	f.Add("timeout = 5\n")
	f.Add("[host.\"A.example\"]\n")
	f.Add("[host.a]\nx = [1,2]\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		p := filepath.Join(dir, "etrnflush.toml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p, true)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.File != p {
				t.Fatalf("Load error %T %v is not a *Error naming the file", err, err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		for h := range c.Hosts {
			if got, err := CheckHostName(h); err != nil || got != h {
				t.Fatalf("loaded host %q, which CheckHostName gives as %q, %v", h, got, err)
			}
			_ = c.For(h)
		}
	})
}
