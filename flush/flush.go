// Package flush is the engine: it takes messages from a spool, hands them to
// the sender, and gives each outcome back to the spool, which removes or keeps
// the message. It owns the per-host lock and the extra-pass protocol, and it
// writes the one log line per message outcome.
package flush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

// Config is one flush of one host.
type Config struct {
	Host   string
	Spool  spool.Options // Host and Report are filled in by Run
	Sender sender.Options
	// Dests are tried in order until one answers; each is host:port.
	// Resolve is called instead when Dests is empty (MX lookup), so that
	// an empty spool never costs a DNS query.
	Dests   []string
	Resolve func() ([]string, error)
	DryRun  bool
	// NoCoalesce sends every spool message in a transaction of its own,
	// even when consecutive ones are copies of one message.
	NoCoalesce bool
	Out        io.Writer // dry-run listing
	Log        *logging.Logger
	// MaxPasses bounds extra passes asked for by concurrent runs, so that
	// a stream of ETRNs cannot keep one process alive forever.
	MaxPasses int
	// MaxMailRefusals, when above 0, stops a run whose server refuses
	// MAIL FROM for more than this many consecutive messages from
	// different senders, keeping them all (see refusedUs).
	MaxMailRefusals int
	// MaxConnections bounds the sessions one run opens when servers end
	// them early (0: DefaultMaxConnections). An ATRN session is never
	// redialled.
	MaxConnections int
	// Session, when set, is an open SMTP session used instead of dialing:
	// ATRN's turned-around connection, which carries several hosts one
	// after another. Run never closes it; the caller says QUIT.
	Session *sender.Session
	// Sendmail, when set, is the command that takes a DSN for each
	// message in the failed folder (see bounceFailed); nil keeps failed
	// copies for the admin, unreported.
	Sendmail []string
	// MaxAge, when set, expires messages held longer (see expire);
	// WarnAge, when set, warns their senders once (see warn).
	MaxAge, WarnAge time.Duration
	// Progress, when set, is called after each message is settled with
	// the messages settled so far and their octets.
	Progress func(messages int, bytes int64)
	// ArchiveDir, when set, is the archive root: each message a server
	// accepted is copied into ArchiveDir/HOST before it leaves the spool
	// (see archive); copies older than ArchiveMaxAge are pruned at the
	// end of the run.
	ArchiveDir    string
	ArchiveMaxAge time.Duration
}

// Summary counts messages by outcome, each message once: Sent (every
// recipient taken), Failed (every one refused), Deferred (every one
// kept), Uncertain, Partial (recipients in more than one of those
// states; PartialLeft of them with a recipient kept) and Quarantined.
type Summary struct {
	Sent, Deferred, Failed, Quarantined, Uncertain int
	Partial, PartialLeft                           int
	WouldSend                                      int // dry run only
	Bytes                                          int64
	Elapsed                                        time.Duration
	Busy                                           bool // another flush was running; it was asked for another pass
	Unreachable                                    bool // no destination answered, or the connection failed with messages not yet offered
	Layout                                         string
	Bounced, BounceFailed                          int // DSNs handed to Sendmail, and those it did not take
	Archived, ArchiveFailed                        int // accepted messages copied to the archive, and those not copied
	WouldExpire, WouldWarn                         int // dry run only
	Rcpts                                          RcptCounts
}

// RcptCounts counts the recipients of the settled messages, each once by
// its own outcome: they add up to the recipients the run handled.
type RcptCounts struct {
	Sent, Failed, Deferred, Uncertain int
}

// Total is the recipients counted.
func (c RcptCounts) Total() int { return c.Sent + c.Failed + c.Deferred + c.Uncertain }

// Messages is how many messages the run settled, each once.
func (s Summary) Messages() int {
	return s.Sent + s.Deferred + s.Failed + s.Quarantined + s.Uncertain + s.Partial
}

// Left reports whether anything is left for a later run. An unreachable
// host leaves its messages counted as deferred; when expiry gave them all
// up and their DSNs were handed over, nothing is left: the run did all
// there was to do, whether or not the host answered.
func (s Summary) Left() bool {
	return s.Deferred > 0 || s.Uncertain > 0 || s.PartialLeft > 0 || s.BounceFailed > 0
}

