package config

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"etrnflush/sender"
)

// Settings are the values in force for one host after the file's global
// keys, its [host."name"] table and the command line have been layered.
type Settings struct {
	Host             string
	Spool            string
	Format           string
	Route            string // "" = look up MX records
	Helo             string // "" = this machine's FQDN
	TLS              string
	TLSName          string
	Timeout          time.Duration
	DataTimeout      time.Duration
	AuthUser         string
	AuthPasswordFile string
	Log              string

	MailstorePrefixLines int
	MailstoreSuffixLines int
	MaildirEnvelope      string
	DeliveredToPrefix    string
	MaxInflight          int    // messages written and not yet answered
	Pipelining           bool   // use PIPELINING when offered
	Chunking             bool   // use CHUNKING when offered
	Coalesce             bool   // one transaction for identical copies of a message
	MaxConnections       int    // sessions one run may open
	MaxMailRefusals      int    // consecutive MAIL refusals of different senders before a run stops; 0 never
	EightBit             string // "convert" or "refuse"

	Bounce   bool     // return failed mail to its sender
	Sendmail []string // the command that takes a DSN
	MaxAge   time.Duration
	WarnAge  time.Duration // 0: no delay warnings

	ArchiveDir    string // "": no archive
	ArchiveMaxAge time.Duration
}

// For returns the settings for host (already validated and folded); flags
// are applied by the caller on top.
func (c *Config) For(host string) Settings {
	h := c.Hosts[host]
	s := Settings{
		Host:             host,
		Spool:            filepath.Join(c.SpoolDir, host),
		Format:           pick(h.Format, c.Format),
		Route:            h.Route,
		Helo:             pick(h.Helo, c.Helo),
		TLS:              pick(h.TLS, c.TLS),
		TLSName:          h.TLSName,
		AuthUser:         h.AuthUser,
		AuthPasswordFile: h.AuthPasswordFile,
		Log:              c.Log,
	}
	if h.Spool != "" {
		s.Spool = h.Spool
	}
	s.MailstorePrefixLines, s.MailstoreSuffixLines = c.MailstorePrefixLines, c.MailstoreSuffixLines
	if h.MailstorePrefixLines != nil {
		s.MailstorePrefixLines = *h.MailstorePrefixLines
	}
	if h.MailstoreSuffixLines != nil {
		s.MailstoreSuffixLines = *h.MailstoreSuffixLines
	}
	s.MaildirEnvelope = pick(h.MaildirEnvelope, pick(c.MaildirEnvelope, "exim"))
	s.DeliveredToPrefix = c.DeliveredToPrefix
	if h.DeliveredToPrefix != nil {
		s.DeliveredToPrefix = *h.DeliveredToPrefix
	}
	s.MaxInflight = c.MaxInflight
	if h.MaxInflight != nil {
		s.MaxInflight = *h.MaxInflight
	}
	if s.MaxInflight == 0 {
		s.MaxInflight = sender.DefaultMaxInflight // a Config not made by Load
	}
	s.Pipelining = pickBool(h.Pipelining, c.Pipelining)
	s.Chunking = pickBool(h.Chunking, c.Chunking)
	s.Coalesce = pickBool(h.Coalesce, c.Coalesce)
	s.MaxMailRefusals = DefaultMaxMailRefusals
	if c.MaxMailRefusals != nil {
		s.MaxMailRefusals = *c.MaxMailRefusals
	}
	if h.MaxMailRefusals != nil {
		s.MaxMailRefusals = *h.MaxMailRefusals
	}
	s.MaxConnections = c.MaxConnections
	if h.MaxConnections != nil {
		s.MaxConnections = *h.MaxConnections
	}
	if s.MaxConnections == 0 {
		s.MaxConnections = DefaultMaxConnections // a Config not made by Load
	}
	s.EightBit = pick(h.EightBit, pick(c.EightBit, "convert"))
	s.Bounce = pickBool(h.Bounce, c.Bounce)
	s.Sendmail = c.Sendmail
	if s.Sendmail == nil {
		s.Sendmail = DefaultSendmail
	}
	// Validated at load; the default parses.
	s.MaxAge, _ = ParseAge(pick(h.MaxAge, pick(c.MaxAge, DefaultMaxAge)))
	if w := pick(h.WarnAge, c.WarnAge); w != "" {
		s.WarnAge, _ = ParseAge(w)
	}
	s.ArchiveDir = pick(h.ArchiveDir, c.ArchiveDir)
	s.ArchiveMaxAge, _ = ParseAge(pick(h.ArchiveMaxAge, pick(c.ArchiveMaxAge, DefaultArchiveMaxAge)))
	// Validated at load; the built-in defaults parse.
	s.Timeout, _ = ParseDuration(pick(c.Timeout, "5m"))
	s.DataTimeout, _ = ParseDuration(pick(c.DataTimeout, "10m"))
	return s
}

