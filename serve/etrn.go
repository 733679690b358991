package serve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"etrnflush/config"
	"etrnflush/logging"
	"etrnflush/plan"
	"etrnflush/spool"
)

// etrn answers ETRN (RFC 1985): 250 queuing started, 251 nothing waiting,
// 253 N messages started, 458 unable to queue, 459 not allowed, 501
// syntax. The flush runs detached, so the reply comes at once.
//
// Who may ask what:
//   - a client in etrn_clients may ETRN every host, and is told how much
//     is waiting (251/253);
//   - anybody else, when etrn_public is true, may ETRN hosts whose mail
//     goes to their own route (harmless: it only starts a delivery that
//     would happen anyway), and gets a plain 250 so that the state of the
//     queues stays private;
//   - a host with route = "client" has its mail sent to whoever asks, so
//     only etrn_clients may ETRN it;
//   - so may only etrn_clients ETRN a host listed under a [user.NAME]:
//     its customer collects it with ATRN, and a flush to what its DNS
//     says now (often a stale dial-up address) would send its mail
//     astray, or hold the host lock and keep the customer's ATRN at 451.
//
// A host whose flush is running already is asked for one more pass (the
// spool's extra-pass request) instead of getting a process of its own;
// every host that does get one costs a unit of etrn_limit.
func (s *session) etrn(arg string) error {
	kind, name, err := parseETRN(arg)
	if err != nil {
		return s.reply(501, "5.5.4 Syntax: ETRN [@|#]node")
	}
	node := name
	if kind != etrnHost {
		node = string(kind) + name
	}
	trusted := s.trusted()
	if !trusted && !s.cfg.Serve.EtrnPublic {
		s.log.Warnf("event=etrn client=%s etrn=%s status=refused reason=%s", s.clientStr, node, logging.Quote("client not in etrn_clients"))
		return s.reply(459, "4.7.1 Node "+node+" not allowed: ETRN not permitted from this address")
	}
	ok, err := s.rateOK()
	if err != nil {
		s.log.Errorf("event=etrn client=%s etrn=%s status=error error=%s", s.clientStr, node, logging.Quote("rate state: "+err.Error()))
		return s.reply(458, "4.3.0 Unable to queue messages for node "+node)
	}
	if !ok {
		s.log.Warnf("event=etrn client=%s etrn=%s status=refused reason=%s", s.clientStr, node, logging.Quote(fmt.Sprintf("more than %d ETRN in %s", s.cfg.Serve.EtrnLimit, s.cfg.Serve.EtrnWindow)))
		return s.reply(458, "4.7.0 Unable to queue messages for node "+node+": too many requests, try later")
	}
	hosts, err := s.resolve(kind, name)
	if err != nil {
		s.log.Errorf("event=etrn client=%s etrn=%s status=error error=%s", s.clientStr, node, logging.Quote(err.Error()))
		return s.reply(458, "4.3.0 Unable to queue messages for node "+node)
	}
	if len(hosts) == 0 {
		s.log.Warnf("event=etrn client=%s etrn=%s status=refused reason=%s", s.clientStr, node, logging.Quote("unknown node"))
		return s.reply(459, "4.1.2 Node "+node+" not allowed: unknown node")
	}
	type job struct {
		host, to string
		n        int
	}
	var jobs []job
	total, counted, skipped := 0, true, 0
	for _, h := range hosts {
		st := s.cfg.Conf.For(h)
		to := ""
		port, isClient := config.IsClientRoute(st.Route)
		if owner := s.odmrOwner(h); !trusted && (isClient || owner != "") {
			why := "has route = client"
			if owner != "" {
				why = "is an ODMR host of [user." + owner + "]"
			}
			s.log.Warnf("event=etrn client=%s etrn=%s host=%s status=refused reason=%s", s.clientStr, node, h, logging.Quote(why+" and the client is not in etrn_clients"))
			if skipped++; skipped == len(hosts) {
				return s.reply(459, "4.7.1 Node "+node+" not allowed: not from this address")
			}
			continue // the other hosts of @domain are still served
		}
		if isClient {
			if !s.client.IsValid() {
				s.log.Warnf("event=etrn client=%s etrn=%s host=%s status=refused reason=%s", s.clientStr, node, h, logging.Quote("route = client, but the client has no IP address"))
				return s.reply(458, "4.3.0 Unable to queue messages for node "+node+": no address to send to")
			}
			to = net.JoinHostPort(s.client.String(), port)
		}
		n, err := countMessages(st)
		if err != nil {
			// Let the flush find out and log what is wrong; the client
			// learns only that queuing started.
			s.log.Warnf("event=etrn client=%s etrn=%s host=%s status=error error=%s", s.clientStr, node, h, logging.Quote("cannot count messages: "+err.Error()))
			counted = false
		}
		if n == 0 && err == nil {
			continue
		}
		asked, err := askPass(filepath.Dir(st.Spool), h)
		if err != nil {
			// The flush will meet the same trouble and log it.
			s.log.Warnf("event=etrn client=%s etrn=%s host=%s status=error error=%s", s.clientStr, node, h, logging.Quote(err.Error()))
		}
		total += n
		if asked {
			s.log.Infof("event=etrn client=%s etrn=%s host=%s status=busy reason=%s", s.clientStr, node, h, logging.Quote("flush already running; asked it for one more pass"))
			continue
		}
		jobs = append(jobs, job{h, to, n})
	}
	if len(jobs) > 1 {
		granted, err := s.rateTake(len(jobs) - 1)
		if err != nil {
			s.log.Errorf("event=etrn client=%s etrn=%s status=error error=%s", s.clientStr, node, logging.Quote("rate state: "+err.Error()))
			granted = 0
		}
		if granted < len(jobs)-1 {
			for _, j := range jobs[1+granted:] {
				s.log.Warnf("event=etrn client=%s etrn=%s host=%s status=refused reason=%s", s.clientStr, node, j.host, logging.Quote(fmt.Sprintf("not started: more than %d flushes in %s", s.cfg.Serve.EtrnLimit, s.cfg.Serve.EtrnWindow)))
				total -= j.n
			}
			jobs = jobs[:1+granted]
		}
	}
	for _, j := range jobs {
		if err := s.cfg.Spawn(j.host, j.to); err != nil {
			s.log.Errorf("event=etrn client=%s etrn=%s host=%s status=error error=%s", s.clientStr, node, j.host, logging.Quote("cannot start the flush: "+err.Error()))
			return s.reply(458, "4.3.0 Unable to queue messages for node "+node)
		}
		to := j.to
		if to == "" {
			to = "route"
		}
		s.log.Infof("event=flush-started client=%s etrn=%s host=%s to=%s", s.clientStr, node, j.host, to)
	}
	switch {
	case !trusted || !counted:
		return s.reply(250, "2.0.0 OK, queuing for node "+node+" started")
	case total == 0:
		s.log.Infof("event=etrn client=%s etrn=%s status=empty reason=%s", s.clientStr, node, logging.Quote("nothing waiting"))
		return s.reply(251, "2.0.0 OK, no messages waiting for node "+node)
	}
	return s.reply(253, fmt.Sprintf("2.0.0 OK, %d pending messages for node %s started", total, node))
}