// ErrSpool wraps local I/O trouble with the spool (exit 74).
type ErrSpool struct{ Err error }

func (e *ErrSpool) Error() string { return e.Err.Error() }
func (e *ErrSpool) Unwrap() error { return e.Err }

// Run flushes cfg.Host. The error is nil when the flush went as designed,
// even if the host was unreachable (see Summary); it is set for local trouble
// (spool I/O, layout, Exim's lock not obtainable).
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	r := &run{cfg: cfg, log: cfg.Log}
	if r.cfg.MaxPasses == 0 {
		r.cfg.MaxPasses = 10
	}
	r.cfg.Spool.Host = cfg.Host
	r.cfg.Spool.Report = r.event
	r.cfg.Spool.DryRun = cfg.DryRun
	err := r.run(ctx)
	r.sum.Elapsed = time.Since(start)
	if err != nil {
		r.log.Errorf("event=error host=%s error=%s", cfg.Host, logging.Quote(strings.Join(strings.Fields(err.Error()), " ")))
	}
	// A dry run prints its own listing and summary; it must not log a
	// summary that reads like a real flush.
	if !r.sum.Busy && !cfg.DryRun {
		r.log.Infof("%s", SummaryLine(cfg.Host, r.sum, len(cfg.Sendmail) > 0, cfg.ArchiveDir != ""))
	}
	return r.sum, err
}

// SummaryLine is the line that ends a flush of host, in the log and on
// the terminal. bounces adds the DSN counts (bounce is on), archive the
// archive's (archive_dir is set).
func SummaryLine(host string, s Summary, bounces, archive bool) string {
	b := ""
	if bounces {
		b = fmt.Sprintf(" bounced=%d bounce_failed=%d", s.Bounced, s.BounceFailed)
	}
	if archive {
		b += fmt.Sprintf(" archived=%d archive_failed=%d", s.Archived, s.ArchiveFailed)
	}
	return fmt.Sprintf("event=summary host=%s sent=%d deferred=%d failed=%d quarantined=%d uncertain=%d partial=%d messages=%d "+
		"rcpts=%d rcpt_sent=%d rcpt_failed=%d rcpt_deferred=%d rcpt_uncertain=%d bytes=%d elapsed=%s%s",
		host, s.Sent, s.Deferred, s.Failed, s.Quarantined, s.Uncertain, s.Partial, s.Messages(),
		s.Rcpts.Total(), s.Rcpts.Sent, s.Rcpts.Failed, s.Rcpts.Deferred, s.Rcpts.Uncertain,
		s.Bytes, s.Elapsed.Round(time.Millisecond), b)
}

// advance counts one settled message for Progress.
func (r *run) advance(m *spool.Message) {
	r.done++
	r.doneBytes += m.Size
	if r.cfg.Progress != nil {
		r.cfg.Progress(r.done, r.doneBytes)
	}
}

type run struct {
	cfg  Config
	log  *logging.Logger
	sum  Summary
	sess *sender.Session
	dead bool // the connection failed in this run: do not redial for another pass
	// conns counts the sessions dialled in this run; progress the
	// outcomes they settled. A session that settled nothing (a server
	// that hangs up at every MAIL) is not followed by another.
	conns, progress int
	struck          map[string]bool // spool ids that were in progress when a session died
	remote          string          // the server dialled last, for Remote-MTA (see remoteTag)
	done            int             // messages settled, for Progress
	doneBytes       int64
	archiveOff      bool // archiving failed in this run: not tried again (see archive)
	pruned          bool // the archive was pruned in this run
}

func (r *run) maxConns() int {
	if r.cfg.MaxConnections > 0 {
		return r.cfg.MaxConnections
	}
	return DefaultMaxConnections
}

// DefaultMaxConnections applies when Config.MaxConnections is 0.
const DefaultMaxConnections = 10

