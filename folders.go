package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"etrnflush/config"
	"etrnflush/flush"
	"etrnflush/logging"
	"etrnflush/plan"
	"etrnflush/spool"
)

// The failed and quarantine folders hold what a flush set aside: copies
// of messages a server refused with 5xx, and entries too damaged to send.
// These commands show them and let the admin put one back into the
// host's spool or throw it away, as postsuper -r and -d do for Postfix.

func folderCommands(onUsage cli.OnUsageErrorFunc) []*cli.Command {
	list := func(name, usage string) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: "[HOST...]",
			Flags: commandFlags(
				&cli.BoolFlag{Name: "json", Usage: "print one JSON object per host per line"},
			),
			Action:          func(c *cli.Context) error { return folderListAction(c, name) },
			OnUsageError:    onUsage,
			HideHelpCommand: true,
		}
	}
	change := func(name, usage string) *cli.Command {
		return &cli.Command{
			Name:            name,
			Usage:           usage,
			ArgsUsage:       "HOST ID...",
			Flags:           commandFlags(),
			Action:          func(c *cli.Context) error { return folderChangeAction(c, name) },
			OnUsageError:    onUsage,
			HideHelpCommand: true,
		}
	}
	return []*cli.Command{
		list("failed", "list the copies of refused messages set aside for every host, or the HOSTs named"),
		list("quarantine", "list the damaged entries set aside for every host, or the HOSTs named"),
		change("release", "put copies from HOST's failed or quarantine folder back into its spool"),
		change("delete", "remove copies from HOST's failed or quarantine folder"),
		change("bounce", "return copies from HOST's failed or quarantine folder to their senders as DSNs, then remove them"),
	}
}

// folderDir is the folder a listing command reads.
func folderDir(which, spoolPath string) string {
	if which == "failed" {
		return spool.FailedDir(spoolPath)
	}
	return spool.QuarantineDir(spoolPath)
}

// copyJSON is one copy in failed --json; the names are a stable interface.
type copyJSON struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	Size   int64     `json:"size"`
	From   string    `json:"from,omitempty"`
	To     []string  `json:"to,omitempty"`
	Files  []string  `json:"files"`
}

func folderListAction(c *cli.Context, which string) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	hosts, err := hostArgs(c, cfg)
	if err != nil {
		return err
	}
	w := c.App.Writer
	now := time.Now()
	trouble := false
	for _, h := range hosts {
		dir := folderDir(which, cfg.For(h).Spool)
		cs, err := spool.ListCopies(dir)
		if err != nil {
			trouble = true
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: %s: %v\n", h, err)
			continue
		}
		if len(cs) == 0 && !c.Args().Present() {
			continue // every host was asked about: only those with copies
		}
		var rows []copyJSON
		for _, cp := range cs {
			r := copyJSON{ID: cp.ID, Time: cp.Time, Reason: cp.Reason, Size: cp.Size, Files: cp.Files}
			r.From, r.To = copyEnvelope(cp)
			rows = append(rows, r)
		}
		if c.Bool("json") {
			if rows == nil {
				rows = []copyJSON{}
			}
			b, err := json.Marshal(struct {
				Host   string     `json:"host"`
				Folder string     `json:"folder"`
				Copies []copyJSON `json:"copies"`
			}{h, dir, rows})
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s\n", b)
			continue
		}
		for _, r := range rows {
			fmt.Fprintf(w, "host=%s id=%s age=%s size=%d from=<%s> to=%s reason=%s\n",
				h, r.ID, age(now, r.Time), r.Size, r.From, angle(r.To), logging.Quote(r.Reason))
		}
	}
	if trouble {
		return &exitError{exIOErr, nil}
	}
	return nil
}

// copyEnvelope is the first envelope of a BSMTP copy, for the listing;
// a copy of another kind, or one that does not parse, shows none.
func copyEnvelope(cp spool.Copy) (string, []string) {
	env, err := spool.CopyEnvelope(cp)
	if err != nil {
		return "", nil
	}
	return env.From, env.To
}

// hostArgs validates HOST operands, or names every host with something
// held (see heldHosts) when there are none.
func hostArgs(c *cli.Context, cfg *config.Config) ([]string, error) {
	var hosts []string
	for _, a := range c.Args().Slice() {
		h, err := config.CheckHostName(a)
		if err != nil {
			return nil, usageErr("invalid host %q: %v", a, err)
		}
		hosts = append(hosts, h)
	}
	if len(hosts) > 0 {
		return hosts, nil
	}
	hosts, err := heldHosts(cfg)
	if err != nil {
		return nil, &exitError{exIOErr, err}
	}
	return hosts, nil
}

