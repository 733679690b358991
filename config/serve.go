package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"
)

// Serve is the [serve] table: the ETRN/ATRN server run by inetd, xinetd or
// a systemd socket (etrnflush serve). Empty strings and nil pointers mean
// "not set here"; ServeSettings applies the defaults.
type Serve struct {
	EtrnClients        []string `toml:"etrn_clients"`
	EtrnPublic         *bool    `toml:"etrn_public"`
	EtrnLimit          *int     `toml:"etrn_limit"`
	EtrnWindow         string   `toml:"etrn_window"`
	StateDir           string   `toml:"state_dir"`
	TLSCert            string   `toml:"tls_cert"`
	TLSKey             string   `toml:"tls_key"`
	AllowPlaintextAuth bool     `toml:"allow_plaintext_auth"`
	IdleTimeout        string   `toml:"idle_timeout"`
	SessionTimeout     string   `toml:"session_timeout"`
	MaxCommands        *int     `toml:"max_commands"`
}

// User is a [user.NAME] table: an ODMR customer who may ATRN its hosts.
type User struct {
	PasswordHash string `toml:"password_hash"`
	// SecretFile holds the password in clear (its first line): CRAM-MD5
	// (RFC 2195), which RFC 2645 requires and fetchmail always uses,
	// needs the secret itself, not a hash of it.
	SecretFile string   `toml:"secret_file"`
	Hosts      []string `toml:"hosts"`
}

// RouteClient is the route that sends a host's mail back to the address
// that asked for it with ETRN (only etrnflush serve knows that address).
const RouteClient = "client"

// IsClientRoute reports whether route is "client" or "client:PORT", and
// gives the port ("25" when none).
func IsClientRoute(route string) (port string, ok bool) {
	if route == RouteClient {
		return "25", true
	}
	if p, found := strings.CutPrefix(route, RouteClient+":"); found {
		return p, true
	}
	return "", false
}

// ServeSettings are the [serve] values in force, defaults applied.
type ServeSettings struct {
	EtrnClients        []netip.Prefix
	EtrnPublic         bool
	EtrnLimit          int // ETRN commands per client address per EtrnWindow; 0 = no limit
	EtrnWindow         time.Duration
	StateDir           string
	TLSCert, TLSKey    string
	AllowPlaintextAuth bool
	IdleTimeout        time.Duration
	// SessionTimeout bounds a whole conversation up to an ATRN
	// turnaround, however busy the client keeps it.
	SessionTimeout time.Duration
	MaxCommands    int
}

// Built-in [serve] defaults; the man page lists the same values.
const (
	DefaultEtrnLimit   = 10
	DefaultEtrnWindow  = "1m"
	DefaultIdleTimeout = "5m"
	// DefaultSessionTimeout is far more than an ETRN or an ATRN needs,
	// and bounds what a client that sends a NOOP now and then can hold.
	DefaultSessionTimeout = "10m"
	DefaultMaxCommands    = 100
	// serveStateName is the state directory's name under spool_dir when
	// state_dir is not set; the leading dot keeps it from ever being
	// taken for a host's spool.
	serveStateName = ".etrnflush-serve"
)

// ServeSettings returns the [serve] values in force. The file was
// validated at load, so nothing here can fail.
func (c *Config) ServeSettings() ServeSettings {
	s := c.Serve
	out := ServeSettings{
		EtrnPublic:         s.EtrnPublic == nil || *s.EtrnPublic,
		EtrnLimit:          DefaultEtrnLimit,
		StateDir:           s.StateDir,
		TLSCert:            s.TLSCert,
		TLSKey:             s.TLSKey,
		AllowPlaintextAuth: s.AllowPlaintextAuth,
		MaxCommands:        DefaultMaxCommands,
	}
	for _, n := range s.EtrnClients {
		if p, err := parseNetwork(n); err == nil {
			out.EtrnClients = append(out.EtrnClients, p)
		}
	}
	if s.EtrnLimit != nil {
		out.EtrnLimit = *s.EtrnLimit
	}
	if s.MaxCommands != nil {
		out.MaxCommands = *s.MaxCommands
	}
	out.EtrnWindow, _ = ParseDuration(pick(s.EtrnWindow, DefaultEtrnWindow))
	out.IdleTimeout, _ = ParseDuration(pick(s.IdleTimeout, DefaultIdleTimeout))
	out.SessionTimeout, _ = ParseDuration(pick(s.SessionTimeout, DefaultSessionTimeout))
	if out.StateDir == "" {
		out.StateDir = filepath.Join(c.SpoolDir, serveStateName)
	}
	return out
}