func (r *run) run(ctx context.Context) (err error) {
	if r.cfg.DryRun {
		// A dry run takes no lock: creating the lock file would change the
		// spool directory, and it must change nothing.
		return r.pass(ctx)
	}
	dir := filepath.Dir(r.cfg.Spool.Path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		// No directory, so no spool and none of our files beside it:
		// nothing was ever held for this host. Creating the directory
		// to hold a lock in it is not ours to do.
		r.log.Debugf("event=nothing-to-send host=%s reason=%s", r.cfg.Host, logging.Quote(dir+" does not exist"))
		return nil
	}
	lock, err := spool.LockHost(dir, r.cfg.Host)
	if errors.Is(err, spool.ErrBusy) {
		r.sum.Busy = true
		r.log.Infof("event=busy host=%s reason=%s", r.cfg.Host, logging.Quote("another flush is running; asked it for one more pass"))
		return nil
	}
	if err != nil {
		return &ErrSpool{fmt.Errorf("lock host %s: %w", r.cfg.Host, err)}
	}
	r.sess = r.cfg.Session
	defer func() {
		if r.sess != nil && r.sess != r.cfg.Session {
			if cerr := r.sess.Close(); cerr != nil {
				r.log.Debugf("event=quit host=%s error=%s", r.cfg.Host, logging.Quote(cerr.Error()))
			}
		}
	}()
	for passes := 0; ; passes++ {
		left := r.sum.Deferred + r.sum.Uncertain + r.sum.PartialLeft
		err := r.pass(ctx)
		if err == nil && (r.sum.Deferred+r.sum.Uncertain+r.sum.PartialLeft > left || r.sum.Unreachable) {
			// Only what a pass left can have grown too old; a spool
			// the pass emptied is not opened again.
			err = r.expire(ctx)
		}
		if err != nil {
			if aerr := lock.Abandon(); aerr != nil {
				r.log.Warnf("event=lock host=%s error=%s", r.cfg.Host, logging.Quote("release lock: "+aerr.Error()))
			}
			return err
		}
		r.bounceFailed(ctx)
		r.pruneArchive()
		again := lock.TakeAgain()
		if !again {
			var rerr error
			again, rerr = lock.Release()
			if rerr != nil {
				return &ErrSpool{fmt.Errorf("release host lock: %w", rerr)}
			}
			if !again {
				return nil
			}
		}
		if r.dead || passes+1 >= r.cfg.MaxPasses {
			// The request stays unanswered on purpose: nothing would be
			// delivered now, and the next trigger starts a fresh run.
			if aerr := lock.Abandon(); aerr != nil {
				r.log.Warnf("event=lock host=%s error=%s", r.cfg.Host, logging.Quote("release lock: "+aerr.Error()))
			}
			if !r.dead {
				r.log.Warnf("event=gave-up host=%s passes=%d reason=%s", r.cfg.Host, passes+1, logging.Quote("more passes asked for by other runs; the next trigger starts afresh"))
			}
			return nil
		}
		r.log.Infof("event=another-pass host=%s", r.cfg.Host) // asked for by a run that found us busy
	}
}

// event logs what the spool reports about damage and housekeeping.
func (r *run) event(e spool.Event) {
	switch e.Kind {
	case "quarantine":
		r.sum.Quarantined++
		r.log.Warnf("event=quarantine host=%s id=%s status=quarantined size=%d reason=%s", r.cfg.Host, logID(e.ID), e.Size, logging.Quote(e.Reason))
		if r.cfg.DryRun && r.cfg.Out != nil {
			fmt.Fprintf(r.cfg.Out, "event=would-quarantine host=%s id=%s size=%d reason=%s\n", r.cfg.Host, logID(e.ID), e.Size, logging.Quote(e.Reason))
		}
	case "claim":
		r.log.Infof("event=claim host=%s id=%s spool=%s work=%s size=%d", r.cfg.Host, logID(e.ID), logging.Quote(r.cfg.Spool.Path), logging.Quote(e.Reason), e.Size)
	case "orphan", "notice":
		r.log.Warnf("event=%s host=%s id=%s reason=%s", e.Kind, r.cfg.Host, logID(e.ID), logging.Quote(e.Reason))
	case "layout":
		r.log.Infof("event=layout host=%s spool=%s layout=%s", r.cfg.Host, logID(e.ID), logging.Quote(e.Reason))
	default:
		r.log.Infof("event=%s host=%s id=%s reason=%s", logging.Token(e.Kind), r.cfg.Host, logID(e.ID), logging.Quote(e.Reason))
	}
}

