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
