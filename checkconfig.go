package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"etrnflush/config"
	"etrnflush/internal/owner"
	"etrnflush/spool"
)

// checkConfigAction validates the file (every error, in file order) and
// prints the settings in force as TOML that loads back; problems of the
// machine (directories, files, names) are warnings.
func checkConfigAction(c *cli.Context) error {
	host, err := hostArg(c, true)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(c)
	var all config.Errors
	if errors.As(err, &all) {
		for _, e := range all {
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: error: %s\n", oneLine(e.Error()))
		}
		return &exitError{exConfig, nil}
	}
	if err != nil {
		return err
	}
	// The command line's timeout and log are global settings.
	g := cfg.For("")
	fl, err := settings(c, cfg, "")
	if err != nil {
		return err
	}
	g.Timeout, g.Log = fl.Timeout, fl.Log

	hosts := []string{host}
	if host == "" {
		hosts = hosts[:0]
		for h := range cfg.Hosts {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
	}
	var list []config.Settings
	for _, h := range hosts {
		s, err := settings(c, cfg, h)
		if err != nil {
			return err
		}
		list = append(list, s)
	}

	warn := func(format string, args ...any) {
		fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: %s\n", fmt.Sprintf(format, args...))
	}
	for _, w := range cfg.Warnings() {
		warn("%s", w)
	}
	for _, w := range envWarnings(cfg, g, list, host == "") {
		warn("%s", w)
	}

	w := c.App.Writer
	src := cfg.File
	if src == "" {
		src = "(built-in defaults; " + flagString(c, "config") + " does not exist)"
	}
	fmt.Fprintf(w, "# config: %s\n# the settings in force, flags applied; this output loads back as a configuration\n", src)
	if err := cfg.PrintGlobal(w, g); err != nil {
		return err
	}
	for _, s := range list {
		prefix := ""
		if _, ok := cfg.Hosts[s.Host]; !ok {
			// Not made a table: loaded back, the output must configure
			// what the file configures, no more.
			prefix = "# "
			fmt.Fprintf(w, "\n# host %q is not configured (no [host.%q] table): a flush of it would use\n", s.Host, s.Host)
			if held, err := spool.Holds(s.Spool); err == nil && !held {
				warn("host %s is not configured and nothing is held for it in %s: is the name misspelt?", s.Host, s.Spool)
			}
		} else {
			fmt.Fprintln(w)
		}
		if err := s.Print(w, prefix); err != nil {
			return err
		}
	}
	if host == "" {
		return cfg.PrintServe(w)
	}
	return nil
}

// envWarnings checks what the file names on this machine, as a flush (and
// serve, when withServe) will use it: nothing here stops a flush from
// starting, so it is reported, not refused.
func envWarnings(cfg *config.Config, g config.Settings, hosts []config.Settings, withServe bool) []string {
	var out []string
	// The directories the spools are in: the flush acts as their owner.
	dirs := map[string]bool{filepath.Clean(cfg.SpoolDir): true}
	for _, s := range hosts {
		dirs[filepath.Dir(filepath.Clean(s.Spool))] = true
	}
	var runAs *owner.Switch
	for _, d := range sortedKeys(dirs) {
		sw, err := owner.Who(d)
		if errors.Is(err, os.ErrNotExist) {
			out = append(out, fmt.Sprintf("spool directory %s does not exist: create it, owned by the user Exim delivers as (see etrnflush(8), FILES)", d))
			continue
		}
		if err != nil {
			out = append(out, fmt.Sprintf("%v: a flush of its hosts will fail", err))
			continue
		}
		uid, gid := unix.Geteuid(), unix.Getegid()
		who := fmt.Sprintf("uid %d (this user)", uid)
		if sw.Changed {
			uid, gid, who = sw.UID, sw.GID, "user "+sw.Name+" (its owner, whom a flush started as root acts as)"
		}
		var st unix.Stat_t
		if !sw.Changed && unix.Geteuid() == 0 && unix.Stat(d, &st) == nil && st.Uid == 0 {
			// Exim never delivers as root: neither its transport nor the
			// flush its ETRN starts (as Exim's user) can write here.
			out = append(out, fmt.Sprintf("spool directory %s belongs to root: Exim's user can neither deliver into it nor flush it when Exim starts the flush; chown it to that user", d))
			continue
		}
		if !canAccess(d, uid, gid, unix.W_OK|unix.X_OK) {
			out = append(out, fmt.Sprintf("spool directory %s is not writable by %s: a flush cannot claim or rewrite what is held there", d, who))
		}
		if d == filepath.Clean(cfg.SpoolDir) {
			sw := sw
			runAs = &sw
		}
	}

	for _, s := range hosts {
		if s.AuthPasswordFile != "" {
			if _, err := config.ReadSecret(s.AuthPasswordFile); err != nil {
				out = append(out, fmt.Sprintf("host %s: auth_password_file: %v: a flush of it will exit 78", s.Host, err))
			}
		}
	}
	if withServe {
		ss := cfg.ServeSettings()
		for _, f := range []struct{ key, path string }{{"tls_cert", ss.TLSCert}, {"tls_key", ss.TLSKey}} {
			if f.path == "" {
				continue
			}
			if fh, err := os.Open(f.path); err != nil {
				out = append(out, fmt.Sprintf("[serve] %s: %v: etrnflush serve will refuse to start", f.key, unwrapPath(err)))
			} else if err := fh.Close(); err != nil {
				out = append(out, fmt.Sprintf("[serve] %s: %v", f.key, err))
			}
		}
	}

	out = append(out, logWarnings(g.Log, runAs)...)
	return append(out, routeWarnings(hosts)...)
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// logWarnings checks the log destination as the flush will open it:
// after it became the spool directory's owner.
func logWarnings(dest string, runAs *owner.Switch) []string {
	switch dest {
	case "stderr":
		return nil
	case "", "syslog":
		for _, p := range []string{"/dev/log", "/var/run/syslog", "/var/run/log"} {
			if _, err := os.Stat(p); err == nil {
				return nil
			}
		}
		what := "log = \"syslog\""
		if dest == "" {
			what = "log is not set, so runs without a terminal (under Exim, inetd, a timer) log to syslog, but"
		}
		return []string{what + " there is no syslog socket (/dev/log): log lines will go to standard error"}
	}
	uid, gid, who := unix.Geteuid(), unix.Getegid(), "this user"
	if runAs != nil && runAs.Changed {
		uid, gid, who = runAs.UID, runAs.GID, "user "+runAs.Name+" (the spool directory's owner)"
	}
	fi, err := os.Stat(dest)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		return []string{fmt.Sprintf("log %s is not a regular file: runs will log to syslog instead", dest)}
	case err == nil:
		if !canAccess(dest, uid, gid, unix.W_OK) {
			return []string{fmt.Sprintf("log %s is not writable by %s: runs will log to syslog instead", dest, who)}
		}
	case errors.Is(err, os.ErrNotExist):
		dir := filepath.Dir(dest)
		if !canAccess(dir, uid, gid, unix.W_OK|unix.X_OK) {
			return []string{fmt.Sprintf("log %s does not exist and %s cannot create it in %s: runs will log to syslog instead", dest, who, dir)}
		}
	default:
		return []string{fmt.Sprintf("log %s: %v", dest, unwrapPath(err))}
	}
	return nil
}

// canAccess says whether uid (with primary group gid and no other) may
// access path as mode asks, from its permission bits: the user a flush
// switches to is not this process, so access(2) cannot say. For this
// process's own user access(2) does, ACLs included.
func canAccess(path string, uid, gid int, mode uint32) bool {
	if uid == unix.Geteuid() && gid == unix.Getegid() {
		return unix.Access(path, mode) == nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	if uid == 0 {
		return true
	}
	perm := uint32(st.Mode) & 0o7
	switch {
	case int(st.Uid) == uid:
		perm = uint32(st.Mode) >> 6 & 0o7
	case int(st.Gid) == gid:
		perm = uint32(st.Mode) >> 3 & 0o7
	}
	return perm&mode == mode
}

// routeWarnings looks up the names in the hosts' routes, all at once and
// within a few seconds: a route that does not resolve is a flush that
// fails with 75 every time.
func routeWarnings(hosts []config.Settings) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	warnings := make([]string, len(hosts))
	var wg sync.WaitGroup
	for i, s := range hosts {
		if s.Route == "" {
			continue
		}
		if _, ok := config.IsClientRoute(s.Route); ok {
			continue
		}
		name := s.Route
		if h, _, err := net.SplitHostPort(s.Route); err == nil {
			name = h
		}
		name = strings.Trim(name, "[]")
		if net.ParseIP(name) != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := net.DefaultResolver.LookupHost(ctx, name); err != nil {
				warnings[i] = fmt.Sprintf("host %s: route %s: %s does not resolve (%v): a flush will fail and keep the mail", s.Host, s.Route, name, err)
			}
		}()
	}
	wg.Wait()
	var out []string
	for _, w := range warnings {
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}
