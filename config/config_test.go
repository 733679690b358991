package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"etrnflush/sender"
)

func TestCheckHostName(t *testing.T) {
	cases := []struct {
		in, want string
		bad      bool
	}{
		{in: "client.example", want: "client.example"},
		{in: "Client.EXAMPLE", want: "client.example"},
		{in: "@Client.Example", want: "client.example"},
		{in: "#queue-1", want: "queue-1"},
		{in: "a-b.c-d.example", want: "a-b.c-d.example"},
		{in: "", bad: true},
		{in: "@", bad: true},
		{in: "-x", bad: true},
		{in: "../etc", bad: true},
		{in: "a/b", bad: true},
		{in: "a..b", bad: true},
		{in: ".a", bad: true},
		{in: "a.", bad: true},
		{in: "a b", bad: true},
		{in: "a\nb", bad: true},
		{in: "a\x00b", bad: true},
		{in: "a;b", bad: true},
		{in: "$(id)", bad: true},
		{in: "@@a", bad: true},
		{in: "a-.b", bad: true},
		{in: strings.Repeat("a", 64) + ".b", bad: true},
		{in: strings.Repeat("a.", 126) + "bc", bad: true}, // 254 octets
		{in: strings.Repeat("a.", 125) + "abc", want: strings.Repeat("a.", 125) + "abc"},
		{in: "höst.example", bad: true},
	}
	for _, c := range cases {
		got, err := CheckHostName(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("CheckHostName(%q) = %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("CheckHostName(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "etrnflush.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"unknown key", "spool_dir = \"/x\"\nspooldir = \"/y\"\n", `:2: key "spooldir": unknown key`},
		{"unknown host key", "[host.\"a.example\"]\nroute = \"b.example\"\nrout = \"c\"\n", `:3: key host."a.example".rout: unknown key`},
		{"bad tls", "tls = \"maybe\"\n", `:1: key "tls": "maybe" is not one of none, may, encrypt, verify`},
		{"bad host tls", "[host.\"a.example\"]\ntls = \"yes\"\n", `:2: key host."a.example".tls: "yes" is not one of`},
		{"bad duration", "timeout = \"5 minutes\"\n", `:1: key "timeout": "5 minutes" is not a duration`},
		{"negative duration", "timeout = \"-5s\"\n", `must be positive`},
		{"syntax", "tls = \"may\"\nfoo = \n", `:2: `},
		{"wrong type", "timeout = 5\n", `:1: key "timeout": wrong type: a number is written here, a string is needed`},
		{"wrong host type", "tls = \"may\"\n[host.\"a.example\"]\n\nroute = [\"x\"]\n", `:4: key host."a.example".route: wrong type: a list`},
		{"upper-case host line", "tls = \"may\"\n\n[host.\"B.example\"]\nroute = \"x.example\"\n", `:3: key host."B.example": `},
		{"relative spool_dir", "spool_dir = \"spool\"\n", `key "spool_dir": must be an absolute path`},
		{"bad host name", "[host.\"a/b\"]\nroute = \"x.example\"\n", `:1: key host."a/b": character '/' not allowed`},
		{"upper-case host", "[host.\"A.example\"]\nroute = \"x.example\"\n", `use "a.example"`},
		{"bad route", "[host.\"a.example\"]\nroute = \"x.example:99999\"\n", `bad port`},
		{"auth without file", "[host.\"a.example\"]\nauth_user = \"u\"\n", `go together`},
		{"auth in clear", "[host.\"a.example\"]\ntls = \"none\"\nauth_user = \"u\"\nauth_password_file = \"/p\"\n", `needs a verified server, but tls is "none": set tls = "verify"`},
		{"auth with tls may", "[host.\"a.example\"]\ntls = \"may\"\nauth_user = \"u\"\nauth_password_file = \"/p\"\n", `but tls is "may": set tls = "verify"`},
		{"auth with global encrypt", "tls = \"encrypt\"\n[host.\"a.example\"]\nauth_user = \"u\"\nauth_password_file = \"/p\"\n", `but tls is "encrypt"`},
		{"helo localhost", "helo = \"localhost\"\n", `never say localhost`},
		{"bad log", "log = \"somewhere\"\n", `not stderr, syslog`},
		{"shared spool", "[host.\"a.example\"]\nspool = \"/s/x\"\n[host.\"b.example\"]\nspool = \"/s/x/\"\n", `:4: key host."b.example".spool: /s/x is also the spool of host "a.example"`},
		{"another host's default spool", "spool_dir = \"/s\"\n[host.\"a.example\"]\nspool = \"/s/b.example\"\n", `:3: key host."a.example".spool: is the default spool of host "b.example"`},
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
			if _, ok := err.(*Error); !ok {
				t.Errorf("error is %T, want *Error", err)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.toml")
	c, err := Load(missing, false)
	if err != nil || c.SpoolDir != Defaults().SpoolDir {
		t.Fatalf("missing default file: %v %+v", err, c)
	}
	if _, err := Load(missing, true); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Fatalf("missing named file: %v", err)
	}
}

func TestLayering(t *testing.T) {
	p := write(t, `spool_dir = "/var/spool/etrn"
tls = "encrypt"
timeout = "30s"
helo = "mx.isp.example"

[host."a.example"]
route = "[2001:db8::1]:2525"
tls = "verify"
tls_name = "mx.a.example"
spool = "/srv/a"
auth_user = "a"
auth_password_file = "/etc/etrnflush/a.pw"

[host."b.example"]
format = "bsmtp"
`)
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	a := c.For("a.example")
	if a.Spool != "/srv/a" || a.TLS != "verify" || a.Route != "[2001:db8::1]:2525" || a.Timeout != 30*time.Second ||
		a.DataTimeout != 10*time.Minute || a.Helo != "mx.isp.example" || a.AuthUser != "a" {
		t.Errorf("a.example: %+v", a)
	}
	b := c.For("b.example")
	if b.Spool != "/var/spool/etrn/b.example" || b.TLS != "encrypt" || b.Format != "bsmtp" || b.Route != "" {
		t.Errorf("b.example: %+v", b)
	}
	// check-config shows every key, set or (as a comment) not.
	var sb strings.Builder
	if err := a.Print(&sb, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.PrintGlobal(&sb, c.For("")); err != nil {
		t.Fatal(err)
	}
	for _, k := range append(tomlKeys(Host{}), tomlKeys(Config{})...) {
		if !strings.Contains(sb.String(), "\n"+k+" = ") && !strings.Contains(sb.String(), "\n# "+k+" not set: ") {
			t.Errorf("check-config output lacks %s:\n%s", k, sb.String())
		}
	}
}

// TestPrintLoadsBack: what check-config prints is a configuration that
// gives every host the settings the original gives it.
func TestPrintLoadsBack(t *testing.T) {
	p := write(t, `spool_dir = "/var/spool/etrn"
tls = "encrypt"
timeout = "30s"
helo = "mx.isp.example"
warn_age = "2d"
max_age = "36h"
bounce = false
sendmail = ["/usr/sbin/exim", "-f", "<>", "--"]
pipelining = false
max_mail_refusals = 0
mailstore_prefix_lines = 2
delivered_to_prefix = "x-"

[host."a.example"]
route = "[2001:db8::1]:2525"
tls = "verify"
tls_name = "mx.a.example"
spool = "/srv/a"
auth_user = "a"
auth_password_file = "/etc/etrnflush/a.pw"
chunking = false
bounce = true

[host."b.example"]
format = "bsmtp"
max_inflight = 3
maildir_envelope = "delivered-to"

[serve]
etrn_clients = ["192.0.2.0/24", "2001:db8::1"]
etrn_limit = 0
tls_cert = "/c.pem"
tls_key = "/k.pem"

[user.alice]
secret_file = "/etc/alice"
hosts = ["a.example"]
`)
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := c.PrintGlobal(&sb, c.For("")); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"a.example", "b.example"} {
		if err := c.For(h).Print(&sb, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.PrintServe(&sb); err != nil {
		t.Fatal(err)
	}
	back, err := Load(write(t, sb.String()), true)
	if err != nil {
		t.Fatalf("%v\n%s", err, sb.String())
	}
	for _, h := range []string{"a.example", "b.example", "other.example", ""} {
		if a, b := c.For(h), back.For(h); !reflect.DeepEqual(a, b) {
			t.Errorf("%q: loaded back\n%+v\nwant\n%+v", h, b, a)
		}
	}
	if a, b := c.ServeSettings(), back.ServeSettings(); !reflect.DeepEqual(a, b) {
		t.Errorf("serve: loaded back\n%+v\nwant\n%+v", b, a)
	}
	if !reflect.DeepEqual(c.Users, back.Users) {
		t.Errorf("users: loaded back %+v, want %+v", back.Users, c.Users)
	}
}

// The window's one default is the sender's: a file without max_inflight
// and a Config not made by Load both get it.
func TestDefaultWindowMatchesSender(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etrnflush.toml")
	if err := os.WriteFile(p, []byte("[host.\"h.example\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	for what, cfg := range map[string]*Config{"loaded": c, "zero": {}} {
		if got := cfg.For("h.example").MaxInflight; got != sender.DefaultMaxInflight {
			t.Errorf("%s: max_inflight %d, want sender.DefaultMaxInflight %d", what, got, sender.DefaultMaxInflight)
		}
	}
}

// tomlKeys lists the keys of a table as Load decodes it: the toml tags of
// v's fields, without the nested tables (maps, structs).
func tomlKeys(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if k := f.Type.Kind(); tag == "" || tag == "-" || k == reflect.Map || k == reflect.Struct {
			continue
		}
		out = append(out, tag)
	}
	return out
}

// TestLoadAllErrors: one load reports every problem, in file order, with
// a hint where the likely fix is known.
func TestLoadAllErrors(t *testing.T) {
	p := write(t, `tls = "sometimes"
formt = "bsmtp"
timeout = 5

[host.cust1.example]
route = "192.0.2.1"

[host."b.example"]
rout = "x.example"
log = "/var/log/x"
`)
	_, err := Load(p, true)
	var all Errors
	if !errors.As(err, &all) {
		t.Fatalf("error %v (%T), want Errors", err, err)
	}
	want := []string{
		`:1: key "tls": "sometimes" is not one of`,
		`:2: key "formt": unknown key; did you mean "format"?`,
		`:3: key "timeout": wrong type: a number is written here, a string is needed`,
		`:5: key "host.cust1.example": unknown key: [host.cust1.example] is read as host "cust1" with a table "example"; a name with dots must be quoted: [host."cust1.example"]`,
		`:9: key host."b.example".rout: unknown key; did you mean "route"?`,
		`:10: key host."b.example".log: unknown key: log is a global key`,
	}
	if len(all) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(all), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(all[i].Error(), w) {
			t.Errorf("error %d: %s\nwant it to contain %s", i, all[i], w)
		}
	}
	var one *Error
	if !errors.As(err, &one) || one != all[0] {
		t.Errorf("errors.As(*Error) gives %v, want the first", one)
	}
}