func (r *run) pass(ctx context.Context) (err error) {
	sp, err := spool.Open(r.cfg.Spool)
	if err != nil {
		return spoolErr("open spool", err)
	}
	defer func() {
		if cerr := sp.Close(); cerr != nil && err == nil {
			err = spoolErr("close spool", cerr)
		}
	}()
	r.sum.Layout = sp.Layout()
	r.log.Debugf("event=spool host=%s spool=%s layout=%s", r.cfg.Host, logging.Quote(r.cfg.Spool.Path), sp.Layout())

	first, err := sp.Next()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return spoolErr("read spool", err)
	}
	if r.cfg.DryRun {
		return r.dryRun(sp, first)
	}
	if r.sess == nil {
		if !r.dead && !r.dial(ctx) {
			r.dead = true
		}
		if r.dead {
			r.sum.Unreachable = true
			return r.keepAll(sp, first, sp.Next, "no destination accepted a connection; kept for the next run")
		}
	}

	// The sender reports in the order it takes transactions; the feeder's
	// queue maps each report back to its spool messages.
	f := &feeder{sp: sp, coalesce: !r.cfg.NoCoalesce, pending: first}
	struckNow := false // a message of this session was struck (see below)
	// held are transactions whose MAIL FROM the server refused with a
	// 5xx, not settled yet: a run of them from more than
	// MaxMailRefusals different senders means the server refuses us,
	// not them, and then they are kept instead of failed (and bounced).
	var held []heldReport
	// commit records a transaction's outcome now, or after the remainder
	// of an earlier one (see item) when there is one waiting.
	commit := func(group []*spool.Message, res sender.Result) error {
		if len(f.order) == 0 {
			return r.settleGroup(sp, group, res)
		}
		f.order = append(f.order, &slot{group: group, res: res, ready: true})
		r.progress++ // known, if not recorded yet: worth another session
		return nil
	}
	release := func() error {
		for _, h := range held {
			if err := commit(h.group, h.res); err != nil {
				return err
			}
		}
		held = nil
		return nil
	}
	report := func(_ *sender.Message, res sender.Result) error {
		it := f.queue[0]
		f.queue = f.queue[1:]
		group := it.group
		if it.prior != nil {
			before := it.prior.Rcpts
			res = it.join(res)
			for i, st := range res.Rcpts {
				if st != before[i] {
					r.progress++ // this session settled part of it
					break
				}
			}
		}
		if idx := unsentRcpts(res); idx != nil && r.cfg.Session == nil {
			// The session ended before the recipients the server's
			// limit left out got their own transaction: the next
			// session of this run offers them, and this group's outcome
			// is recorded once they have one.
			s := it.slot
			if s == nil {
				r.progress++ // some of it was delivered
				s = &slot{group: group}
				if err := release(); err != nil {
					return err
				}
				f.order = append(f.order, s)
			}
			f.retry = append(f.retry, &item{group: group, prior: &res, idx: idx, slot: s})
			r.log.Infof("event=remainder host=%s id=%s rcpts=%d reason=%s", r.cfg.Host, logID(group[0].Key), len(idx),
				logging.Quote("the session ended before the recipients over the server's limit were offered; the next session offers them"))
			return nil
		}
		if it.slot != nil {
			it.slot.res, it.slot.ready = res, true
			return r.drain(sp, f)
		}
		if lim := r.cfg.MaxMailRefusals; lim > 0 && res.MailRefused && res.Reply.Code >= 500 {
			held = append(held, heldReport{group, res})
			if distinctSenders(held) > lim {
				return errRefusesUs
			}
			return nil
		}
		if err := release(); err != nil {
			return err
		}
		if res.Unsent && r.cfg.Session == nil && !r.struck[group[0].ID] {
			// The session ended before the server did anything with it:
			// the next session of this run offers it again. The first
			// such message of a session that died without a 421 is the
			// one the server may have choked on: if it ends a second
			// session too, it is kept for the next run, so that it
			// cannot hold back the ones behind it. Those behind it, and
			// everything a 421 turned away (a per-connection limit),
			// are offered again as often as sessions allow.
			if !struckNow && res.Reply.Code != 421 {
				struckNow = true
				if r.struck == nil {
					r.struck = map[string]bool{}
				}
				r.struck[group[0].ID] = true
			}
			f.retry = append(f.retry, it)
			return nil
		}
		return commit(group, res)
	}
	for {
		before := r.progress
		struckNow = false
		serr := r.sess.Send(ctx, f.next, report)
		if errors.Is(serr, errRefusesUs) {
			if err := r.resolve(sp, f); err != nil {
				return spoolErr("flush", err)
			}
			return r.refusedUs(sp, held)
		}
		// A run of refusals that ended without tripping the limit was
		// the server's word on those senders.
		if err := release(); err != nil {
			return spoolErr("flush", err)
		}
		if serr == nil {
			if err := r.resolve(sp, f); err != nil {
				return spoolErr("flush", err)
			}
			return nil
		}
		var se *sender.Error
		if !errors.As(serr, &se) {
			// Anything else came from the spool side (next or settle).
			return spoolErr("flush", serr)
		}
		r.log.Warnf("event=connection-ended host=%s error=%s", r.cfg.Host, logging.Quote(serr.Error()))
		if r.sess != r.cfg.Session {
			if cerr := r.sess.Close(); cerr != nil {
				r.log.Debugf("event=quit host=%s error=%s", r.cfg.Host, logging.Quote(cerr.Error()))
			}
		}
		r.sess = nil
		if len(f.retry) == 0 {
			m, err := f.leftover()
			if err == io.EOF {
				// A session that dies in the RSET or QUIT after the last
				// message leaves nothing behind.
				return nil
			}
			if err != nil {
				return spoolErr("read spool", err)
			}
			f.unread(m)
		}
		// A server that ends sessions after N messages (Exim's
		// smtp_accept_max_per_connection, a 421) or after N recipients
		// gets a new session for the rest, as Exim's and Postfix's own
		// clients do; one that made no progress at all does not.
		if r.cfg.Session == nil && ctx.Err() == nil && r.progress > before && r.conns < r.maxConns() {
			r.log.Infof("event=reconnect host=%s session=%d max_sessions=%d reason=%s", r.cfg.Host, r.conns+1, r.maxConns(), logging.Quote("reconnecting for what is left"))
			if r.dial(ctx) {
				continue
			}
		}
		if err := r.resolve(sp, f); err != nil {
			return spoolErr("flush", err)
		}
		r.dead = true
		r.sum.Unreachable = true
		m, err := f.leftover()
		if err == io.EOF {
			return nil // what was left were remainders, now recorded
		}
		if err != nil {
			return spoolErr("read spool", err)
		}
		return r.keepAll(sp, m, f.leftover, "the connection ended before these were offered; kept for the next run")
	}
}

