// Package config reads etrnflush's TOML configuration strictly: an unknown
// key or a bad value is an error naming the file, the line and the key, so a
// typo never silently changes where mail goes.
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"etrnflush/sender"
)

// DefaultPath is read when no --config is given; its absence is not an error.
const DefaultPath = "/etc/etrnflush/etrnflush.toml"

// Host holds the per-host settings of a [host."name"] table. Empty strings
// mean "not set here".
type Host struct {
	Route            string `toml:"route"`
	Spool            string `toml:"spool"`
	Format           string `toml:"format"`
	Helo             string `toml:"helo"`
	TLS              string `toml:"tls"`
	TLSName          string `toml:"tls_name"`
	AuthUser         string `toml:"auth_user"`
	AuthPasswordFile string `toml:"auth_password_file"`

	MailstorePrefixLines *int    `toml:"mailstore_prefix_lines"`
	MailstoreSuffixLines *int    `toml:"mailstore_suffix_lines"`
	MaildirEnvelope      string  `toml:"maildir_envelope"`
	DeliveredToPrefix    *string `toml:"delivered_to_prefix"`
	// Engine switches; nil (or 0) means "as the global key says".
	MaxInflight *int  `toml:"max_inflight"`
	Pipelining  *bool `toml:"pipelining"`
	Chunking    *bool `toml:"chunking"`
	Coalesce    *bool `toml:"coalesce"`

	MaxConnections *int `toml:"max_connections"`
	// MaxMailRefusals: nil means the global value.
	MaxMailRefusals *int   `toml:"max_mail_refusals"`
	EightBit        string `toml:"eight_bit"`

	Bounce  *bool  `toml:"bounce"` // nil: as the global key says
	MaxAge  string `toml:"max_age"`
	WarnAge string `toml:"warn_age"`

	ArchiveDir    string `toml:"archive_dir"`
	ArchiveMaxAge string `toml:"archive_max_age"`
}

// Config is the whole file. Durations stay strings until validated so that
// an error can name the key and line.
type Config struct {
	SpoolDir    string `toml:"spool_dir"`
	Format      string `toml:"format"`
	Helo        string `toml:"helo"`
	TLS         string `toml:"tls"`
	Timeout     string `toml:"timeout"`
	DataTimeout string `toml:"data_timeout"`
	Log         string `toml:"log"`
	MaxInflight int    `toml:"max_inflight"`
	Pipelining  *bool  `toml:"pipelining"`
	Chunking    *bool  `toml:"chunking"`
	Coalesce    *bool  `toml:"coalesce"`
	// MaxConnections bounds the sessions one run opens: a server that
	// ends a session after N messages (421) is dialled again.
	MaxConnections int `toml:"max_connections"`
	// MaxMailRefusals: a server that refuses MAIL FROM for more than this
	// many consecutive messages from different senders refuses us, not
	// them: the run stops and keeps everything (0: never).
	MaxMailRefusals *int            `toml:"max_mail_refusals"`
	EightBit        string          `toml:"eight_bit"`
	Hosts           map[string]Host `toml:"host"`
	Serve           Serve           `toml:"serve"`
	Users           map[string]User `toml:"user"`

	MailstorePrefixLines int    `toml:"mailstore_prefix_lines"`
	MailstoreSuffixLines int    `toml:"mailstore_suffix_lines"`
	MaildirEnvelope      string `toml:"maildir_envelope"`
	DeliveredToPrefix    string `toml:"delivered_to_prefix"`

	// Bounce (default on) returns failed mail to its sender as a DSN,
	// handed to the Sendmail argv (nil: DefaultSendmail).
	Bounce   *bool    `toml:"bounce"`
	Sendmail []string `toml:"sendmail"`
	// MaxAge expires held mail (default 5d); WarnAge ("": never) sends
	// one delay warning. Both are ParseAge strings.
	MaxAge  string `toml:"max_age"`
	WarnAge string `toml:"warn_age"`
	// ArchiveDir ("": none) keeps a copy of each accepted message in
	// ArchiveDir/HOST; ArchiveMaxAge (default 30d) prunes them.
	ArchiveDir    string `toml:"archive_dir"`
	ArchiveMaxAge string `toml:"archive_max_age"`

	// File is the path the config was read from ("" for built-in defaults).
	File string `toml:"-"`
}