// odmrOwner names the first [user.NAME] (by name) that lists host, ""
// when none does.
func (s *session) odmrOwner(host string) string {
	owner := ""
	for n, u := range s.cfg.Conf.Users {
		if slices.Contains(u.Hosts, host) && (owner == "" || n < owner) {
			owner = n
		}
	}
	return owner
}

// askPass asks the running flush of host, if there is one, for one more
// pass, and reports whether it did: then no new flush is needed. The lock
// is only looked at when its file exists, so a host never flushed gets no
// file from here.
func askPass(dir, host string) (bool, error) {
	busy, err := spool.HostBusy(dir, host)
	if err != nil || !busy {
		return false, err
	}
	// LockHost leaves the request (and says ErrBusy) while the flush
	// runs; if it ended meanwhile we hold the lock: drop it and start a
	// flush after all.
	l, err := spool.LockHost(dir, host)
	if errors.Is(err, spool.ErrBusy) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, l.Abandon()
}

// trusted reports whether the client is in one of etrn_clients.
func (s *session) trusted() bool {
	if !s.client.IsValid() {
		return false
	}
	for _, p := range s.cfg.Serve.EtrnClients {
		if p.Contains(s.client) {
			return true
		}
	}
	return false
}

// knownHosts lists the hosts etrnflush knows: those with a [host] table,
// and every name in spool_dir that is a host name (a spool, or the lock
// file a flush left: a host whose spool is gone after a full flush stays
// known).
func (s *session) knownHosts() ([]string, error) {
	seen := map[string]bool{}
	for h := range s.cfg.Conf.Hosts {
		seen[h] = true
	}
	ents, err := os.ReadDir(s.cfg.Conf.SpoolDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list spool_dir: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if l, ok := strings.CutPrefix(n, ".etrnflush-"); ok {
			if h, ok := strings.CutSuffix(l, ".lock"); ok {
				n = h
			}
		}
		if h, err := config.CheckHostName(n); err == nil && h == n {
			seen[h] = true
		}
	}
	out := make([]string, 0, len(seen))
	for h := range seen {
		out = append(out, h)
	}
	sort.Strings(out)
	return out, nil
}

