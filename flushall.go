package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"etrnflush/config"
	"etrnflush/plan"
	"etrnflush/spool"
)

// flush --all runs one child `etrnflush flush HOST` per host that has
// mail, at most --jobs at a time. A child of its own per host keeps every
// flush exactly what a single one is: its own host lock, its own switch
// to the spool owner, its own log lines and summary, and a crash or hang
// in one host that does not take the others with it.

// maxJobs bounds --jobs: each child holds a connection and a spool open.
const maxJobs = 64

// exitRank orders exit statuses for flush --all, best first: the status
// of the whole is the worst of the hosts'. Local trouble that needs the
// admin (I/O, permissions, configuration) outranks mail left for later,
// which outranks a quarantine.
var exitRank = []int{exOK, exDataErr, exTempFail, exUsage, exIOErr, exNoPerm, exConfig}

func rank(code int) int {
	for i, c := range exitRank {
		if c == code {
			return i
		}
	}
	return len(exitRank) // unknown: worst
}

func flushAllAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr("--all flushes every host with mail; no HOST is taken (got %d)", c.NArg())
	}
	if flagString(c, "spool") != "" {
		return usageErr("--spool names one host's spool; it cannot be used with --all")
	}
	jobs := 1
	if jc := flagCtx(c, "jobs"); jc.IsSet("jobs") {
		jobs = jc.Int("jobs")
		if jobs < 1 || jobs > maxJobs {
			return usageErr("--jobs must be between 1 and %d", maxJobs)
		}
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return &exitError{exIOErr, fmt.Errorf("find this program: %w", err)}
	}
	hosts, err := heldHosts(cfg)
	if err != nil {
		return &exitError{exIOErr, err}
	}
	args := childArgs(c)
	out := c.App.Writer
	var mu sync.Mutex // one line at a time on out
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format, a...)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	worst := exOK
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for _, h := range hosts {
		s := cfg.For(h)
		if _, ok := config.IsClientRoute(s.Route); ok {
			// Only serve knows where such a host is now.
			say("host=%s status=skipped reason=%q\n", h, "route = client: flushed by etrnflush serve only")
			continue
		}
		has, err := hasMail(s)
		if err != nil {
			say("host=%s status=%d error=%q\n", h, exIOErr, oneLine(err.Error()))
			mu.Lock()
			if rank(exIOErr) > rank(worst) {
				worst = exIOErr
			}
			mu.Unlock()
			continue
		}
		if !has {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break // a signal: start no more hosts; the running ones finish
		}
		wg.Add(1)
		go func(h string) {
			defer wg.Done()
			defer func() { <-sem }()
			code := runChild(ctx, exe, append(append([]string{}, args...), "--", h), out, c.App.ErrWriter)
			say("host=%s status=%d\n", h, code)
			mu.Lock()
			defer mu.Unlock()
			if rank(code) > rank(worst) {
				worst = code
			}
		}(h)
	}
	wg.Wait()
	if ctx.Err() != nil && rank(exTempFail) > rank(worst) {
		worst = exTempFail // hosts not started still have their mail
	}
	if worst != exOK {
		return &exitError{worst, nil}
	}
	return nil
}

// hasMail reports whether the spool of s holds a message, reading it as a
// dry run does: nothing is claimed, locked or written.
func hasMail(s config.Settings) (_ bool, err error) {
	o := plan.Spool(s)
	o.DryRun = true
	sp, err := spool.Open(o)
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := sp.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	_, err = sp.Next()
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	return err == nil, err
}

// childArgs are the options each child gets: the global ones and every
// flush option given on this command line, as given, before "flush".
func childArgs(c *cli.Context) []string {
	var a []string
	if cc := flagCtx(c, "config"); cc.IsSet("config") {
		a = append(a, "-c", cc.String("config"))
	}
	if v := flagString(c, "log"); v != "" {
		a = append(a, "--log", v)
	}
	if flagCtx(c, "verbose").Bool("verbose") {
		a = append(a, "-v")
	}
	// Several children share the terminal: no live lines.
	a = append(a, "flush", "--no-progress")
	for _, f := range flushFlags() {
		name := f.Names()[0]
		fc := flagCtx(c, name)
		if !fc.IsSet(name) || name == "all" || name == "jobs" || name == "no-progress" {
			continue
		}
		switch f.(type) {
		case *cli.BoolFlag:
			if fc.Bool(name) {
				a = append(a, "--"+name)
			}
		case *cli.IntFlag:
			a = append(a, "--"+name, fmt.Sprint(fc.Int(name)))
		case *cli.DurationFlag:
			a = append(a, "--"+name, fc.Duration(name).String())
		default:
			a = append(a, "--"+name, fc.String(name))
		}
	}
	return a
}

// runChild runs one flush and returns its exit status. A signal to us is
// passed on as SIGTERM, which a flush handles by stopping cleanly; a
// child that cannot be started or dies of a signal counts as 75: its mail
// is where it was.
func runChild(ctx context.Context, exe string, args []string, stdout, stderr io.Writer) int {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Minute // a flush that ignores SIGTERM for this long is killed
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exOK
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode()
	}
	fmt.Fprintf(stderr, "etrnflush: warning: %s %v: %v\n", exe, args, err)
	return exTempFail
}
