package flush

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"etrnflush/bounce"
	"etrnflush/logging"
	"etrnflush/spool"
)

// expire sets aside as failed every message held for longer than MaxAge,
// with a reason that starts with status 4.4.7, so that bounceFailed
// returns it to its sender like any refusal. It is a pass of its own,
// after the delivery pass and whether or not the host answered: mail for
// a host that never comes back must expire too, while an old message the
// host takes now is better delivered than bounced, and the first message
// of a large spool must not wait for a scan of all of it. Everything else
// is settled untouched, as keepAll does. A message's age is counted from the date
// of its newest Received: field (the one the MTA that spooled it wrote),
// else from its entry's modification time.
func (r *run) expire(ctx context.Context) (err error) {
	if (r.cfg.MaxAge <= 0 && r.cfg.WarnAge <= 0) || r.cfg.DryRun {
		return nil
	}
	if r.cfg.WarnAge > 0 {
		// A mark outlives its message by at most this; any message it
		// could still stand for is older than MaxAge and gone.
		keep := 2 * max(r.cfg.MaxAge, r.cfg.WarnAge)
		if err := spool.PruneWarned(r.cfg.Spool.Path, keep); err != nil {
			r.log.Warnf("event=error host=%s error=%s", r.cfg.Host, logging.Quote(err.Error()))
		}
	}
	sp, err := spool.Open(r.cfg.Spool)
	if err != nil {
		return spoolErr("open spool", err)
	}
	defer func() {
		if cerr := sp.Close(); cerr != nil && err == nil {
			err = spoolErr("close spool", cerr)
		}
	}()
	now := time.Now()
	for {
		m, err := sp.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return spoolErr("read spool", err)
		}
		out := make([]spool.Outcome, len(m.To))
		why := ""
		since, from := arrival(m)
		if r.cfg.MaxAge > 0 && now.Sub(since) > r.cfg.MaxAge {
			why = fmt.Sprintf("4.4.7 expired: not delivered to %s within %s; held since %s (%s)",
				r.cfg.Host, ageText(r.cfg.MaxAge), since.UTC().Format(time.RFC1123Z), from)
			for i := range out {
				out[i] = spool.Failed
			}
		} else if r.cfg.WarnAge > 0 && now.Sub(since) > r.cfg.WarnAge {
			r.warn(ctx, m, since)
		}
		if err := sp.Settle(m, out, why); err != nil {
			return spoolErr("expire "+m.ID, err)
		}
		if why != "" {
			// The pass before counted it as kept; it is not any more,
			// and a run that has nothing left must not exit 75.
			switch {
			case r.sum.Deferred > 0:
				r.sum.Deferred--
				r.sum.Failed++
				r.sum.Rcpts.Deferred -= min(r.sum.Rcpts.Deferred, len(m.To))
			case r.sum.Uncertain > 0:
				r.sum.Uncertain--
				r.sum.Failed++
				r.sum.Rcpts.Uncertain -= min(r.sum.Rcpts.Uncertain, len(m.To))
			case r.sum.PartialLeft > 0:
				// Still counted as partial: some recipients took it,
				// the rest are now given up; nothing of it is left.
				r.sum.PartialLeft--
				r.sum.Rcpts.Deferred -= min(r.sum.Rcpts.Deferred, len(m.To))
			default:
				r.sum.Failed++
			}
			r.sum.Rcpts.Failed += len(m.To)
			r.log.Warnf("event=message host=%s id=%s%s from=%s to=%s size=%d status=expired reason=%s",
				r.cfg.Host, logID(m.Key), msgIDs(m), logAddr(m.From), addrs(m.To), m.Size, logging.Quote(why))
		}
	}
}

// arrival is when m arrived here and where that was read from.
func arrival(m *spool.Message) (time.Time, string) {
	if rc, err := m.Open(); err == nil {
		t := receivedDate(rc)
		if cerr := rc.Close(); cerr == nil && !t.IsZero() {
			return t, "Received: date"
		}
	}
	return m.ModTime, "spool entry's modification time"
}