// Defaults are the built-in values; the file overlays them.
func Defaults() Config {
	return Config{
		SpoolDir:    "/var/spool/etrnflush",
		Format:      "auto",
		TLS:         "may",
		Timeout:     "5m",
		DataTimeout: "10m",

		MaildirEnvelope: "exim",
		MaxInflight:     sender.DefaultMaxInflight,
		MaxConnections:  DefaultMaxConnections,
		EightBit:        "convert",
	}
}

// DefaultMaxConnections is how many sessions one run may open to a host
// when a server ends them early (421 after N messages, a closed
// connection after some were answered): enough for Exim's and Postfix's
// per-connection limits on a large backlog, few enough that a server
// closing every session at once costs little.
const DefaultMaxConnections = 10

// DefaultMaxMailRefusals is max_mail_refusals when not set.
const DefaultMaxMailRefusals = 5

// MaxMaxConnections caps max_connections.
const MaxMaxConnections = 1000

// EightBitPolicies are the values of eight_bit: what is done with 8-bit
// content for a server without 8BITMIME.
var EightBitPolicies = []string{"convert", "refuse"}

// MaxMaxInflight caps max_inflight: more buys no speed on any link and
// widens what a crash can duplicate.
const MaxMaxInflight = 1000

// Formats and TLS levels accepted in the file and on the command line.
var (
	Formats   = []string{"auto", "bsmtp", "mailstore", "maildir"}
	TLSLevels = []string{"none", "may", "encrypt", "verify"}
	// MaildirEnvelopes are the places a maildir message's envelope can
	// be read from.
	MaildirEnvelopes = []string{"exim", "delivered-to"}
)

// Error is a configuration problem (exit 78).
type Error struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	switch {
	case strings.Contains(e.Key, `"`):
		// Already in TOML's own notation: host."a.example".tls
		fmt.Fprintf(&b, "key %s: ", e.Key)
	case e.Key != "":
		fmt.Fprintf(&b, "key %q: ", e.Key)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads path. When explicit is false and path does not exist, the
// built-in defaults are returned.
func Load(path string, explicit bool) (*Config, error) {
	c := Defaults()
	data, fi, err := readConfig(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return &c, nil
		}
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", unwrapPath(err))}
	}
	c.File = path
	l := &errorList{file: path, data: data}
	if decodeAll(l, data, &c) {
		c.validate(l)
	}
	if err := l.result(); err != nil {
		return nil, err
	}
	if c.holdsHashes() {
		// Checked after the contents, so that a broken file gets its
		// own error first.
		if m := fi.Mode().Perm(); m&0o044 != 0 {
			return nil, &Error{File: path, Msg: fmt.Sprintf("holds [user] password hashes but is %v (mode %04o): chmod go-rwx %s", ErrNotPrivate, m, path)}
		}
	}
	return &c, nil
}

// readConfig reads path and gives the mode it had when read.
func readConfig(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close() //nolint:errcheck // read-only
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(f)
	return data, fi, err
}

// holdsHashes reports whether the file gives [user] password hashes:
// anyone who can read those can try passwords offline, at the speed of
// their own machine, so such a file must be private.
func (c *Config) holdsHashes() bool {
	for _, u := range c.Users {
		if u.PasswordHash != "" {
			return true
		}
	}
	return false
}

// BurntSushi/toml reports a value of the wrong type as a plain error whose
// text carries the line and key; take them out so that the message has the
// same FILE:LINE: key "K": shape as every other config error.
var (
	decodeErrRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)
	typeErrRE   = regexp.MustCompile(`^incompatible types: TOML value has type (\S+); destination has type (\S+)$`)
)

func decodeError(path string, data []byte, err error) error {
	m := decodeErrRE.FindStringSubmatch(oneLine(err.Error()))
	if m == nil {
		return &Error{File: path, Msg: oneLine(err.Error())}
	}
	line, _ := strconv.Atoi(m[1])
	ks, uerr := strconv.Unquote(m[2])
	if uerr != nil {
		return &Error{File: path, Msg: oneLine(err.Error())}
	}
	key := splitKey(ks)
	if line == 0 {
		line = keyLine(data, key)
	}
	msg := m[3]
	if t := typeErrRE.FindStringSubmatch(msg); t != nil {
		msg = fmt.Sprintf("wrong type: a %s is written here, a %s is needed", tomlTypeName(t[1]), tomlTypeName(t[2]))
		if t[2] == "string" {
			msg += " (in double quotes)"
		}
	}
	return &Error{File: path, Line: line, Key: key.String(), Msg: msg}
}

