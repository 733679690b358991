package flush

import (
	"fmt"
	"io"
	"time"

	"etrnflush/spool"
)

// expire sets aside as failed every message held for longer than MaxAge,
// with a reason that starts with status 4.4.7, so that bounceFailed
// returns it to its sender like any refusal. It is a pass of its own,
// before the delivery pass and before any connection: mail for a host
// that never comes back must expire too. Everything else is settled
// untouched, as keepAll does. A message's age is counted from the date
// of its newest Received: field (the one the MTA that spooled it wrote),
// else from its entry's modification time.
func (r *run) expire() (err error) {
	if r.cfg.MaxAge <= 0 || r.cfg.DryRun {
		return nil
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
		if since, from := arrival(m); now.Sub(since) > r.cfg.MaxAge {
			why = fmt.Sprintf("4.4.7 expired: not delivered to %s within %s; held since %s (%s)",
				r.cfg.Host, ageText(r.cfg.MaxAge), since.UTC().Format(time.RFC1123Z), from)
			for i := range out {
				out[i] = spool.Failed
			}
		}
		if err := sp.Settle(m, out, why); err != nil {
			return spoolErr("expire "+m.ID, err)
		}
		if why != "" {
			r.sum.Failed++
			r.log.Warnf("host=%s id=%s from=%s to=%s size=%d status=expired reason=%s",
				r.cfg.Host, logID(m.ID), logAddr(m.From), addrs(m.To), m.Size, Quote(why))
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