// resolve maps an ETRN argument to hosts: a known host; every known host
// equal to or below an @domain; the host whose spool is named #queue.
func (s *session) resolve(kind etrnKind, name string) ([]string, error) {
	known, err := s.knownHosts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range known {
		switch kind {
		case etrnHost:
			if h == name {
				out = append(out, h)
			}
		case etrnDomain:
			if h == name || strings.HasSuffix(h, "."+name) {
				out = append(out, h)
			}
		case etrnQueue:
			if filepath.Base(s.cfg.Conf.For(h).Spool) == name {
				out = append(out, h)
			}
		}
	}
	return out, nil
}

// maxCount bounds the messages counted for one answer; more are reported
// as this many.
const maxCount = 100000

// countMessages counts what is waiting in a host's spool, reading it the
// way a dry run does: no claim, no lock, nothing written.
func countMessages(st config.Settings) (n int, err error) {
	o := plan.Spool(st)
	o.DryRun = true
	sp, err := spool.Open(o)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := sp.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	for n < maxCount {
		if _, err := sp.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		n++
	}
	return n, nil
}

// Spawner starts `etrnflush flush` for a host as a process of its own:
// in a new session (setsid), with standard input and output on
// /dev/null, no descriptor of ours, and arguments passed directly to
// execve, never through a shell. The per-host lock is taken by that
// process, as for any other flush.
type Spawner struct {
	Exe     string // this binary (os.Executable)
	Config  string // -c FILE; "" to leave it to the child
	Log     string // --log DEST; "" to leave it to the child
	Verbose bool
}

// Args is the child's command line (without the program name).
func (sp *Spawner) Args(host, to string) []string {
	var args []string
	if sp.Config != "" {
		args = append(args, "-c", sp.Config)
	}
	if sp.Log != "" {
		args = append(args, "--log", sp.Log)
	}
	if sp.Verbose {
		args = append(args, "-v")
	}
	args = append(args, "flush")
	if to != "" {
		args = append(args, "--to", to)
	}
	return append(args, "--", host)
}

// Spawn starts the flush and does not wait for it.
func (sp *Spawner) Spawn(host, to string) error {
	cmd := exec.Command(sp.Exe, sp.Args(host, to)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Stdin, Stdout and Stderr stay nil: /dev/null. The connection is
	// not the child's, and it must not hold it open.
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", sp.Exe, err)
	}
	// Reap it if it ends while we still run; if we end first, init does.
	go func() { _ = cmd.Wait() }()
	return nil
}
