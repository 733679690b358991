// Command etrnflush flushes the mail held for one intermittently connected
// host: it replays the host's Exim spool over SMTP and removes each message
// only once the host's server has taken responsibility for it.
//
// main stays thin: flags and config in, the engine (flush, serve, plan) does
// the work. Every action returns an error; exitCode turns it into the exit
// status of etrnflush(8)'s EXIT STATUS section.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"etrnflush/config"
	"etrnflush/flush"
	"etrnflush/internal/owner"
	"etrnflush/logging"
	"etrnflush/plan"
	"etrnflush/spool"
)

// sysexits(3) codes; the man page's EXIT STATUS is the contract.
const (
	exOK       = 0
	exUsage    = 64
	exDataErr  = 65
	exIOErr    = 74
	exTempFail = 75
	exNoPerm   = 77
	exConfig   = 78
)

// flagStringerWrapped: newApp runs more than once in tests; wrap once.
var flagStringerWrapped bool

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	closeInheritedFDs()
	// One processor for Go code. A flush is one SMTP conversation whose
	// goroutines (the writer, the reply reader, the journal's fsync) hand
	// work to each other thousands of times a second; with a processor
	// each, every handoff woke another thread (a futex, a context switch,
	// spinning), a sixth of a fast flush's CPU, and on a small machine
	// the core it took was the receiving side's. Hosts flushed together
	// (flush --all) are processes of their own.
	runtime.GOMAXPROCS(1)
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// closeInheritedFDs closes descriptors above stderr that we were started
// with. Exim hands its ETRN command its open lookup file and a pipe (and
// whatever its own starter left open); a flush that runs for an hour must
// not keep them. It runs before anything of ours opens a file, uses raw
// system calls so that the Go runtime opens nothing meanwhile, and leaves
// anonymous inodes (the runtime's epoll and eventfd) alone.
func closeInheritedFDs() {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return // no /proc: keep them rather than guess
	}
	var fds []int
	buf := make([]byte, 4096)
	for {
		n, err := unix.ReadDirent(dir, buf)
		if err != nil || n <= 0 {
			break
		}
		var names []string
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
		for _, name := range names {
			if fd, err := strconv.Atoi(name); err == nil && fd > 2 && fd != dir {
				fds = append(fds, fd)
			}
		}
	}
	_ = unix.Close(dir) // read-only directory: nothing to lose
	link := make([]byte, 256)
	for _, fd := range fds {
		n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), link)
		if err != nil || strings.HasPrefix(string(link[:n]), "anon_inode:") {
			continue
		}
		_ = unix.Close(fd) // not ours: nothing was written through it
	}
}

// exitError carries a code chosen where the cause is known.
type exitError struct {
	code int
	err  error
}

// Error is safe without err: a code alone (the cause already reported)
// is returned in several places.
func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{exUsage, fmt.Errorf(format, args...)}
}

// exitCode turns an action's error into the exit status. An action that
// knows what a failure means for the mail (nothing sent: 75; a damaged
// entry set aside: 65) says so with an exitError carrying the code; the
// packages' typed errors are mapped here; anything else keeps the mail
// and asks to be run again later (75).
func exitCode(err error) int {
	var ee *exitError
	var ce *config.Error
	var le *spool.LayoutError
	var se *flush.ErrSpool
	switch {
	case err == nil:
		return exOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		return exConfig
	case errors.As(err, &le):
		return exConfig
	case errors.Is(err, spool.ErrLocked):
		return exTempFail
	case errors.Is(err, owner.ErrUnsafe):
		return exNoPerm
	case errors.As(err, &se):
		return exIOErr
	}
	return exTempFail // unknown trouble: keep the mail, try later
}

func run(args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	err := app.Run(operandsAfterDashes(app, args))
	code := exitCode(err)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) && ee.err == nil {
			return code
		}
		fmt.Fprintf(stderr, "etrnflush: error: %s\n", oneLine(asTyped(err.Error(), args)))
		var le loggedError
		if !errors.As(err, &le) && !isTerminal(os.Stderr) {
			// Under Exim and inetd standard error goes nowhere: a fatal
			// error that is in no log yet goes to syslog too.
			alertSyslog(oneLine(err.Error()))
		}
	}
	return code
}

