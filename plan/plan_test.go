package plan

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"etrnflush/config"
	"etrnflush/flush"
	"etrnflush/sender"
)

// base is a host's settings with every field set, so that changing any
// one of them is visible.
func base() config.Settings {
	return config.Settings{
		Host:                 "cust.example",
		Spool:                "/var/spool/etrn/cust.example",
		Format:               "auto",
		Route:                "",
		Helo:                 "relay.example",
		TLS:                  "may",
		TLSName:              "",
		Timeout:              time.Minute,
		DataTimeout:          2 * time.Minute,
		AuthUser:             "relay",
		AuthPasswordFile:     "/etc/etrnflush/pw",
		Log:                  "syslog",
		MailstorePrefixLines: 1,
		MailstoreSuffixLines: 1,
		MaildirEnvelope:      "exim",
		DeliveredToPrefix:    "pfx-",
		MaxInflight:          32,
		Pipelining:           true,
		Chunking:             true,
		Coalesce:             true,
		MaxConnections:       10,
		MaxMailRefusals:      5,
		EightBit:             "convert",
		Bounce:               true,
		Sendmail:             []string{"/usr/sbin/sendmail", "-i", "-f", "<>", "--"},
		MaxAge:               5 * 24 * time.Hour,
		WarnAge:              4 * time.Hour,
	}
}

// callerOwned are the settings plan leaves to its caller on purpose:
// where to log, and the secret (only the caller knows whether it may be
// read, never in a dry run).
var callerOwned = map[string]bool{"Log": true, "AuthPasswordFile": true}

// comparable strips what reflect.DeepEqual cannot compare (a func is
// never equal to another) and keeps whether it was set.
func comparable(fc flush.Config) (flush.Config, bool, bool) {
	resolve, dial := fc.Resolve != nil, fc.Sender.Dial != nil
	fc.Resolve, fc.Sender.Dial = nil, nil
	return fc, resolve, dial
}

// changed returns v with field f set to another value the config could
// hold.
func changed(t *testing.T, v config.Settings, f string) config.Settings {
	rv := reflect.ValueOf(&v).Elem().FieldByName(f)
	switch f {
	case "TLS":
		rv.SetString("verify")
		return v
	case "EightBit":
		rv.SetString("refuse")
		return v
	}
	switch rv.Kind() {
	case reflect.String:
		rv.SetString(rv.String() + "x")
	case reflect.Int:
		rv.SetInt(rv.Int() + 1)
	case reflect.Int64: // time.Duration
		rv.SetInt(rv.Int() + int64(time.Second))
	case reflect.Bool:
		rv.SetBool(!rv.Bool())
	case reflect.Slice:
		rv.Set(reflect.Append(rv, reflect.ValueOf("extra")))
	default:
		t.Fatalf("settings field %s has kind %s: teach this test to change it", f, rv.Kind())
	}
	return v
}

// TestFlushMapsEverySetting: changing any per-host setting changes what
// the flush runs with, unless the setting is documented as the caller's.
// A new key added to config.Settings and forgotten here fails this test,
// for the flush command and serve's ATRN path alike (both go through
// Flush).
func TestFlushMapsEverySetting(t *testing.T) {
	b := base()
	want, wantResolve, _ := comparable(Flush(b))
	typ := reflect.TypeOf(b)
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i).Name
		t.Run(f, func(t *testing.T) {
			got, gotResolve, _ := comparable(Flush(changed(t, b, f)))
			same := reflect.DeepEqual(want, got) && wantResolve == gotResolve
			switch {
			case callerOwned[f] && !same:
				t.Errorf("%s is the caller's, but changing it changed the flush config", f)
			case !callerOwned[f] && same:
				t.Errorf("changing %s changed nothing in the flush config: map it in plan.Flush (or list it as the caller's)", f)
			}
		})
	}
}