// folderChangeAction releases, deletes or bounces copies by id: each is
// looked for in the host's failed folder, then its quarantine folder.
// Each copy done gets one line on standard output; each that could not
// be, one warning, and the exit status is that of the worst.
func folderChangeAction(c *cli.Context, which string) error {
	if c.NArg() < 2 {
		return usageErr("usage: etrnflush %s HOST ID...", which)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	raw := c.Args().First()
	host, err := config.CheckHostName(raw)
	if err != nil {
		return usageErr("invalid host %q: %v", raw, err)
	}
	st := cfg.For(host)
	// Run by the postmaster as root, release must leave what it puts
	// back as the flush's own (as a flush started as root does), or the
	// next flush as the Exim user could not read or remove it.
	unix.Umask(0o077)
	if _, err := becomeOwner(filepath.Dir(st.Spool)); err != nil {
		return err
	}
	// Run from a script or cron, standard error is read by nobody: what
	// was released, deleted or bounced (mail sent, copies removed) and
	// what failed also goes to the log, as a flush's outcomes do.
	dest := st.Log
	if v := flagString(c, "log"); v != "" {
		if err := config.CheckLog(v); err != nil {
			return usageErr("--log: %v", err)
		}
		dest = v
	}
	log := openLog(c, dest, false)
	defer func() {
		if cerr := log.Close(); cerr != nil {
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: close log: %v\n", cerr)
		}
	}()
	note := func(id, folder string, err error) {
		if log.Stderr() {
			return // the lines above already went there
		}
		if err != nil {
			log.Warnf("event=folder-change action=%s host=%s id=%s folder=%s status=failed error=%s", which, host, logging.Token(id), folder, logging.Quote(err.Error()))
			return
		}
		log.Infof("event=folder-change action=%s host=%s id=%s folder=%s status=done", which, host, logging.Token(id), folder)
	}
	code := exOK
	worse := func(n int) {
		// The highest code wins: 75 (Exim's lock not had: try again)
		// over 74 (I/O) over 65 (not releasable) over 64 (no such id).
		if n > code {
			code = n
		}
	}
	var bc flush.BounceConfig
	if which == "bounce" {
		bc = flush.BounceConfig{Host: host, ReportingMTA: st.Helo, Sendmail: st.Sendmail}
		if bc.ReportingMTA == "" {
			if bc.ReportingMTA, err = plan.FQDN(); err != nil {
				return &exitError{exConfig, err}
			}
		}
	}
	for _, id := range c.Args().Slice()[1:] {
		cps, folder, err := findCopies(st.Spool, id)
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: host=%s id=%s: %v\n", host, id, err)
			note(id, "-", err)
			if errors.Is(err, errNoCopy) {
				worse(exUsage)
			} else {
				worse(exIOErr)
			}
			continue
		}
		for _, cp := range cps {
			worse(changeCopy(c, which, host, st, bc, cp, folder, note))
		}
	}
	if code != exOK {
		return &exitError{code, nil}
	}
	return nil
}

// changeCopy releases or deletes one copy and returns the exit status
// it earns.
func changeCopy(c *cli.Context, which, host string, st config.Settings, bc flush.BounceConfig, cp spool.Copy, folder string, note func(id, folder string, err error)) int {
	id := cp.ID
	if which == "bounce" {
		env, err := flush.BounceCopy(c.Context, bc, cp, folder == "quarantine")
		note(id, folder, err)
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: host=%s id=%s not bounced: %s\n", host, id, oneLine(err.Error()))
			switch {
			case errors.Is(err, flush.ErrNotBounceable):
				return exDataErr
			case errors.Is(err, flush.ErrSendmail), errors.Is(err, spool.ErrCopyBusy):
				return exTempFail
			case errors.Is(err, os.ErrNotExist):
				return exUsage // gone meanwhile: a flush bounced it
			}
			return exIOErr
		}
		fmt.Fprintf(c.App.Writer, "host=%s id=%s bounced from=%s to=<%s>\n", host, id, folder, env.From)
		return exOK
	}
	if which == "delete" {
		err := spool.Delete(cp)
		note(id, folder, err)
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: host=%s id=%s: %v\n", host, id, err)
			return exIOErr
		}
		fmt.Fprintf(c.App.Writer, "host=%s id=%s deleted from=%s\n", host, id, folder)
		return exOK
	}
	dest, err := spool.Release(st.Spool, st.Format, cp)
	note(id, folder, err)
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: host=%s id=%s not released: %s\n", host, id, oneLine(err.Error()))
		switch {
		case errors.Is(err, spool.ErrNotReleasable):
			return exDataErr
		case errors.Is(err, spool.ErrLocked):
			return exTempFail
		}
		return exIOErr
	}
	fmt.Fprintf(c.App.Writer, "host=%s id=%s released from=%s to=%s\n", host, id, folder, dest)
	return exOK
}

var errNoCopy = errors.New("no such copy in the failed or quarantine folder")

// findCopies looks for id in the failed folder, then the quarantine
// folder. id is a copy's own id, or a message's id as the log and the
// dry run give it: that names every failed copy of the message (one per
// refusal), which are named after it (ID-DIGEST).
func findCopies(spoolPath, id string) ([]spool.Copy, string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") {
		return nil, "", errNoCopy
	}
	for _, which := range []string{"failed", "quarantine"} {
		cs, err := spool.ListCopies(folderDir(which, spoolPath))
		if err != nil {
			return nil, "", err
		}
		var of []spool.Copy
		for _, cp := range cs {
			if cp.ID == id {
				return []spool.Copy{cp}, which, nil
			}
			if which == "failed" && messageOf(cp.ID) == id {
				of = append(of, cp)
			}
		}
		if len(of) > 0 {
			return of, which, nil
		}
	}
	return nil, "", errNoCopy
}

// messageOf is the id of the message a failed copy's id names: the part
// before the digest of its recipients.
func messageOf(copyID string) string {
	if i := strings.IndexByte(copyID, '-'); i > 0 {
		return copyID[:i]
	}
	return copyID
}
