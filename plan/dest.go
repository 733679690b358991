package plan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"etrnflush/config"
)

// WithPort adds SMTP's port 25 to a route without one.
func WithPort(route string) string {
	if _, _, err := net.SplitHostPort(route); err == nil {
		return route
	}
	return net.JoinHostPort(strings.Trim(route, "[]"), "25")
}

// lookups is what FQDN and ResolveMX ask of the system: the seam the
// tests replace, since this machine's DNS is not theirs to set up.
type lookups struct {
	hostname func() (string, error)
	cname    func(ctx context.Context, host string) (string, error)
	mx       func(ctx context.Context, host string) ([]*net.MX, error)
	ips      func(ctx context.Context, host string) ([]net.IPAddr, error)
	ifaddrs  func() ([]net.Addr, error)
}

var system = lookups{
	hostname: os.Hostname,
	cname:    net.DefaultResolver.LookupCNAME,
	mx:       net.DefaultResolver.LookupMX,
	ips:      net.DefaultResolver.LookupIPAddr,
	ifaddrs:  net.InterfaceAddrs,
}

// lookupTimeout bounds the DNS work of one FQDN or ResolveMX call: a
// resolver that does not answer must end in a deferral, not a hang.
const lookupTimeout = 30 * time.Second

// FQDN is this machine's name for EHLO. A name without a dot is asked of
// the resolver; "localhost" is never used.
func FQDN() (string, error) { return system.fqdn() }

func (l lookups) fqdn() (string, error) {
	h, err := l.hostname()
	if err != nil {
		return "", fmt.Errorf("cannot find this machine's name, set helo: %w", err)
	}
	if !strings.Contains(h, ".") {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		if cn, err := l.cname(ctx, h); err == nil && strings.Contains(strings.TrimSuffix(cn, "."), ".") {
			h = strings.TrimSuffix(cn, ".")
		}
	}
	if err := config.CheckHelo(h); err != nil {
		return "", fmt.Errorf("this machine's name %q cannot be used in EHLO (%v): set helo", h, err)
	}
	return strings.ToLower(h), nil
}

// ResolveMX returns the destinations for host: its MX hosts in preference
// order without this machine (we are usually its backup MX), else the host
// itself.
func ResolveMX(host string) ([]string, error) { return system.resolveMX(host) }

func (l lookups) resolveMX(host string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	mxs, err := l.mx(ctx, host)
	var dnsErr *net.DNSError
	if err != nil && !(errors.As(err, &dnsErr) && dnsErr.IsNotFound) {
		return nil, fmt.Errorf("MX lookup for %s: %w", host, err)
	}
	if len(mxs) == 0 {
		return []string{net.JoinHostPort(host, "25")}, nil
	}
	local := l.localAddrs()
	var out []string
	null := false
	for _, mx := range mxs {
		name := strings.TrimSuffix(mx.Host, ".")
		if name == "" {
			null = true // RFC 7505 null MX: the host accepts no mail
			continue
		}
		if l.isLocal(ctx, name, local) {
			continue
		}
		out = append(out, net.JoinHostPort(name, "25"))
	}
	if len(out) == 0 {
		if null {
			return nil, fmt.Errorf("%s publishes a null MX (RFC 7505): it takes no mail by DNS; set route for it", host)
		}
		return nil, fmt.Errorf("every MX host of %s is this machine: set route for it", host)
	}
	return out, nil
}

// localAddrs are this machine's interface addresses: an MX host that
// resolves to one of them is this machine.
func (l lookups) localAddrs() map[string]bool {
	m := map[string]bool{}
	addrs, err := l.ifaddrs()
	if err != nil {
		return m
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			m[ipn.IP.String()] = true
		}
	}
	return m
}

// isLocal: a name that does not resolve is not this machine (the flush
// then fails to connect to it, which is the honest outcome).
func (l lookups) isLocal(ctx context.Context, name string, local map[string]bool) bool {
	ips, err := l.ips(ctx, name)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if ip.IP.IsLoopback() || local[ip.IP.String()] {
			return true
		}
	}
	return false
}
