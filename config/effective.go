package config

import (
	"fmt"
	"io"
	"path/filepath"
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
	return d.String()
}

// ageString writes whole days as "30d", as they are written in the file.
func ageString(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
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

// Print writes the settings as key = value lines for check-config.
func (s Settings) Print(w io.Writer) error {
	q := func(v string) string { return fmt.Sprintf("%q", v) }
	route := s.Route
	if route == "" {
		route = "(MX records of " + s.Host + ")"
	}
	helo := s.Helo
	if helo == "" {
		helo = "(this machine's FQDN)"
	}
	lines := [][2]string{
		{"host", q(s.Host)},
		{"spool", q(s.Spool)},
		{"format", q(s.Format)},
		{"route", q(route)},
		{"helo", q(helo)},
		{"tls", q(s.TLS)},
		{"tls_name", q(s.TLSName)},
		{"timeout", q(s.Timeout.String())},
		{"data_timeout", q(s.DataTimeout.String())},
		{"auth_user", q(s.AuthUser)},
		{"auth_password_file", q(s.AuthPasswordFile)},
		{"log", q(s.Log)},
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
		{"sendmail", tomlList(s.Sendmail)},
		{"max_age", q(s.MaxAge.String())},
		{"warn_age", q(warnAge(s.WarnAge))},
		{"archive_dir", q(s.ArchiveDir)},
		{"archive_max_age", q(ageString(s.ArchiveMaxAge))},
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "%s = %s\n", l[0], l[1]); err != nil {
			return err
		}
	}
	return nil
}
