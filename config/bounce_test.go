package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func loadText(t *testing.T, text string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p, true)
}

// TestBounceKeys: bounce is on by default, off globally, back on per
// host; sendmail defaults to the null-sender sendmail and is taken as
// written.
func TestBounceKeys(t *testing.T) {
	c, err := loadText(t, "")
	if err != nil {
		t.Fatal(err)
	}
	s := c.For("a.example")
	if !s.Bounce || !reflect.DeepEqual(s.Sendmail, []string{"/usr/sbin/sendmail", "-i", "-f", "<>", "--"}) {
		t.Errorf("defaults: bounce %v sendmail %q", s.Bounce, s.Sendmail)
	}
	c, err = loadText(t, "bounce = false\nsendmail = [\"/usr/sbin/exim\", \"-C\", \"/x y.conf\", \"-f\", \"<>\", \"--\"]\n"+
		"[host.\"b.example\"]\nbounce = true\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.For("a.example").Bounce || !c.For("b.example").Bounce {
		t.Errorf("layering: a %v b %v", c.For("a.example").Bounce, c.For("b.example").Bounce)
	}
	if got := c.For("b.example").Sendmail; !reflect.DeepEqual(got, []string{"/usr/sbin/exim", "-C", "/x y.conf", "-f", "<>", "--"}) {
		t.Errorf("sendmail %q", got)
	}
	var sb strings.Builder
	if err := c.For("b.example").Print(&sb, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.PrintGlobal(&sb, c.For("")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sb.String(), "bounce = true\n") ||
		!strings.Contains(sb.String(), `sendmail = ["/usr/sbin/exim", "-C", "/x y.conf", "-f", "<>", "--"]`+"\n") {
		t.Errorf("check-config output:\n%s", sb.String())
	}
	for _, bad := range []string{`sendmail = []`, `sendmail = ["sendmail", "-i"]`, `sendmail = "/usr/sbin/sendmail"`,
		`sendmail = ["/usr/sbin/sendmail", "a\u0000b"]`, "[host.\"b.example\"]\nsendmail = [\"/bin/true\"]"} {
		_, err := loadText(t, "\n"+bad+"\n")
		if err == nil || !strings.Contains(err.Error(), "sendmail") {
			t.Errorf("%s: %v, want an error naming sendmail", bad, err)
		}
	}
}

// TestAgeKeys: max_age defaults to five days, takes days or durations,
// globally and per host; warn_age is off unless set.
func TestAgeKeys(t *testing.T) {
	c, err := loadText(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.For("a.example"); s.MaxAge != 5*24*time.Hour || s.WarnAge != 0 {
		t.Errorf("defaults: max_age %v warn_age %v", s.MaxAge, s.WarnAge)
	}
	c, err = loadText(t, "max_age = \"2d\"\nwarn_age = \"4h\"\n[host.\"b.example\"]\nmax_age = \"36h\"\nwarn_age = \"1d\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.For("a.example"); s.MaxAge != 48*time.Hour || s.WarnAge != 4*time.Hour {
		t.Errorf("global: %v %v", s.MaxAge, s.WarnAge)
	}
	if s := c.For("b.example"); s.MaxAge != 36*time.Hour || s.WarnAge != 24*time.Hour {
		t.Errorf("host: %v %v", s.MaxAge, s.WarnAge)
	}
	for _, bad := range []string{`max_age = "0d"`, `max_age = "5 days"`, `warn_age = "-1h"`, `max_age = "d"`,
		"[host.\"b.example\"]\nwarn_age = \"soon\""} {
		_, err := loadText(t, "\n"+bad+"\n")
		if err == nil || !strings.Contains(err.Error(), "_age") {
			t.Errorf("%s: %v, want an error naming the key", bad, err)
		}
	}
}

// TestArchiveKeys: no archive unless archive_dir is set; archive_max_age
// defaults to 30 days; both layer per host and show in check-config; a
// relative path or a bad age is refused naming the key.
func TestArchiveKeys(t *testing.T) {
	c, err := loadText(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.For("a.example"); s.ArchiveDir != "" || s.ArchiveMaxAge != 30*24*time.Hour {
		t.Errorf("defaults: archive_dir %q archive_max_age %v", s.ArchiveDir, s.ArchiveMaxAge)
	}
	c, err = loadText(t, "archive_dir = \"/var/archive\"\n[host.\"b.example\"]\narchive_dir = \"/srv/b\"\narchive_max_age = \"7d\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.For("a.example"); s.ArchiveDir != "/var/archive" || s.ArchiveMaxAge != 30*24*time.Hour {
		t.Errorf("global: %q %v", s.ArchiveDir, s.ArchiveMaxAge)
	}
	s := c.For("b.example")
	if s.ArchiveDir != "/srv/b" || s.ArchiveMaxAge != 7*24*time.Hour {
		t.Errorf("host: %q %v", s.ArchiveDir, s.ArchiveMaxAge)
	}
	var sb strings.Builder
	if err := s.Print(&sb, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sb.String(), "archive_dir = \"/srv/b\"\n") || !strings.Contains(sb.String(), "archive_max_age = \"7d\"\n") {
		t.Errorf("check-config output:\n%s", sb.String())
	}
	for _, bad := range []string{`archive_dir = "archive"`, `archive_dir = "/"`, `archive_max_age = "0d"`,
		"spool_dir = \"/var/spool/etrnflush\"\narchive_dir = \"/var/spool/etrnflush/archive\"",
		"spool_dir = \"/var/spool/etrnflush\"\narchive_dir = \"/var/spool/etrnflush\"",
		"archive_dir = \"/srv/a\"\n[host.\"b.example\"]\nspool = \"/srv/a/b.example\"",
		"[host.\"b.example\"]\nspool = \"/srv/s/b.example\"\narchive_dir = \"/srv/s/x\"",
		"[host.\"b.example\"]\narchive_dir = \"rel\"", "[host.\"b.example\"]\narchive_max_age = \"soon\""} {
		_, err := loadText(t, "\n"+bad+"\n")
		if err == nil || !strings.Contains(err.Error(), "archive_") {
			t.Errorf("%s: %v, want an error naming the key", bad, err)
		}
	}
}