// resolve records the outcomes that waited for remainders no session
// will carry now: their recipients stay for the next run, the rest of
// their group as the server answered.
func (r *run) resolve(sp spool.Spool, f *feeder) error {
	kept := f.retry[:0]
	for _, it := range f.retry {
		if it.prior == nil {
			kept = append(kept, it)
			continue
		}
		it.slot.res, it.slot.ready = *it.prior, true
	}
	f.retry = kept
	return r.drain(sp, f)
}

// drain records the waiting outcomes that are final, in order.
func (r *run) drain(sp spool.Spool, f *feeder) error {
	for len(f.order) > 0 && f.order[0].ready {
		s := f.order[0]
		f.order = f.order[1:]
		if err := r.settleGroup(sp, s.group, s.res); err != nil {
			return err
		}
	}
	return nil
}

// heldReport is one transaction's outcome held back (see pass).
type heldReport struct {
	group []*spool.Message
	res   sender.Result
}

// errRefusesUs stops a Send whose server refused MAIL FROM for more than
// MaxMailRefusals different senders in a row.
var errRefusesUs = errors.New("the server refuses our MAIL FROM")

// distinctSenders counts the different reverse paths among held.
func distinctSenders(held []heldReport) int {
	seen := map[string]bool{}
	for _, h := range held {
		seen[strings.ToLower(h.group[0].From)] = true
	}
	return len(seen)
}