// ageText writes whole days as "5d", other ages as a duration.
func ageText(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// warn sends m's sender one DSN with Action: delayed. The mark that it
// was sent is made after the sendmail command exited 0: a kill in between
// warns twice, a failing command is tried again on the next run. It never
// holds up the flush; trouble is logged.
func (r *run) warn(ctx context.Context, m *spool.Message, since time.Time) {
	if len(r.cfg.Sendmail) == 0 || m.From == "" {
		return // bounce = false, or the null sender: nobody to tell
	}
	key, err := warnKey(m)
	if err == nil {
		var done bool
		if done, err = spool.Warned(r.cfg.Spool.Path, key); err == nil && done {
			return
		}
	}
	if err == nil {
		rep := bounce.Report{ReportingMTA: r.cfg.Sender.Helo, Host: r.cfg.Host, Sender: m.From, Arrival: since, Delayed: true}
		if r.cfg.MaxAge > 0 {
			rep.RetryUntil = since.Add(r.cfg.MaxAge)
		}
		for _, a := range m.To {
			rep.Rcpts = append(rep.Rcpts, bounce.Recipient{Addr: a})
		}
		var dsn bytes.Buffer
		if err = writeFromSpool(&dsn, rep, m); err == nil {
			err = bounce.Send(ctx, r.cfg.Sendmail, m.From, dsn.Bytes())
		}
		if err == nil {
			err = spool.MarkWarned(r.cfg.Spool.Path, key)
		}
	}
	if err != nil {
		r.log.Warnf("event=delay-warning host=%s id=%s from=%s to=%s status=warn_failed reason=%s", r.cfg.Host, logID(m.Key), logAddr(m.From), addrs(m.To), logging.Quote(err.Error()))
		return
	}
	r.log.Infof("event=delay-warning host=%s id=%s from=%s to=%s status=delay_warned", r.cfg.Host, logID(m.Key), logAddr(m.From), addrs(m.To))
}

// warnKey names m for the warned marks: its sender, its recipients and
// its header block, which stay the same while its spool id may not (a
// rewritten entry, a compacted work file).
func warnKey(m *spool.Message) (string, error) {
	rc, err := m.Open()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", m.From, strings.Join(m.To, "\x00"))
	br := bufio.NewReader(io.LimitReader(rc, bounce.MaxHeaders))
	for {
		line, rerr := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" || rerr != nil {
			h.Write([]byte(line))
			break
		}
		h.Write([]byte(line))
	}
	if err := rc.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// writeFromSpool writes the DSN rep for m, reading m's header block.
func writeFromSpool(w io.Writer, rep bounce.Report, m *spool.Message) (err error) {
	rc, err := m.Open()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return bounce.Write(w, rep, rc)
}

// dryAge reports what expire and warn would do with m after a pass that
// left it in the spool: a dry run sends nothing and marks nothing, but
// the admin should see what the next real run gives up or warns about.
func (r *run) dryAge(m *spool.Message, now time.Time) {
	if r.cfg.MaxAge <= 0 && r.cfg.WarnAge <= 0 {
		return
	}
	since, src := arrival(m)
	age := now.Sub(since)
	what := ""
	switch {
	case r.cfg.MaxAge > 0 && age > r.cfg.MaxAge:
		what = "expire"
		r.sum.WouldExpire++
	case r.cfg.WarnAge > 0 && age > r.cfg.WarnAge && len(r.cfg.Sendmail) > 0 && m.From != "":
		key, err := warnKey(m)
		if err == nil {
			var done bool
			if done, err = spool.Warned(r.cfg.Spool.Path, key); done {
				return // warned by an earlier run
			}
		}
		if err != nil {
			r.log.Warnf("event=error host=%s id=%s error=%s", r.cfg.Host, logID(m.Key), logging.Quote(err.Error()))
			return
		}
		what = "warn"
		r.sum.WouldWarn++
	default:
		return
	}
	if r.cfg.Out != nil {
		fmt.Fprintf(r.cfg.Out, "event=would-%s host=%s id=%s from=%s to=%s held_since=%s age_from=%s\n", what, r.cfg.Host, logID(m.Key), termAddr(m.From),
			allAddrs(m.To), since.UTC().Format(time.RFC3339), map[bool]string{true: "received", false: "mtime"}[src == "Received: date"])
	}
}