// alertSyslog writes a fatal error to syslog at mail.err. If syslog is not
// there either, nothing more can be done.
func alertSyslog(msg string) {
	w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_ERR, "etrnflush")
	if err != nil {
		return
	}
	_ = w.Err("error: " + msg)
	_ = w.Close()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// flagInMsg is a flag as Go's flag package names it in an error: one
// dash, whatever the user typed.
var flagInMsg = regexp.MustCompile(`(^|[\s:(])-([A-Za-z0-9][A-Za-z0-9-]+)\b`)

// asTyped names the flags in a command-line error as the user typed them
// ("--log", not "-log"); a long flag nobody typed gets the two dashes the
// documentation uses. Go's "parse error" for a number says what it is.
func asTyped(msg string, args []string) string {
	msg = flagInMsg.ReplaceAllStringFunc(msg, func(m string) string {
		sub := flagInMsg.FindStringSubmatch(m)
		name := sub[2]
		for _, a := range args {
			if a == "--" {
				break
			}
			if a == "-"+name || strings.HasPrefix(a, "-"+name+"=") {
				return m // typed with one dash
			}
		}
		return sub[1] + "--" + name
	})
	if strings.HasPrefix(msg, "invalid value ") && strings.HasSuffix(msg, ": parse error") {
		msg = strings.TrimSuffix(msg, "parse error") + "not a whole number"
	}
	return msg
}

// operandsAfterDashes keeps "--" meaning what it means to every Unix tool:
// what follows is an operand. urfave/cli would take a command word there
// as the command, so "etrnflush -- check-config", run with a host name
// from the network, would print the configuration. When no command word
// comes before "--", the default command is named explicitly.
func operandsAfterDashes(app *cli.App, args []string) []string {
	app.Setup() // adds the help command, so that it is known here too
	for i, a := range args {
		if a != "--" {
			continue
		}
		if i+1 >= len(args) || app.Command(args[i+1]) == nil {
			return args
		}
		for _, b := range args[1:i] {
			if app.Command(b) != nil {
				return args
			}
		}
		out := append([]string{}, args[:i]...)
		return append(append(out, "flush"), args[i:]...)
	}
	return args
}

// flagCtx finds the context where a flush option was given. The options
// are accepted before and after the command name, and urfave/cli reads an
// option from the innermost command that defines it, given there or not.
func flagCtx(c *cli.Context, name string) *cli.Context {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc
		}
	}
	return c
}

func flagString(c *cli.Context, name string) string { return flagCtx(c, name).String(name) }

func flushFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "spool", Usage: "the host's spool: a BSMTP file or directory `PATH`", DefaultText: "spool_dir/HOST", TakesFile: true},
		&cli.StringFlag{Name: "format", Usage: "spool `FORMAT`: auto, bsmtp, mailstore or maildir", DefaultText: "auto"},
		&cli.StringFlag{Name: "to", Usage: "connect to `HOST[:PORT]` instead of the route or MX hosts"},
		&cli.StringFlag{Name: "helo", Usage: "`NAME` to give in EHLO", DefaultText: "helo from the config, else this machine's FQDN"},
		&cli.StringFlag{Name: "tls", Usage: "TLS `LEVEL`: none, may, encrypt or verify", DefaultText: "may"},
		// A string, parsed in settings: urfave/cli's own error for "5"
		// says only "parse error", not what a duration looks like.
		&cli.StringFlag{Name: "timeout", Usage: "`DURATION` allowed for the connection and each reply (30s, 5m, 1h)", DefaultText: "5m"},
		&cli.BoolFlag{Name: "dry-run", Usage: "parse and list what would be sent; connect nowhere, change nothing"},
		&cli.IntFlag{Name: "max-inflight", Usage: "send at most `N` messages ahead of the server's replies", DefaultText: "max_inflight from the config, else 32"},
		&cli.BoolFlag{Name: "no-pipelining", Usage: "do not use PIPELINING even when the server offers it"},
		&cli.BoolFlag{Name: "no-chunking", Usage: "do not use CHUNKING (BDAT) even when the server offers it"},
		&cli.IntFlag{Name: "max-connections", Usage: "open at most `N` sessions in this run when the server ends them early", DefaultText: "max_connections from the config, else 10"},
		&cli.BoolFlag{Name: "all", Usage: "flush every host that has mail, each in a process of its own (see --jobs); no HOST"},
		&cli.IntFlag{Name: "jobs", Usage: "with --all, flush at most `N` hosts at a time", DefaultText: "1"},
		&cli.BoolFlag{Name: "no-progress", Usage: "on a terminal, show no live progress line (the summary is still shown)"},
	}
}