// settleGroup records and logs the outcome of one transaction, split
// back over the spool messages it carried.
func (r *run) settleGroup(sp spool.Spool, group []*spool.Message, res sender.Result) error {
	r.progress++
	txn := ""
	if len(group) > 1 {
		txn = group[0].Key
	}
	for i, part := range split(group, res) {
		if err := r.settle(sp, group[i], part, txn); err != nil {
			return err
		}
	}
	return nil
}

// refusedUs ends a run whose server turned away MAIL FROM for sender
// after sender: a customer's misconfiguration (a relay restriction, a
// blocklist entry for the provider), not a verdict on each message. The
// refused messages are kept, not failed and bounced; nothing more is
// offered; one line tells the postmaster.
func (r *run) refusedUs(sp spool.Spool, held []heldReport) error {
	n := 0
	for _, h := range held {
		for _, m := range h.group {
			if err := sp.Settle(m, make([]spool.Outcome, len(m.To)), ""); err != nil {
				return spoolErr("keep "+m.ID, err)
			}
			n++
			r.sum.Rcpts.Deferred += len(m.To)
			r.advance(m)
		}
	}
	r.sum.Deferred += n
	r.dead = true
	r.sum.Unreachable = true
	last := held[len(held)-1].res.Reply
	r.log.Errorf("event=refuses-us host=%s status=deferred messages=%d senders=%d reply=%s reason=%s", r.cfg.Host, n, distinctSenders(held),
		logging.Quote(fmt.Sprintf("%d %s", last.Code, last.Text)),
		logging.Quote("the server refused MAIL FROM for every one of these senders: it refuses this relay, not them; all mail is kept, nothing is bounced"))
	return nil
}

// keepAll counts what an unreachable host leaves in the spool, so that the
// summary says how much is waiting. Nothing is rewritten: every recipient
// stays pending.
func (r *run) keepAll(sp spool.Spool, m *spool.Message, next func() (*spool.Message, error), why string) error {
	n, rcpts, bytes := 0, 0, int64(0)
	for {
		if err := sp.Settle(m, make([]spool.Outcome, len(m.To)), ""); err != nil {
			return spoolErr("keep "+m.ID, err)
		}
		n++
		rcpts += len(m.To)
		bytes += m.Size
		r.advance(m)
		var err error
		m, err = next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return spoolErr("read spool", err)
		}
	}
	r.sum.Deferred += n
	r.sum.Rcpts.Deferred += rcpts
	r.log.Warnf("event=kept host=%s status=deferred messages=%d rcpts=%d bytes=%d reason=%s", r.cfg.Host, n, rcpts, bytes, logging.Quote(why))
	return nil
}

func spoolErr(what string, err error) error {
	var le *spool.LayoutError
	if errors.As(err, &le) || errors.Is(err, spool.ErrLocked) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return &ErrSpool{fmt.Errorf("%s: %w", what, err)}
}

func (r *run) dial(ctx context.Context) bool {
	dests := r.cfg.Dests
	if len(dests) == 0 && r.cfg.Resolve != nil {
		var err error
		dests, err = r.cfg.Resolve()
		if err != nil {
			r.log.Warnf("event=no-destination host=%s error=%s", r.cfg.Host, logging.Quote(err.Error()))
			return false
		}
	}
	if h := r.cfg.Sender.Helo; r.conns == 0 && !strings.Contains(strings.Trim(h, "[]"), ".") && !strings.Contains(h, ":") {
		// RFC 5321 4.1.1.1 asks for a fully qualified name; many
		// receivers refuse or score a bare one.
		r.log.Warnf("event=helo-not-fqdn host=%s helo=%s reason=%s", r.cfg.Host, logging.Token(h), logging.Quote("not a fully qualified domain name; set helo in the configuration"))
	}
	for _, d := range dests {
		o := r.cfg.Sender
		o.Addr = d
		if r.log.Tracing() && o.Trace == nil {
			o.Trace = func(dir, line string) {
				r.log.Tracef("event=smtp host=%s server=%s dir=%s line=%s", r.cfg.Host, logging.Token(d), dir, logging.Quote(line))
			}
		}
		s, err := sender.Dial(ctx, o)
		if err != nil {
			r.log.Warnf("event=connect-failed host=%s server=%s error=%s", r.cfg.Host, logging.Token(d), logging.Quote(err.Error()))
			continue
		}
		if terr := s.TLSFailed(); terr != nil {
			r.log.Warnf("event=tls-failed host=%s server=%s tls=none reason=%s", r.cfg.Host, logging.Token(d), logging.Quote("sending in clear text (tls = may): "+terr.Error()))
		}
		r.log.Debugf("event=connect host=%s server=%s tls=%v", r.cfg.Host, logging.Token(d), s.TLS())
		if r.log.Tracing() {
			var ext []string
			for k, v := range s.Extensions() {
				ext = append(ext, strings.TrimSpace(k+" "+v))
			}
			sort.Strings(ext)
			r.log.Tracef("event=smtp host=%s server=%s tls=%v extensions=%s", r.cfg.Host, logging.Token(d), s.TLS(), logging.Quote(strings.Join(ext, ", ")))
		}
		r.conns++
		r.sess = s
		r.remote = d
		if h, _, err := net.SplitHostPort(d); err == nil {
			r.remote = h
		}
		return true
	}
	return false
}