// splitKey undoes toml.Key.String for our keys: bare words and quoted
// host names (host."a.example".tls).
func splitKey(s string) toml.Key {
	var k toml.Key
	for s != "" {
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return append(k, s)
			}
			k = append(k, s[1:end+1])
			s = strings.TrimPrefix(s[end+2:], ".")
			continue
		}
		part, rest, _ := strings.Cut(s, ".")
		k = append(k, part)
		s = rest
	}
	return k
}

func tomlTypeName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "number"
	case strings.HasPrefix(goType, "float"):
		return "number"
	case strings.HasPrefix(goType, "map"):
		return "table"
	case strings.HasPrefix(goType, "[]"):
		return "list"
	case goType == "bool":
		return "boolean"
	}
	return goType
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func (c *Config) errAt(data []byte, key toml.Key, msg string) error {
	return &Error{File: c.File, Line: keyLine(data, key), Key: key.String(), Msg: msg}
}

// validate checks the values, adding every problem to l.
func (c *Config) validate(l *errorList) {
	data := l.data
	add := l.add
	check := func(key toml.Key, v string, ok func(string) error) {
		if v == "" {
			return
		}
		if err := ok(v); err != nil {
			add(c.errAt(data, key, err.Error()))
		}
	}
	if c.SpoolDir == "" || !filepath.IsAbs(c.SpoolDir) {
		add(c.errAt(data, toml.Key{"spool_dir"}, "must be an absolute path"))
	}
	check(toml.Key{"format"}, c.Format, CheckFormat)
	check(toml.Key{"tls"}, c.TLS, CheckTLS)
	check(toml.Key{"helo"}, c.Helo, CheckHelo)
	check(toml.Key{"timeout"}, c.Timeout, checkDuration)
	check(toml.Key{"data_timeout"}, c.DataTimeout, checkDuration)
	check(toml.Key{"log"}, c.Log, CheckLog)
	c.checkFormatKeys(l, nil, &c.MailstorePrefixLines, &c.MailstoreSuffixLines, c.MaildirEnvelope, &c.DeliveredToPrefix)
	if err := CheckMaxInflight(c.MaxInflight); err != nil {
		add(c.errAt(data, toml.Key{"max_inflight"}, err.Error()))
	}
	if err := CheckMaxConnections(c.MaxConnections); err != nil {
		add(c.errAt(data, toml.Key{"max_connections"}, err.Error()))
	}
	if c.MaxMailRefusals != nil && (*c.MaxMailRefusals < 0 || *c.MaxMailRefusals > 10000) {
		add(c.errAt(data, toml.Key{"max_mail_refusals"}, fmt.Sprintf("%d is not between 0 and 10000", *c.MaxMailRefusals)))
	}
	check(toml.Key{"eight_bit"}, c.EightBit, CheckEightBit)
	if err := CheckSendmail(c.Sendmail); err != nil {
		add(c.errAt(data, toml.Key{"sendmail"}, err.Error()))
	}
	for _, a := range []struct{ k, v string }{{"max_age", c.MaxAge}, {"warn_age", c.WarnAge}, {"archive_max_age", c.ArchiveMaxAge}} {
		check(toml.Key{a.k}, a.v, checkAge)
	}
	check(toml.Key{"archive_dir"}, c.ArchiveDir, CheckArchiveDir)
	names := make([]string, 0, len(c.Hosts))
	for n := range c.Hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := c.Hosts[n]
		k := func(s string) toml.Key { return toml.Key{"host", n, s} }
		if folded, err := CheckHostName(n); err != nil {
			add(&Error{File: c.File, Line: keyLine(data, toml.Key{"host", n}), Key: toml.Key{"host", n}.String(), Msg: err.Error()})
		} else if folded != n {
			add(&Error{File: c.File, Line: keyLine(data, toml.Key{"host", n}), Key: toml.Key{"host", n}.String(),
				Msg: fmt.Sprintf("host names are written in lower case without @ or #: use %q", folded)})
		}
		check(k("route"), h.Route, CheckRoute)
		if h.Spool != "" && !filepath.IsAbs(h.Spool) {
			add(c.errAt(data, k("spool"), "must be an absolute path"))
		}
		check(k("format"), h.Format, CheckFormat)
		check(k("helo"), h.Helo, CheckHelo)
		c.checkFormatKeys(l, k, h.MailstorePrefixLines, h.MailstoreSuffixLines, h.MaildirEnvelope, h.DeliveredToPrefix)
		check(k("tls"), h.TLS, CheckTLS)
		check(k("tls_name"), h.TLSName, func(s string) error { _, err := CheckHostName(s); return err })
		if h.MaxInflight != nil {
			if err := CheckMaxInflight(*h.MaxInflight); err != nil {
				add(c.errAt(data, k("max_inflight"), err.Error()))
			}
		}
		if h.MaxConnections != nil {
			if err := CheckMaxConnections(*h.MaxConnections); err != nil {
				add(c.errAt(data, k("max_connections"), err.Error()))
			}
		}
		if h.MaxMailRefusals != nil && (*h.MaxMailRefusals < 0 || *h.MaxMailRefusals > 10000) {
			add(c.errAt(data, k("max_mail_refusals"), fmt.Sprintf("%d is not between 0 and 10000", *h.MaxMailRefusals)))
		}
		check(k("eight_bit"), h.EightBit, CheckEightBit)
		for _, a := range []struct{ k, v string }{{"max_age", h.MaxAge}, {"warn_age", h.WarnAge}, {"archive_max_age", h.ArchiveMaxAge}} {
			check(k(a.k), a.v, checkAge)
		}
		check(k("archive_dir"), h.ArchiveDir, CheckArchiveDir)
		if (h.AuthUser == "") != (h.AuthPasswordFile == "") {
			add(c.errAt(data, k("auth_user"), "auth_user and auth_password_file go together"))
		} else if h.AuthUser != "" {
			if strings.ContainsAny(h.AuthUser, "\x00\r\n") {
				add(c.errAt(data, k("auth_user"), "contains a control character"))
			}
			if !filepath.IsAbs(h.AuthPasswordFile) {
				add(c.errAt(data, k("auth_password_file"), "must be an absolute path"))
			}
			// may and encrypt take any certificate: a man in the
			// middle, or a spoofed MX, would be handed the password.
			if lvl := c.tlsFor(h); lvl != "verify" {
				add(c.errAt(data, k("auth_user"), fmt.Sprintf("AUTH sends the password, so it needs a verified server, but tls is %q: set tls = \"verify\" in this table", lvl)))
			}
		}
	}
	c.checkSharedSpools(l, names)
	c.checkArchiveDirs(l, names)
	c.validateServe(l)
}