// globalFlags are taken before the command word (top is true: only
// there does $ETRNFLUSH_CONFIG apply, so that a -c after the word wins
// over it as one before the word does) and after every command word.
// verbose is what -v means to the command.
func globalFlags(top bool, verbose string) []cli.Flag {
	cf := &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "configuration `FILE`", Value: config.DefaultPath, TakesFile: true}
	if top {
		cf.EnvVars = []string{"ETRNFLUSH_CONFIG"}
	}
	return []cli.Flag{
		cf,
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: verbose},
		&cli.StringFlag{Name: "log", Usage: "where to log: stderr, syslog or an absolute `FILE` (default: stderr on a terminal, else syslog)"},
	}
}

// commandFlags are a command's own flags and the global ones.
func commandFlags(own ...cli.Flag) []cli.Flag {
	return append(own, globalFlags(false, "log more detail")...)
}

// onlyFlags refuses the flush options given before the command word that
// do not apply to the command (allowed: those that do), rather than
// ignoring them: "etrnflush --to X list" would otherwise look as if it
// did something with X.
func onlyFlags(cmd string, allowed []cli.Flag) cli.BeforeFunc {
	return func(c *cli.Context) error {
		ok := map[string]bool{}
		for _, f := range allowed {
			ok[f.Names()[0]] = true
		}
		for _, f := range flushFlags() {
			name := f.Names()[0]
			if ok[name] {
				continue
			}
			for _, cc := range c.Lineage()[1:] {
				if cc.IsSet(name) {
					return usageErr("--%s does not apply to %s", name, cmd)
				}
			}
		}
		return nil
	}
}

// settingFlags are the flush options that change a host's settings, which
// check-config applies on top of the file as a flush would.
func settingFlags() []cli.Flag {
	var fs []cli.Flag
	for _, f := range flushFlags() {
		switch f.Names()[0] {
		case "dry-run", "all", "jobs", "no-progress":
		default:
			fs = append(fs, f)
		}
	}
	return fs
}

func newApp() *cli.App {
	// A switch's default is always off: "(default: false)" on each is noise.
	if !flagStringerWrapped {
		flagStringerWrapped = true
		plain := cli.FlagStringer
		cli.FlagStringer = func(f cli.Flag) string {
			return strings.TrimSuffix(plain(f), " (default: false)")
		}
	}
	onUsage := func(_ *cli.Context, err error, _ bool) error {
		return usageErr("%v", err)
	}
	// urfave/cli gives -v to --version by default; -v is --verbose here.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
	app := &cli.App{
		Name:      "etrnflush",
		Usage:     "flush the mail held for one host over SMTP",
		UsageText: "etrnflush [-c FILE] [-v] [--log DEST] [flush] [flags] HOST\netrnflush [-c FILE] [flush] [flags] --all [--jobs N]\netrnflush [-c FILE] check-config [flags] [HOST]\netrnflush [-c FILE] list [--json] [-v] [HOST...]\netrnflush [-c FILE] failed|quarantine [--json] [HOST...]\netrnflush [-c FILE] release|delete|bounce HOST ID...\netrnflush [-c FILE] serve\netrnflush passwd\n(-c, -v and --log go before or after the command word)",
		Version:   version,
		Flags:     append(globalFlags(true, "log more detail"), flushFlags()...),
		Action:    flushAction,
		Commands: append([]*cli.Command{
			{
				Name:         "flush",
				Usage:        "replay HOST's spool to its SMTP server (the default command)",
				ArgsUsage:    "HOST",
				Flags:        commandFlags(flushFlags()...),
				Action:       flushAction,
				OnUsageError: onUsage,
				// No "help" subcommand: "flush help" flushes the host
				// "help"; "etrnflush help flush" gives the help.
				HideHelpCommand: true,
			},
			{
				Name:            "check-config",
				Usage:           "validate the configuration and print the settings in force",
				ArgsUsage:       "[HOST]",
				Flags:           commandFlags(settingFlags()...),
				Before:          onlyFlags("check-config", settingFlags()),
				Action:          checkConfigAction,
				OnUsageError:    onUsage,
				HideHelpCommand: true,
			},
			serveCommand(onUsage),
			passwdCommand(onUsage),
			listCommand(onUsage),
		}, folderCommands(onUsage)...),
		OnUsageError:           onUsage,
		ExitErrHandler:         func(*cli.Context, error) {},
		UseShortOptionHandling: true,
	}
	for _, cmd := range app.Commands {
		if cmd.Before == nil && cmd.Name != "flush" {
			cmd.Before = onlyFlags(cmd.Name, nil)
		}
	}
	return app
}

