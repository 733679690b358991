package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const testHash = "$2a$04$eGnrszirNzr5CVmU6FjVee89C9DKksB1cs0DABYMX/CyCvjbrxLR6"

func TestServeErrors(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"unknown serve key", "[serve]\netrn_client = []\n", `:2: key "serve.etrn_client": unknown key`},
		{"bad network", "[serve]\netrn_clients = [\"192.0.2.0/33\"]\n", `:2: key "serve.etrn_clients": "192.0.2.0/33" is not a network`},
		{"host bits", "[serve]\netrn_clients = [\"192.0.2.1/24\"]\n", `write 192.0.2.0/24`},
		{"not an address", "[serve]\netrn_clients = [\"mx.example\"]\n", `not an IP address`},
		{"negative limit", "[serve]\netrn_limit = -1\n", `key "serve.etrn_limit": must be 0`},
		{"no commands", "\n[serve]\nmax_commands = 0\n", `:3: key "serve.max_commands": must be 1 or more`},
		{"bad window", "[serve]\netrn_window = \"soon\"\n", `key "serve.etrn_window": "soon" is not a duration`},
		{"bad idle", "[serve]\nidle_timeout = \"0s\"\n", `key "serve.idle_timeout": "0s" must be positive`},
		{"relative state", "[serve]\nstate_dir = \"state\"\n", `key "serve.state_dir": must be an absolute path`},
		{"cert without key", "[serve]\ntls_cert = \"/c.pem\"\n", `key "serve.tls_cert": tls_cert and tls_key go together`},
		{"wrong type", "[serve]\netrn_public = \"yes\"\n", `wrong type`},
		{"bad user name", "[user.\"a b\"]\npassword_hash = \"" + testHash + "\"\nhosts = [\"h.example\"]\n", `:1: key user."a b": user name "a b": character ' ' not allowed`},
		{"no hash", "[user.alice]\nhosts = [\"h.example\"]\n", `:1: key "user.alice.password_hash": missing: make one with etrnflush passwd, or set secret_file`},
		{"relative secret", "[user.alice]\nsecret_file = \"alice.secret\"\nhosts = [\"h.example\"]\n", `:2: key "user.alice.secret_file": must be an absolute path`},
		{"bad session timeout", "[serve]\nsession_timeout = \"-1m\"\n", `key "serve.session_timeout"`},
		{"not bcrypt", "[user.alice]\npassword_hash = \"secret\"\nhosts = [\"h.example\"]\n", `:2: key "user.alice.password_hash": not a bcrypt hash`},
		{"no hosts", "[user.alice]\npassword_hash = \"" + testHash + "\"\n", `key "user.alice.hosts": missing`},
		{"bad host", "[user.alice]\npassword_hash = \"" + testHash + "\"\nhosts = [\"../x\"]\n", `:3: key "user.alice.hosts": "../x"`},
		{"upper-case host", "[user.alice]\npassword_hash = \"" + testHash + "\"\nhosts = [\"H.example\"]\n", `use "h.example"`},
		{"unknown user key", "[user.alice]\npassword_hash = \"" + testHash + "\"\nhosts = [\"h.example\"]\npassword = \"x\"\n", `:4: key "user.alice.password": unknown key`},
		{"bad client route", "[host.\"a.example\"]\nroute = \"client:0\"\n", `bad port`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(t, c.text)
			_, err := Load(p, true)
			if err == nil {
				t.Fatalf("Load accepted %q", c.text)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), p) {
				t.Errorf("error %q does not start with the file and contain %q", err, c.want)
			}
		})
	}
}

func TestServeSettings(t *testing.T) {
	c, err := Load(write(t, "spool_dir = \"/s\"\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	s := c.ServeSettings()
	if !s.EtrnPublic || s.EtrnLimit != 10 || s.EtrnWindow != time.Minute || s.IdleTimeout != 5*time.Minute || s.SessionTimeout != 10*time.Minute ||
		s.MaxCommands != 100 || s.StateDir != "/s/.etrnflush-serve" || len(s.EtrnClients) != 0 || s.AllowPlaintextAuth {
		t.Errorf("defaults: %+v", s)
	}
	c, err = Load(write(t, `[serve]
etrn_clients = ["192.0.2.0/24", "2001:db8::1", "::ffff:198.51.100.7"]
etrn_public = false
etrn_limit = 0
etrn_window = "10s"
state_dir = "/st"
idle_timeout = "30s"
session_timeout = "90s"
max_commands = 7
allow_plaintext_auth = true

[host."d.example"]
route = "client:2525"

[user.alice]
password_hash = "`+testHash+`"
hosts = ["h.example", "d.example"]
`), true)
	if err != nil {
		t.Fatal(err)
	}
	s = c.ServeSettings()
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("198.51.100.7/32")}
	if len(s.EtrnClients) != 3 || s.EtrnClients[0] != want[0] || s.EtrnClients[1] != want[1] || s.EtrnClients[2] != want[2] {
		t.Errorf("etrn_clients = %v, want %v", s.EtrnClients, want)
	}
	if s.EtrnPublic || s.EtrnLimit != 0 || s.EtrnWindow != 10*time.Second || s.StateDir != "/st" ||
		s.IdleTimeout != 30*time.Second || s.SessionTimeout != 90*time.Second || s.MaxCommands != 7 || !s.AllowPlaintextAuth {
		t.Errorf("settings: %+v", s)
	}
	if port, ok := IsClientRoute(c.For("d.example").Route); !ok || port != "2525" {
		t.Errorf("route client:2525 = %q, %v", port, ok)
	}
	for _, r := range []string{"", "client.example", "clients", "192.0.2.1:25"} {
		if _, ok := IsClientRoute(r); ok {
			t.Errorf("IsClientRoute(%q) = true", r)
		}
	}
}