// settle records and logs one spool message's outcome. txn names the
// first message of a coalesced transaction ("" when it had this message
// alone), so that the copies sent together can be found in the log.
func (r *run) settle(sp spool.Spool, m *spool.Message, res sender.Result, txn string) error {
	out := make([]spool.Outcome, len(m.To))
	var sent, failed, kept []string
	for i := range m.To {
		st := sender.Deferred
		if i < len(res.Rcpts) {
			st = res.Rcpts[i]
		}
		switch st {
		case sender.Sent:
			out[i] = spool.Sent
			sent = append(sent, m.To[i])
		case sender.Failed:
			out[i] = spool.Failed
			failed = append(failed, m.To[i])
		default:
			out[i] = spool.Keep
			kept = append(kept, m.To[i])
		}
	}
	reply := replyText(res)
	why := failReason(m, res, out)
	if len(sent) > 0 && r.cfg.ArchiveDir != "" {
		// Before the record: a kill in between sends the message again
		// and archives it twice, never drops it from the archive.
		r.archive(m, sent, reply)
	}
	// Record first, log second: the log line claims what the spool now holds.
	if err := sp.Settle(m, out, why+remoteTag(r.remote, res)); err != nil {
		return fmt.Errorf("settle %s: %w", m.ID, err)
	}
	status := ""
	switch {
	case res.Uncertain:
		status = "uncertain"
	case len(kept) == len(m.To):
		status = "deferred"
	case len(sent) == len(m.To):
		status = "sent"
	case len(failed) == len(m.To):
		status = "failed"
	default:
		status = "partial"
	}
	r.count(status, m, len(sent) > 0, len(kept) > 0)
	r.sum.Rcpts.Sent += len(sent)
	r.sum.Rcpts.Failed += len(failed)
	if status == "uncertain" {
		r.sum.Rcpts.Uncertain += len(kept)
	} else {
		r.sum.Rcpts.Deferred += len(kept)
	}
	defer r.advance(m) // after the line: the live line is drawn below it
	extra := ""
	if status == "partial" {
		extra = fmt.Sprintf(" sent=%s failed=%s deferred=%s", addrs(sent), addrs(failed), addrs(kept))
		if len(kept) > 0 {
			// The final reply is the taken recipients'; the kept ones
			// had their own, or that one.
			extra += " deferred_reply=" + logging.Quote(deferReason(m, res, out))
		}
	}
	if txn != "" {
		extra += " coalesced=" + logID(txn)
	}
	if res.Converted {
		// The server lacks 8BITMIME: what it got was re-encoded.
		extra += " converted=7bit"
	}
	if len(failed) > 0 && why != reply {
		// Recipients refused at RCPT have their own reply; the final
		// reply alone would hide why they failed.
		extra += " failed_reply=" + logging.Quote(why)
	}
	line := fmt.Sprintf("event=message host=%s id=%s%s from=%s to=%s size=%d status=%s%s reply=%s",
		r.cfg.Host, logID(m.Key), msgIDs(m), logAddr(m.From), addrs(m.To), m.Size, status, extra, logging.Quote(reply))
	if status == "sent" {
		r.log.Infof("%s", line)
	} else {
		r.log.Warnf("%s", line)
	}
	return nil
}