func loadConfig(c *cli.Context) (*config.Config, error) {
	cc := flagCtx(c, "config")
	return config.Load(cc.String("config"), cc.IsSet("config"))
}

// hostArg validates the one HOST argument. It may come straight from the
// network (ETRN), so nothing is touched before it passes.
func hostArg(c *cli.Context, optional bool) (string, error) {
	switch {
	case c.NArg() == 0 && optional:
		return "", nil
	case c.NArg() == 0:
		return "", usageErr("missing HOST (usage: etrnflush [flags] HOST)")
	case c.NArg() > 1:
		return "", usageErr("one HOST expected, got %d arguments (flags go before HOST)", c.NArg())
	}
	raw := c.Args().First()
	h, err := config.CheckHostName(raw)
	if err != nil {
		return "", usageErr("invalid host %s: %v", strconv.QuoteToASCII(raw), err)
	}
	return h, nil
}

// settings layers flags over the config's host and global values.
func settings(c *cli.Context, cfg *config.Config, host string) (config.Settings, error) {
	s := cfg.For(host)
	if v := flagString(c, "spool"); v != "" {
		s.Spool = v
	}
	if v := flagString(c, "format"); v != "" {
		if err := config.CheckFormat(v); err != nil {
			return s, usageErr("--format: %v", err)
		}
		s.Format = v
	}
	if v := flagString(c, "to"); v != "" {
		if err := config.CheckRoute(v); err != nil {
			return s, usageErr("--to: %v", err)
		}
		s.Route = v
	}
	if v := flagString(c, "helo"); v != "" {
		if err := config.CheckHelo(v); err != nil {
			return s, usageErr("--helo: %v", err)
		}
		s.Helo = v
	}
	if v := flagString(c, "tls"); v != "" {
		if err := config.CheckTLS(v); err != nil {
			return s, usageErr("--tls: %v", err)
		}
		s.TLS = v
	}
	if v := flagString(c, "timeout"); v != "" {
		d, err := config.ParseDuration(v)
		if err != nil {
			return s, usageErr("--timeout: %v", err)
		}
		s.Timeout = d
	}
	if v := flagString(c, "log"); v != "" {
		if err := config.CheckLog(v); err != nil {
			return s, usageErr("--log: %v", err)
		}
		s.Log = v
	}
	if tc := flagCtx(c, "max-inflight"); tc.IsSet("max-inflight") {
		n := tc.Int("max-inflight")
		if err := config.CheckMaxInflight(n); err != nil {
			return s, usageErr("--max-inflight: %v", err)
		}
		s.MaxInflight = n
	}
	if tc := flagCtx(c, "max-connections"); tc.IsSet("max-connections") {
		n := tc.Int("max-connections")
		if err := config.CheckMaxConnections(n); err != nil {
			return s, usageErr("--max-connections: %v", err)
		}
		s.MaxConnections = n
	}
	if flagCtx(c, "no-pipelining").Bool("no-pipelining") {
		s.Pipelining = false
	}
	if flagCtx(c, "no-chunking").Bool("no-chunking") {
		s.Chunking = false
	}
	if s.AuthUser != "" && s.TLS != "verify" {
		return s, usageErr("AUTH for %s needs a verified server; --tls %s is refused (use --tls verify)", host, s.TLS)
	}
	return s, nil
}

// openLog opens the log the settings name. Nothing may fail silently
// where nobody reads standard error (under Exim and inetd): a log file
// that cannot be opened falls back to syslog, syslog to standard error,
// each with a warning in the log that is used. A dry run writes no file:
// it logs to standard error unless syslog is asked for.
func openLog(c *cli.Context, dest string, dryRun bool) *logging.Logger {
	verbose := flagCtx(c, "verbose").Bool("verbose")
	if dest == "" {
		dest = "syslog"
		if isTerminal(os.Stderr) {
			dest = "stderr"
		}
	}
	if dryRun && dest != "syslog" {
		dest = "stderr"
	}
	// -vv (or -v given twice, before and after the command word) adds
	// the SMTP transcript. Each context defines the flag, so each counts
	// its own.
	n := 0
	for _, cc := range c.Lineage() {
		n += cc.Count("verbose")
	}
	return openLogFallback(dest, verbose, n >= 2, c.App.ErrWriter)
}