// parseNetwork takes "192.0.2.0/24", "2001:db8::/32" or a single address.
func parseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network like 192.0.2.0/24", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set: write %s", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// CheckUserName validates the NAME of a [user.NAME] table: what a client
// sends in AUTH, so nothing that needs quoting in a log line.
func CheckUserName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("user name must have 1 to 64 characters")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._@+-", c) >= 0:
		default:
			return fmt.Errorf("user name %q: character %q not allowed (letters, digits and ._@+- only)", n, c)
		}
	}
	return nil
}

// tableLine finds the line of key inside the table whose header is
// [prefix], [prefix.NAME] or [prefix."NAME"], or of the header itself when
// key is "" or not in the table, for error messages.
func tableLine(data []byte, prefix, name, key string) int {
	lines := strings.Split(string(data), "\n")
	in, header := false, 0
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			h := strings.TrimSpace(strings.Trim(t, "[]"))
			in = (name == "" && h == prefix) || (name != "" && (h == prefix+"."+name || h == prefix+`."`+name+`"`))
			if in {
				header = i + 1
				if key == "" {
					return header
				}
			}
			continue
		}
		if in && key != "" && strings.HasPrefix(t, key) {
			if rest := strings.TrimSpace(t[len(key):]); strings.HasPrefix(rest, "=") {
				return i + 1
			}
		}
	}
	return header
}

func (c *Config) validateServe(l *errorList) {
	data := l.data
	s := c.Serve
	errAt := func(key, msg string) error {
		return &Error{File: c.File, Line: tableLine(data, "serve", "", key), Key: toml.Key{"serve", key}.String(), Msg: msg}
	}
	for _, n := range s.EtrnClients {
		if _, err := parseNetwork(n); err != nil {
			l.add(errAt("etrn_clients", err.Error()))
		}
	}
	if s.EtrnLimit != nil && *s.EtrnLimit < 0 {
		l.add(errAt("etrn_limit", "must be 0 (no limit) or more"))
	}
	if s.MaxCommands != nil && *s.MaxCommands < 1 {
		l.add(errAt("max_commands", "must be 1 or more"))
	}
	for _, d := range []struct{ key, v string }{{"etrn_window", s.EtrnWindow}, {"idle_timeout", s.IdleTimeout}, {"session_timeout", s.SessionTimeout}} {
		if d.v == "" {
			continue
		}
		if _, err := ParseDuration(d.v); err != nil {
			l.add(errAt(d.key, err.Error()))
		}
	}
	for _, p := range []struct{ key, v string }{{"state_dir", s.StateDir}, {"tls_cert", s.TLSCert}, {"tls_key", s.TLSKey}} {
		if p.v != "" && !filepath.IsAbs(p.v) {
			l.add(errAt(p.key, "must be an absolute path"))
		}
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		l.add(errAt("tls_cert", "tls_cert and tls_key go together"))
	}
	names := make([]string, 0, len(c.Users))
	for n := range c.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u := c.Users[n]
		uerr := func(key, msg string) error {
			k := toml.Key{"user", n}
			if key != "" {
				k = append(k, key)
			}
			return &Error{File: c.File, Line: tableLine(data, "user", n, key), Key: k.String(), Msg: msg}
		}
		if err := CheckUserName(n); err != nil {
			l.add(uerr("", err.Error()))
		}
		if u.PasswordHash == "" && u.SecretFile == "" {
			l.add(uerr("password_hash", "missing: make one with etrnflush passwd, or set secret_file (needed for CRAM-MD5)"))
		}
		if u.PasswordHash != "" {
			if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
				l.add(uerr("password_hash", "not a bcrypt hash (make one with etrnflush passwd): "+err.Error()))
			}
		}
		if u.SecretFile != "" && !filepath.IsAbs(u.SecretFile) {
			l.add(uerr("secret_file", "must be an absolute path"))
		}
		if len(u.Hosts) == 0 {
			l.add(uerr("hosts", "missing: list the hosts this user may ATRN"))
		}
		for _, h := range u.Hosts {
			folded, err := CheckHostName(h)
			if err != nil {
				l.add(uerr("hosts", fmt.Sprintf("%q: %v", h, err)))
			} else if folded != h {
				l.add(uerr("hosts", fmt.Sprintf("host names are written in lower case without @ or #: use %q", folded)))
			}
		}
	}
}