// checkFormatKeys validates the mailstore and maildir keys of the global
// table (k nil) or of a host table; nil and "" mean not set there.
func (c *Config) checkFormatKeys(l *errorList, k func(string) toml.Key, pre, suf *int, env string, prefix *string) {
	data := l.data
	if k == nil {
		k = func(s string) toml.Key { return toml.Key{s} }
	}
	for _, a := range []struct {
		key string
		n   *int
	}{{"mailstore_prefix_lines", pre}, {"mailstore_suffix_lines", suf}} {
		if a.n != nil && (*a.n < 0 || *a.n > MaxAffixLines) {
			l.add(c.errAt(data, k(a.key), fmt.Sprintf("%d is not a line count from 0 to %d", *a.n, MaxAffixLines)))
		}
	}
	if env != "" {
		if err := oneOf(env, MaildirEnvelopes); err != nil {
			l.add(c.errAt(data, k("maildir_envelope"), err.Error()))
		}
	}
	if prefix != nil {
		if err := CheckDeliveredToPrefix(*prefix); err != nil {
			l.add(c.errAt(data, k("delivered_to_prefix"), err.Error()))
		}
	}
}

// MaxAffixLines bounds mailstore_prefix_lines and mailstore_suffix_lines:
// Exim's prefix and suffix are a few header-like lines.
const MaxAffixLines = 100