// openLogFallback opens dest; a log file that cannot be opened falls back
// to syslog, syslog to errw, each with a warning in the log used. trace
// adds the SMTP transcript (-vv).
func openLogFallback(dest string, verbose, trace bool, errw io.Writer) *logging.Logger {
	log, err := logging.New(dest, verbose)
	if err == nil {
		log.SetTrace(trace)
		return log
	}
	if dest != "syslog" && dest != "stderr" {
		if sys, serr := logging.New("syslog", verbose); serr == nil {
			sys.SetTrace(trace)
			sys.Warnf("event=log-fallback log=syslog error=%s", logging.Quote(err.Error()))
			return sys
		}
	}
	// No syslog socket (a container): stderr beats losing the log.
	log = logging.NewWriter(errw, verbose)
	log.SetTrace(trace)
	log.Warnf("event=log-fallback log=stderr error=%s", logging.Quote(err.Error()))
	return log
}

// loggedError is an error the run's log already holds.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// becomeOwner switches a root run to the owner of the spool directory
// (see package owner). A directory that does not exist holds nothing to
// send, and the flush says so without creating anything.
func becomeOwner(dir string) (owner.Switch, error) {
	sw, err := owner.Become(dir)
	if errors.Is(err, os.ErrNotExist) {
		return sw, nil
	}
	return sw, err
}

// rootLogDest keeps a run that stays root only because the spool
// directory does not exist yet (there is nobody to become) from creating
// the log file: it would be root's, and every later run as the spool's
// owner would have to log elsewhere. It returns the destination to use
// and, when it changed, the warning that says why.
func rootLogDest(dest, spoolDir string) (string, string) {
	if unix.Geteuid() != 0 || dest == "" || dest == "stderr" || dest == "syslog" {
		return dest, ""
	}
	if _, err := os.Lstat(spoolDir); !errors.Is(err, os.ErrNotExist) {
		return dest, ""
	}
	if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
		return dest, ""
	}
	return "syslog", fmt.Sprintf("log file %s not created: running as root, and the spool directory %s does not exist yet to say whose it would be; logging to syslog", dest, spoolDir)
}