func replyText(res sender.Result) string {
	t := res.Reply.Text
	if res.Reply.Code != 0 {
		t = fmt.Sprintf("%d %s", res.Reply.Code, t)
	}
	if res.Uncertain {
		t = "no reply after the final dot, the message may have been delivered; it is kept and will be sent again: " + t
	}
	return t
}

// failReason explains the failed recipients: each one's RCPT reply when it
// was refused there, else the reply that ended the transaction. When they
// differ, each reason names its recipient.
func failReason(m *spool.Message, res sender.Result, out []spool.Outcome) string {
	return reasonFor(m, res, out, spool.Failed, 5)
}

// reasonFor explains the recipients with outcome want: each one's RCPT
// reply when it got one of class (4 or 5) there, else the reply that
// ended the transaction; one reason when they share it, else each
// recipient with its own.
func reasonFor(m *spool.Message, res sender.Result, out []spool.Outcome, want spool.Outcome, class int) string {
	all := replyText(res)
	var per []string
	same := true
	first := ""
	for i, o := range out {
		if o != want {
			continue
		}
		t := all
		if i < len(res.RcptReplies) && res.RcptReplies[i].Code/100 == class {
			rr := res.RcptReplies[i]
			t = fmt.Sprintf("%d %s", rr.Code, rr.Text)
		}
		if len(per) == 0 {
			first = t
		} else if t != first {
			same = false
		}
		per = append(per, "<"+m.To[i]+"> "+t)
	}
	if len(per) == 0 {
		return ""
	}
	if same {
		return first
	}
	return strings.Join(per, "; ")
}

// maxLogRcpts caps the recipients named in one log line; the count of the
// rest is given instead.
const maxLogRcpts = 20

// addrs lists addresses for a log line. An address comes from the spool
// and may hold spaces, quotes or control characters (a quoted local part):
// those are escaped, so that no address can end the field it stands in
// or forge another.
func addrs(list []string) string {
	if len(list) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, a := range list {
		if i == maxLogRcpts {
			fmt.Fprintf(&b, ",+%dmore", len(list)-i)
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(logAddr(a))
	}
	return b.String()
}

// msgIDs are the ids others gave m, for following it into their logs:
// its Message-ID and Exim's id, each when the message has it.
func msgIDs(m *spool.Message) string {
	s := ""
	if m.MessageID != "" {
		s += " message_id=" + logging.Token(m.MessageID)
	}
	if m.EximID != "" {
		s += " exim_id=" + logging.Token(m.EximID)
	}
	return s
}

// allAddrs lists every recipient for a dry run, which is read at a
// terminal: UTF-8 is left as it is, only what could end the field (a
// space, a quote, a control character) is escaped as \xHH.
func allAddrs(list []string) string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = termAddr(a)
	}
	return strings.Join(out, ",")
}

func termAddr(a string) string {
	var b strings.Builder
	b.WriteByte('<')
	for i := 0; i < len(a); i++ {
		c := a[i]
		if c <= ' ' || c == 0x7f || c == '\\' || c == '"' {
			fmt.Fprintf(&b, "\\x%02x", c)
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('>')
	return b.String()
}

func logAddr(a string) string { return "<" + logging.Token(a) + ">" }

// logID makes a message id safe for a log field. An id comes from a spool
// file name, which Exim may build from a local part: a space or a line
// break in it must not end the field or forge a line.
func logID(id string) string { return logging.Token(id) }

func (r *run) dryRun(sp spool.Spool, m *spool.Message) error {
	now := time.Now()
	for {
		if r.cfg.Out != nil {
			// The listing is for the admin at a terminal: every recipient,
			// as stored.
			fmt.Fprintf(r.cfg.Out, "event=would-send host=%s id=%s%s from=%s to=%s size=%d\n", r.cfg.Host, logID(m.Key), msgIDs(m), termAddr(m.From), allAddrs(m.To), m.Size)
		}
		r.dryAge(m, now)
		r.sum.WouldSend++
		r.sum.Bytes += m.Size
		var err error
		m, err = sp.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return spoolErr("read spool", err)
		}
	}
}
