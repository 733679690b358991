package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"etrnflush/config"
	"etrnflush/plan"
	"etrnflush/spool"
)

// The list command answers what mailq and postqueue -p answer for a
// queue: what is held for whom, how much and since when. It reads the
// spools exactly as a dry run does (spool.Options.DryRun: no claim, no
// lock file, no write), so it may run beside a flush and under any user
// that can read the spool directory.

func listCommand(onUsage cli.OnUsageErrorFunc) *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list the mail held for every host, or for the HOSTs named; read-only",
		ArgsUsage: "[HOST...]",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object per host per line"},
		}, globalFlags(false, "list each message too")...),
		Action:          listAction,
		OnUsageError:    onUsage,
		HideHelpCommand: true,
	}
}

// hostList is one host's line of the listing; the JSON names are a
// stable interface (see the man page).
type hostList struct {
	Host        string     `json:"host"`
	Spool       string     `json:"spool"`
	Layout      string     `json:"layout"`
	Messages    int        `json:"messages"`
	Recipients  int        `json:"recipients"`
	Bytes       int64      `json:"bytes"`
	Oldest      *time.Time `json:"oldest"`
	Newest      *time.Time `json:"newest"`
	Damaged     int        `json:"damaged"`
	Failed      int        `json:"failed"`
	Quarantined int        `json:"quarantined"`
	Running     bool       `json:"running"`
	// LastFlush is the host's state file (spool.LastFlush), null when
	// no flush has recorded one.
	LastFlush *spool.LastFlush `json:"last_flush"`
	Error     string           `json:"error,omitempty"`
	List      []msgList        `json:"list,omitempty"`
}

// msgList is one message of a -v listing.
type msgList struct {
	ID        string    `json:"id"`
	EximID    string    `json:"exim_id,omitempty"`
	MessageID string    `json:"message_id,omitempty"`
	Arrived   time.Time `json:"arrived"`
	Size      int64     `json:"size"`
	From      string    `json:"from"`
	To        []string  `json:"to"`
}

func listAction(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	var want []string
	for _, a := range c.Args().Slice() {
		h, err := config.CheckHostName(a)
		if err != nil {
			return usageErr("invalid host %q: %v", a, err)
		}
		want = append(want, h)
	}
	if len(want) == 0 {
		if want, err = heldHosts(cfg); err != nil {
			return &exitError{exIOErr, err}
		}
	}
	verbose := flagCtx(c, "verbose").Bool("verbose")
	asJSON := c.Bool("json")
	now := time.Now()
	var rows []hostList
	trouble := false
	for _, h := range want {
		hl := listHost(cfg.For(h), verbose)
		if hl.Error != "" {
			trouble = true
		}
		rows = append(rows, hl)
	}
	w := c.App.Writer
	if asJSON {
		enc := json.NewEncoder(w)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return &exitError{exIOErr, err}
			}
		}
	} else if err := printList(w, rows, now); err != nil {
		return &exitError{exIOErr, err}
	}
	if trouble {
		// Each host's trouble is in its row; the status says there was some.
		return &exitError{exIOErr, nil}
	}
	return nil
}

// heldHosts names every configured host and every host something is
// held for in spool_dir: a spool, a work file of a claimed batch, or a
// failed or quarantine folder. Names that are not host names (Exim's
// own files, a README) are passed by.
func heldHosts(cfg *config.Config) ([]string, error) {
	seen := map[string]bool{}
	for h := range cfg.Hosts {
		seen[h] = true
	}
	ents, err := os.ReadDir(cfg.SpoolDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		n := e.Name()
		if rest, ok := strings.CutPrefix(n, ".etrnflush-"); ok {
			n = ""
			for _, suf := range []string{".failed", ".quarantine"} {
				if s, ok := strings.CutSuffix(rest, suf); ok {
					n = s
				}
			}
			if m := workSuffix.FindStringSubmatch(rest); m != nil {
				n = m[1]
			}
		}
		if n == "" || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".lock") || strings.Contains(n, ".lock.") {
			// Exim's lock file beside an appended spool file (HOST.lock)
			// and its hitching posts (HOST.lock.NODE.TIME.PID) are no hosts.
			continue
		}
		if h, err := config.CheckHostName(n); err == nil && h == n {
			seen[h] = true
		}
	}
	hosts := make([]string, 0, len(seen))
	for h := range seen {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts, nil
}

// workSuffix matches the rest of a work file's or journal's name after
// ".etrnflush-": HOST.<20 digits>[.work|.journal].
var workSuffix = regexp.MustCompile(`^(.+)\.[0-9]{20}(\.[a-z]+)?$`)