// CheckDeliveredToPrefix validates the prefix qmail puts before the
// recipient in Delivered-To: printable, no white space, no '<' or '>'.
func CheckDeliveredToPrefix(v string) error {
	if len(v) > 255 {
		return errors.New("longer than 255 octets")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == 0x7f || c == '<' || c == '>' {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// checkSharedSpools refuses two hosts with one spool. The per-host lock is
// named after the host, so two hosts sharing a spool would be flushed at
// the same time, each resending what the other is sending.
func (c *Config) checkSharedSpools(l *errorList, names []string) {
	data := l.data
	owner := map[string]string{}
	for _, n := range names {
		sp := filepath.Join(c.SpoolDir, n)
		if s := c.Hosts[n].Spool; s != "" {
			sp = filepath.Clean(s)
		}
		if o, ok := owner[sp]; ok {
			l.add(c.errAt(data, toml.Key{"host", n, "spool"}, fmt.Sprintf("%s is also the spool of host %q", sp, o)))
			continue
		}
		owner[sp] = n
	}
	for _, n := range names {
		s := c.Hosts[n].Spool
		if s == "" || filepath.Dir(filepath.Clean(s)) != filepath.Clean(c.SpoolDir) {
			continue
		}
		if b := filepath.Base(s); b != n {
			if _, err := CheckHostName(b); err == nil {
				l.add(c.errAt(data, toml.Key{"host", n, "spool"},
					fmt.Sprintf("is the default spool of host %q (spool_dir/%s): two hosts would share it", b, b)))
			}
		}
	}
}

// checkArchiveDirs refuses an archive inside a spool directory: every
// name in spool_dir is taken for a host by list and flush --all, and an
// archive folder that is a host's spool would have its copies sent again.
func (c *Config) checkArchiveDirs(l *errorList, names []string) {
	data := l.data
	inside := func(p, dir string) bool {
		p, dir = filepath.Clean(p), filepath.Clean(dir)
		return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
	}
	if c.ArchiveDir != "" && inside(c.ArchiveDir, c.SpoolDir) {
		l.add(c.errAt(data, toml.Key{"archive_dir"}, fmt.Sprintf("%s is in spool_dir %s: put the archive outside it", c.ArchiveDir, c.SpoolDir)))
		return
	}
	for _, n := range names {
		h := c.Hosts[n]
		root := pick(h.ArchiveDir, c.ArchiveDir)
		if root == "" {
			continue
		}
		sp := filepath.Join(c.SpoolDir, n)
		if h.Spool != "" {
			sp = h.Spool
		}
		if inside(root, c.SpoolDir) || inside(root, filepath.Dir(sp)) || inside(sp, filepath.Join(root, n)) {
			key := toml.Key{"host", n, "archive_dir"}
			if h.ArchiveDir == "" {
				key = toml.Key{"archive_dir"}
			}
			l.add(c.errAt(data, key, fmt.Sprintf("%s is in the directory of host %q's spool %s: put the archive outside it", root, n, sp)))
		}
	}
}

// CheckMaxConnections validates max_connections.
func CheckMaxConnections(n int) error {
	if n < 1 || n > MaxMaxConnections {
		return fmt.Errorf("%d is not between 1 and %d", n, MaxMaxConnections)
	}
	return nil
}

// CheckEightBit validates eight_bit.
func CheckEightBit(v string) error { return oneOf(v, EightBitPolicies) }

// CheckMaxInflight validates a window size in messages.
func CheckMaxInflight(n int) error {
	if n < 1 || n > MaxMaxInflight {
		return fmt.Errorf("%d is not between 1 and %d", n, MaxMaxInflight)
	}
	return nil
}

func (c *Config) tlsFor(h Host) string {
	if h.TLS != "" {
		return h.TLS
	}
	return c.TLS
}

func oneOf(v string, set []string) error {
	for _, s := range set {
		if v == s {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(set, ", "))
}

// CheckFormat validates a spool format name.
func CheckFormat(v string) error { return oneOf(v, Formats) }

// CheckTLS validates a TLS level name.
func CheckTLS(v string) error { return oneOf(v, TLSLevels) }

// CheckLog validates a log destination: stderr, syslog or an absolute path.
func CheckLog(v string) error {
	if v == "stderr" || v == "syslog" || filepath.IsAbs(v) {
		return nil
	}
	return fmt.Errorf("%q is not stderr, syslog or an absolute file name", v)
}

func checkDuration(v string) error {
	_, err := ParseDuration(v)
	return err
}

// ParseDuration accepts Go durations ("90s", "5m") and must be positive.
func ParseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 30s or 5m", v)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", v)
	}
	return d, nil
}

// DefaultMaxAge is how long mail is held before it is returned to its
// sender: Exim's and Postfix's default for their own queues.
const DefaultMaxAge = "5d"

func checkAge(v string) error {
	_, err := ParseAge(v)
	return err
}

// ParseAge reads max_age and warn_age: a number of days ("5d") or a
// duration as for timeout ("36h"); positive.
func ParseAge(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d <= 0 || d > 3650 {
			return 0, fmt.Errorf("%q is not a number of days (1d to 3650d) or a duration like 36h", v)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number of days like 5d or a duration like 36h", v)
	}
	return d, nil
}

// DefaultArchiveMaxAge is how long archived copies are kept.
const DefaultArchiveMaxAge = "30d"

// CheckArchiveDir validates archive_dir: an absolute path, not the root.
func CheckArchiveDir(v string) error {
	if !filepath.IsAbs(v) || filepath.Clean(v) == "/" {
		return fmt.Errorf("%q is not an absolute path of a directory", v)
	}
	return nil
}

// DefaultSendmail is the command a DSN is handed to when sendmail is not
// set: the local MTA's sendmail interface, with the null sender so that a
// DSN that cannot be delivered is not bounced in turn. The recipient is
// appended after the "--".
var DefaultSendmail = []string{"/usr/sbin/sendmail", "-i", "-f", "<>", "--"}

// CheckSendmail validates the sendmail argv: it runs without a shell and
// without $PATH (an ETRN-started run has an empty environment), so its
// first word is an absolute path; no word may hold a NUL. nil is the
// default.
func CheckSendmail(argv []string) error {
	if argv == nil {
		return nil
	}
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) {
		return errors.New("must be a list whose first element is an absolute path, e.g. [\"/usr/sbin/sendmail\", \"-i\", \"-f\", \"<>\", \"--\"]")
	}
	for _, a := range argv {
		if strings.ContainsRune(a, 0) {
			return errors.New("contains a NUL character")
		}
	}
	return nil
}