func flushAction(c *cli.Context) error {
	if flagCtx(c, "all").Bool("all") {
		return flushAllAction(c)
	}
	if flagCtx(c, "jobs").IsSet("jobs") {
		return usageErr("--jobs goes with --all")
	}
	host, err := hostArg(c, false)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	s, err := settings(c, cfg, host)
	if err != nil {
		return err
	}
	if _, ok := config.IsClientRoute(s.Route); ok {
		return usageErr("host %s has route = %q: only etrnflush serve knows the client's address; give --to", host, s.Route)
	}
	// Under Exim the umask is 0: never let spool copies become readable.
	unix.Umask(0o077)
	// Before any file is opened for writing (the log included): run as
	// root, act as the spool directory's owner, so that the next run as
	// that user can use everything this one leaves.
	dryRun := flagCtx(c, "dry-run").Bool("dry-run")
	// Secrets first: they may be readable by root alone.
	var authPass string
	if s.AuthPasswordFile != "" && !dryRun {
		if authPass, err = config.ReadSecret(s.AuthPasswordFile); err != nil {
			return &exitError{exConfig, fmt.Errorf("auth_password_file: %w", err)}
		}
	}
	sw, err := becomeOwner(filepath.Dir(s.Spool))
	if err != nil {
		return err
	}

	dest, why := s.Log, ""
	if !dryRun {
		dest, why = rootLogDest(dest, filepath.Dir(s.Spool))
	}
	log := openLog(c, dest, dryRun)
	defer func() {
		if cerr := log.Close(); cerr != nil {
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: close log: %v\n", cerr)
		}
	}()
	if why != "" {
		log.Warnf("event=log-fallback host=%s log=syslog reason=%s", host, logging.Quote(why))
	}
	if sw.Changed {
		log.Infof("event=owner-switch host=%s %s dir=%s", host, sw, logging.Quote(sw.Dir))
	}
	if _, known := cfg.Hosts[host]; !known && !dryRun && flagString(c, "spool") == "" {
		// A HOST with no [host] table and nothing in spool_dir is most
		// likely misspelt: say where we looked, and create nothing (not
		// even the lock file a flush takes).
		if held, err := spool.Holds(s.Spool); err == nil && !held {
			log.Warnf("event=nothing-to-send host=%s spool=%s reason=%s", host, logging.Quote(s.Spool),
				logging.Quote(fmt.Sprintf("%s does not exist and there is no [host.%q] table; nothing was created", s.Spool, host)))
			return nil
		}
	}

	fc := plan.Flush(s)
	fc.DryRun, fc.Out, fc.Log = dryRun, c.App.Writer, log
	if !dryRun {
		if fc.Sender.Helo == "" {
			if fc.Sender.Helo, err = plan.FQDN(); err != nil {
				return &exitError{exConfig, err}
			}
		}
		fc.Sender.AuthPass = authPass
	}

	// A person at a terminal sees the flush go, and its summary
	// whatever the log is; under Exim, inetd, cron or a pipe standard
	// error is no terminal and gets none of it.
	tty := !dryRun && isTerminal(os.Stderr)
	var prog *progress
	if tty && !flagCtx(c, "no-progress").Bool("no-progress") {
		held := listHost(s, false)
		prog = newProgress(os.Stderr, host, held.Messages, held.Bytes)
		fc.Progress = prog.update
		if log.Stderr() {
			log.SetBeforeLine(prog.clear)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	sum, err := flush.Run(ctx, fc)
	if prog != nil {
		prog.clear()
		log.SetBeforeLine(nil)
	}
	if tty && !log.Stderr() && !sum.Busy {
		fmt.Fprintf(os.Stderr, "etrnflush: %s\n", flush.SummaryLine(host, sum, len(fc.Sendmail) > 0, fc.ArchiveDir != ""))
	}
	res := flushResult(c, host, sum, err, dryRun)
	if !dryRun && !sum.Busy {
		recordLast(log, filepath.Dir(filepath.Clean(s.Spool)), host, sum, err, res)
	}
	return res
}

// recordLast writes the host's state file for list. A spool directory
// that does not exist gets none: nothing was held, and creating it is
// not ours to do. Trouble writing it costs the admin a listing, not mail:
// a warning.
func recordLast(log *logging.Logger, dir, host string, sum flush.Summary, runErr, res error) {
	if _, err := os.Stat(dir); err != nil {
		return
	}
	l := spool.LastFlush{
		Time: time.Now().UTC().Truncate(time.Second), Exit: exitCode(res),
		Messages: sum.Messages(), Sent: sum.Sent, Deferred: sum.Deferred, Failed: sum.Failed,
		Quarantined: sum.Quarantined, Uncertain: sum.Uncertain, Partial: sum.Partial,
		Bytes: sum.Bytes, ElapsedMS: sum.Elapsed.Milliseconds(), Unreachable: sum.Unreachable,
	}
	if runErr != nil {
		l.Error = oneLine(runErr.Error())
	}
	if err := spool.WriteLastFlush(dir, host, l); err != nil {
		log.Warnf("event=state host=%s error=%s", host, logging.Quote("cannot record the last flush: "+err.Error()))
	}
}

// flushResult turns a flush's outcome into the error run maps to the
// exit status.
func flushResult(c *cli.Context, host string, sum flush.Summary, err error, dryRun bool) error {
	if err != nil {
		return loggedError{err} // flush.Run has logged it
	}
	if dryRun {
		fmt.Fprintf(c.App.Writer, "event=summary host=%s dry_run=true layout=%s would_send=%d would_quarantine=%d would_expire=%d would_warn=%d bytes=%d\n",
			host, sum.Layout, sum.WouldSend, sum.Quarantined, sum.WouldExpire, sum.WouldWarn, sum.Bytes)
		if sum.Quarantined > 0 {
			return &exitError{exDataErr, nil}
		}
		return nil
	}
	switch {
	case sum.Busy:
		return nil
	case sum.Left():
		return &exitError{exTempFail, nil}
	case sum.Quarantined > 0:
		return &exitError{exDataErr, nil}
	}
	return nil
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