// pickBool layers a host's switch over the global one; both default on.
func pickBool(host, global *bool) bool {
	switch {
	case host != nil:
		return *host
	case global != nil:
		return *global
	}
	return true
}

func warnAge(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return tomlAge(d)
}

// tomlList writes argv as a TOML array of strings.
func tomlList(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func pick(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// tomlAge writes a duration as it would be set: whole days as "5d"
// (ParseAge reads them), else Go's notation.
func tomlAge(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// writeLines writes key = value lines; a value of "" is left out, and a
// line starting with "#" is written as it is (what an unset key means).
func writeLines(w io.Writer, prefix string, lines [][2]string) error {
	for _, l := range lines {
		var err error
		switch {
		case l[1] == "":
			continue
		case strings.HasPrefix(l[0], "#"):
			_, err = fmt.Fprintf(w, "%s%s %s\n", prefix, l[0], l[1])
		default:
			_, err = fmt.Fprintf(w, "%s%s = %s\n", prefix, l[0], l[1])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func q(v string) string { return strconv.Quote(v) }

// qOpt quotes v, or gives "" (the line is left out) when v is empty.
func qOpt(v string) string {
	if v == "" {
		return ""
	}
	return q(v)
}

// unset gives the comment for a key left unset when v is empty.
func unset(v, meaning string) string {
	if v != "" {
		return ""
	}
	return meaning
}

// PrintGlobal writes the global keys in force (g is For of no host, with
// the command line's timeout and log applied), as TOML that loads back.
func (c *Config) PrintGlobal(w io.Writer, g Settings) error {
	lines := [][2]string{
		{"spool_dir", q(c.SpoolDir)},
		{"format", q(g.Format)},
		{"helo", qOpt(g.Helo)},
		{"# helo", unset(g.Helo, "not set: this machine's fully qualified name")},
		{"tls", q(g.TLS)},
		{"timeout", q(g.Timeout.String())},
		{"data_timeout", q(g.DataTimeout.String())},
		{"log", qOpt(g.Log)},
		{"# log", unset(g.Log, "not set: stderr on a terminal, else syslog")},
		{"mailstore_prefix_lines", fmt.Sprint(g.MailstorePrefixLines)},
		{"mailstore_suffix_lines", fmt.Sprint(g.MailstoreSuffixLines)},
		{"maildir_envelope", q(g.MaildirEnvelope)},
		{"delivered_to_prefix", q(g.DeliveredToPrefix)},
		{"max_inflight", fmt.Sprint(g.MaxInflight)},
		{"pipelining", fmt.Sprint(g.Pipelining)},
		{"chunking", fmt.Sprint(g.Chunking)},
		{"coalesce", fmt.Sprint(g.Coalesce)},
		{"max_connections", fmt.Sprint(g.MaxConnections)},
		{"max_mail_refusals", fmt.Sprint(g.MaxMailRefusals)},
		{"eight_bit", q(g.EightBit)},
		{"bounce", fmt.Sprint(g.Bounce)},
		{"sendmail", tomlList(g.Sendmail)},
		{"max_age", q(tomlAge(g.MaxAge))},
		{"warn_age", qOpt(warnAge(g.WarnAge))},
		{"# warn_age", unset(warnAge(g.WarnAge), "not set: no delay warnings")},
		{"archive_dir", qOpt(g.ArchiveDir)},
		{"# archive_dir", unset(g.ArchiveDir, "not set: accepted mail is removed, not archived")},
		{"archive_max_age", q(tomlAge(g.ArchiveMaxAge))},
	}
	return writeLines(w, "", lines)
}

// Print writes the settings of one host as its [host."name"] table, in
// TOML that loads back; prefix "# " writes it commented out (a host the
// file does not configure).
func (s Settings) Print(w io.Writer, prefix string) error {
	if _, err := fmt.Fprintf(w, "%s[host.%s]\n", prefix, q(s.Host)); err != nil {
		return err
	}
	lines := [][2]string{
		{"route", qOpt(s.Route)},
		{"# route", unset(s.Route, "not set: the MX hosts of "+s.Host)},
		{"spool", q(s.Spool)},
		{"format", q(s.Format)},
		{"helo", qOpt(s.Helo)},
		{"# helo", unset(s.Helo, "not set: this machine's fully qualified name")},
		{"tls", q(s.TLS)},
		{"tls_name", qOpt(s.TLSName)},
		{"# tls_name", unset(s.TLSName, "not set: "+s.Host)},
		{"auth_user", qOpt(s.AuthUser)},
		{"auth_password_file", qOpt(s.AuthPasswordFile)},
		{"mailstore_prefix_lines", fmt.Sprint(s.MailstorePrefixLines)},
		{"mailstore_suffix_lines", fmt.Sprint(s.MailstoreSuffixLines)},
		{"maildir_envelope", q(s.MaildirEnvelope)},
		{"delivered_to_prefix", q(s.DeliveredToPrefix)},
		{"max_inflight", fmt.Sprint(s.MaxInflight)},
		{"pipelining", fmt.Sprint(s.Pipelining)},
		{"chunking", fmt.Sprint(s.Chunking)},
		{"coalesce", fmt.Sprint(s.Coalesce)},
		{"max_connections", fmt.Sprint(s.MaxConnections)},
		{"max_mail_refusals", fmt.Sprint(s.MaxMailRefusals)},
		{"eight_bit", q(s.EightBit)},
		{"bounce", fmt.Sprint(s.Bounce)},
		{"max_age", q(tomlAge(s.MaxAge))},
		{"warn_age", qOpt(warnAge(s.WarnAge))},
		{"# warn_age", unset(warnAge(s.WarnAge), "not set: no delay warnings")},
		{"archive_dir", qOpt(s.ArchiveDir)},
		{"# archive_dir", unset(s.ArchiveDir, "not set: accepted mail is removed, not archived")},
		{"archive_max_age", q(tomlAge(s.ArchiveMaxAge))},
	}
	return writeLines(w, prefix, lines)
}

// PrintServe writes the [serve] values in force and the [user] tables as
// TOML that loads back. The password hashes are included: a file holding
// this output must be as private as the configuration.
func (c *Config) PrintServe(w io.Writer) error {
	s := c.ServeSettings()
	clients := make([]string, len(s.EtrnClients))
	for i, p := range s.EtrnClients {
		clients[i] = p.String()
	}
	if _, err := fmt.Fprintln(w, "\n[serve]"); err != nil {
		return err
	}
	err := writeLines(w, "", [][2]string{
		{"etrn_clients", tomlList(clients)},
		{"etrn_public", fmt.Sprint(s.EtrnPublic)},
		{"etrn_limit", fmt.Sprint(s.EtrnLimit)},
		{"etrn_window", q(s.EtrnWindow.String())},
		{"state_dir", q(s.StateDir)},
		{"tls_cert", qOpt(s.TLSCert)},
		{"tls_key", qOpt(s.TLSKey)},
		{"allow_plaintext_auth", fmt.Sprint(s.AllowPlaintextAuth)},
		{"idle_timeout", q(s.IdleTimeout.String())},
		{"session_timeout", q(s.SessionTimeout.String())},
		{"max_commands", fmt.Sprint(s.MaxCommands)},
	})
	if err != nil {
		return err
	}
	names := make([]string, 0, len(c.Users))
	for n := range c.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u := c.Users[n]
		if _, err := fmt.Fprintf(w, "\n[user.%s]\n", q(n)); err != nil {
			return err
		}
		err := writeLines(w, "", [][2]string{
			{"password_hash", qOpt(u.PasswordHash)},
			{"secret_file", qOpt(u.SecretFile)},
			{"hosts", tomlList(u.Hosts)},
		})
		if err != nil {
			return err
		}
	}
	return nil
}