// CheckHelo validates a name for EHLO: a domain name, never localhost.
func CheckHelo(v string) error {
	n, err := CheckHostName(v)
	if err != nil {
		return err
	}
	if n == "localhost" || strings.HasPrefix(n, "localhost.") {
		return fmt.Errorf("%q: never say localhost in EHLO", v)
	}
	return nil
}

// CheckRoute validates HOST[:PORT]; HOST may be a name or an IP address
// ([v6] with a port).
func CheckRoute(v string) error {
	host, port := v, ""
	if h, p, err := net.SplitHostPort(v); err == nil {
		host, port = h, p
	} else if strings.Count(v, ":") > 1 {
		// A bare IPv6 address without brackets or port.
		host = v
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port", v)
		}
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if _, err := CheckHostName(host); err != nil {
		return fmt.Errorf("%q: %v", v, err)
	}
	return nil
}

// CheckHostName validates a host name as it may arrive from the network in
// an ETRN command: letters, digits, hyphens and dots, at most 253 octets, an
// optional leading '@' or '#' (RFC 1985) which is stripped. It returns the
// name folded to lower case.
func CheckHostName(s string) (string, error) {
	n := s
	if strings.HasPrefix(n, "@") || strings.HasPrefix(n, "#") {
		n = n[1:]
	}
	if n == "" {
		return "", errors.New("empty host name")
	}
	if len(n) > 253 {
		return "", errors.New("longer than 253 octets")
	}
	if n[0] == '-' {
		return "", errors.New("begins with '-'")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("control character at offset %d", i)
		default:
			return "", fmt.Errorf("character %q not allowed", c)
		}
	}
	for _, label := range strings.Split(n, ".") {
		switch {
		case label == "":
			return "", errors.New("empty label (leading, trailing or double dot)")
		case len(label) > 63:
			return "", errors.New("label longer than 63 octets")
		case label[0] == '-' || label[len(label)-1] == '-':
			return "", errors.New("label begins or ends with '-'")
		}
	}
	return strings.ToLower(n), nil
}