func TestTLSLevel(t *testing.T) {
	for in, want := range map[string]sender.TLSLevel{
		"none": sender.TLSNone, "may": sender.TLSMay, "encrypt": sender.TLSEncrypt,
		"verify": sender.TLSVerify, "": sender.TLSMay,
	} {
		if got := TLSLevel(in); got != want {
			t.Errorf("TLSLevel(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSenderDefaults(t *testing.T) {
	s := base()
	so := Sender(s)
	if so.TLSName != s.Host {
		t.Errorf("TLSName = %q, want the host %q when tls_name is unset", so.TLSName, s.Host)
	}
	if so.NoPipelining || so.NoChunking || so.EightBit != sender.EightBitConvert {
		t.Errorf("pipelining/chunking/eight_bit not carried: %+v", so)
	}
	if so.AuthPass != "" {
		t.Errorf("AuthPass = %q: reading the secret is the caller's", so.AuthPass)
	}
	s.TLSName = "mx.cust.example"
	if so := Sender(s); so.TLSName != "mx.cust.example" {
		t.Errorf("TLSName = %q, want tls_name", so.TLSName)
	}
}

func TestFlushDestinations(t *testing.T) {
	s := base()
	s.Route = "10.0.0.7"
	fc := Flush(s)
	if fc.Resolve != nil || !reflect.DeepEqual(fc.Dests, []string{"10.0.0.7:25"}) {
		t.Errorf("route 10.0.0.7: Dests %v, Resolve set %v", fc.Dests, fc.Resolve != nil)
	}
	s.Route = "[2001:db8::1]:2525"
	if fc := Flush(s); !reflect.DeepEqual(fc.Dests, []string{"[2001:db8::1]:2525"}) {
		t.Errorf("route with port: Dests %v", fc.Dests)
	}
	s.Route = ""
	if fc := Flush(s); fc.Resolve == nil || fc.Dests != nil {
		t.Errorf("no route: Dests %v, Resolve set %v; want an MX lookup", fc.Dests, fc.Resolve != nil)
	}
	s.Bounce = false
	if fc := Flush(s); fc.Sendmail != nil {
		t.Errorf("bounce = false still hands DSNs to %v", fc.Sendmail)
	}
}

func TestWithPort(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example": "mx.example:25", "mx.example:2525": "mx.example:2525",
		"192.0.2.1": "192.0.2.1:25", "[2001:db8::1]": "[2001:db8::1]:25",
		"[2001:db8::1]:26": "[2001:db8::1]:26",
	} {
		if got := WithPort(in); got != want {
			t.Errorf("WithPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeDNS answers from maps; a name it does not know does not exist.
func fakeDNS(hostname string, cnames map[string]string, mx map[string][]*net.MX, ips map[string][]string, local ...string) lookups {
	notFound := func(h string) error { return &net.DNSError{Err: "no such host", Name: h, IsNotFound: true} }
	return lookups{
		hostname: func() (string, error) { return hostname, nil },
		cname: func(_ context.Context, h string) (string, error) {
			if c, ok := cnames[h]; ok {
				return c, nil
			}
			return "", notFound(h)
		},
		mx: func(_ context.Context, h string) ([]*net.MX, error) {
			if h == "broken.example" {
				return nil, &net.DNSError{Err: "server misbehaving", Name: h, IsTemporary: true}
			}
			if m, ok := mx[h]; ok {
				return m, nil
			}
			return nil, notFound(h)
		},
		ips: func(_ context.Context, h string) ([]net.IPAddr, error) {
			var out []net.IPAddr
			for _, s := range ips[h] {
				out = append(out, net.IPAddr{IP: net.ParseIP(s)})
			}
			if out == nil {
				return nil, notFound(h)
			}
			return out, nil
		},
		ifaddrs: func() ([]net.Addr, error) {
			var out []net.Addr
			for _, s := range local {
				out = append(out, &net.IPNet{IP: net.ParseIP(s), Mask: net.CIDRMask(24, 32)})
			}
			return out, nil
		},
	}
}

func TestResolveMX(t *testing.T) {
	mx := map[string][]*net.MX{
		"cust.example":   {{Host: "mx1.cust.example.", Pref: 10}, {Host: "backup.isp.example.", Pref: 20}, {Host: "mx2.cust.example.", Pref: 30}},
		"only.example":   {{Host: "backup.isp.example.", Pref: 10}, {Host: "lo.isp.example.", Pref: 20}},
		"nullmx.example": {{Host: ".", Pref: 0}},
		"gone.example":   {{Host: "nowhere.example.", Pref: 10}},
	}
	ips := map[string][]string{
		"mx1.cust.example":   {"192.0.2.10"},
		"mx2.cust.example":   {"192.0.2.11"},
		"backup.isp.example": {"198.51.100.5"}, // this machine
		"lo.isp.example":     {"127.0.0.2"},
	}
	l := fakeDNS("relay.isp.example", nil, mx, ips, "198.51.100.5")
	for _, tc := range []struct {
		host    string
		want    []string
		wantErr string
	}{
		// In preference order, this machine (the backup MX) left out.
		{"cust.example", []string{"mx1.cust.example:25", "mx2.cust.example:25"}, ""},
		// No MX record: the host itself (RFC 5321 §5.1).
		{"nomx.example", []string{"nomx.example:25"}, ""},
		// An MX that does not resolve is not this machine: tried, and
		// the connection failure is the honest outcome.
		{"gone.example", []string{"nowhere.example:25"}, ""},
		{"only.example", nil, "every MX host of only.example is this machine"},
		{"nullmx.example", nil, "null MX"},
		{"broken.example", nil, "MX lookup for broken.example"},
	} {
		got, err := l.resolveMX(tc.host)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("resolveMX(%s) = %v, %v; want an error with %q", tc.host, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("resolveMX(%s) = %v, %v; want %v", tc.host, got, err, tc.want)
		}
	}
}

func TestFQDN(t *testing.T) {
	for _, tc := range []struct {
		hostname string
		cnames   map[string]string
		want     string
		wantErr  string
	}{
		{"Relay.ISP.example", nil, "relay.isp.example", ""},
		{"relay", map[string]string{"relay": "relay.isp.example."}, "relay.isp.example", ""},
		{"localhost", nil, "", "set helo"},
		{"localhost.localdomain", nil, "", "never say localhost"},
		{"bad_name!", nil, "", "set helo"},
	} {
		got, err := fakeDNS(tc.hostname, tc.cnames, nil, nil).fqdn()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("fqdn with hostname %q = %q, %v; want an error with %q", tc.hostname, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("fqdn with hostname %q = %q, %v; want %q", tc.hostname, got, err, tc.want)
		}
	}
	if _, err := (lookups{hostname: func() (string, error) { return "", errors.New("no uts") }}).fqdn(); err == nil || !strings.Contains(err.Error(), "set helo") {
		t.Errorf("hostname failing: %v, want an error that says to set helo", err)
	}
}