// listHost reads one host's spool as a dry run does and counts its
// folders. Trouble is reported in the row, so one unreadable spool does
// not hide the others.
func listHost(s config.Settings, verbose bool) hostList {
	hl := hostList{Host: s.Host, Spool: s.Spool, Layout: "none"}
	var errs []string
	for _, f := range []struct {
		dir string
		n   *int
	}{{spool.FailedDir(s.Spool), &hl.Failed}, {spool.QuarantineDir(s.Spool), &hl.Quarantined}} {
		cs, err := spool.ListCopies(f.dir)
		if err != nil {
			errs = append(errs, err.Error())
		}
		*f.n = len(cs)
	}
	running, err := spool.Running(filepath.Dir(filepath.Clean(s.Spool)), s.Host)
	if err != nil {
		errs = append(errs, err.Error())
	}
	hl.Running = running
	if hl.LastFlush, err = spool.ReadLastFlush(filepath.Dir(filepath.Clean(s.Spool)), s.Host); err != nil {
		errs = append(errs, err.Error())
	}
	o := plan.Spool(s)
	o.DryRun = true
	o.Report = func(e spool.Event) {
		if e.Kind == "quarantine" {
			hl.Damaged++ // what the next flush will quarantine
		}
	}
	if err := readSpool(o, &hl, verbose); err != nil {
		errs = append(errs, err.Error())
	}
	hl.Error = strings.Join(errs, "; ")
	return hl
}

func readSpool(o spool.Options, hl *hostList, verbose bool) (err error) {
	sp, err := spool.Open(o)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := sp.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	hl.Layout = sp.Layout()
	// An appended file's messages have no file time of their own: the
	// file's, the time of its last append, is the best there is.
	var fileTime time.Time
	if fi, err := os.Stat(o.Path); err == nil && fi.Mode().IsRegular() {
		fileTime = fi.ModTime()
	}
	for {
		m, err := sp.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		t := m.Received
		if t.IsZero() {
			t = m.Time
		}
		if t.IsZero() {
			t = fileTime
		}
		// Settle is a no-op in a dry run, but the spool wants every
		// message settled in order before it reads on.
		if err := sp.Settle(m, make([]spool.Outcome, len(m.To)), ""); err != nil {
			return err
		}
		hl.Messages++
		hl.Recipients += len(m.To)
		hl.Bytes += m.Size
		if !t.IsZero() {
			if hl.Oldest == nil || t.Before(*hl.Oldest) {
				tt := t
				hl.Oldest = &tt
			}
			if hl.Newest == nil || t.After(*hl.Newest) {
				tt := t
				hl.Newest = &tt
			}
		}
		if verbose {
			hl.List = append(hl.List, msgList{ID: m.Key, EximID: m.EximID, MessageID: m.MessageID,
				Arrived: t, Size: m.Size, From: m.From, To: append([]string(nil), m.To...)})
		}
	}
}

// age prints a duration as mailq does: the largest unit, whole.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// printList writes the table: one line per host, then for -v each
// message indented under its host; trouble reading a host on a line of
// its own.
func printList(w io.Writer, rows []hostList, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tLAYOUT\tMESSAGES\tRECIPIENTS\tBYTES\tOLDEST\tNEWEST\tFAILED\tQUARANTINED\tFLUSHING\tLAST FLUSH")
	for _, r := range rows {
		newest := "-"
		if r.Newest != nil {
			newest = age(now, *r.Newest)
		}
		oldest := "-"
		if r.Oldest != nil {
			oldest = age(now, *r.Oldest)
		}
		q := fmt.Sprint(r.Quarantined)
		if r.Damaged > 0 {
			q += fmt.Sprintf(" (+%d damaged)", r.Damaged)
		}
		flushing := "-"
		if r.Running {
			flushing = "yes"
		}
		last := "-"
		if l := r.LastFlush; l != nil {
			last = fmt.Sprintf("%s ago, exit %d, %d sent of %d", age(now, l.Time), l.Exit, l.Sent, l.Messages)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Host, r.Layout, r.Messages, r.Recipients, r.Bytes, oldest, newest, r.Failed, q, flushing, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%s: error: %s\n", r.Host, oneLine(r.Error))
		}
		for _, m := range r.List {
			id := m.EximID
			if id == "" {
				id = m.MessageID
			}
			if id == "" {
				id = "-"
			}
			fmt.Fprintf(w, "%s id=%s msg=%s age=%s size=%d from=<%s> to=%s\n",
				r.Host, m.ID, id, age(now, m.Arrived), m.Size, m.From, angle(m.To))
		}
	}
	return nil
}

func angle(to []string) string {
	rc := make([]string, len(to))
	for i, r := range to {
		rc[i] = "<" + r + ">"
	}
	return strings.Join(rc, ",")
}
