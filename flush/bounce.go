package flush

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/mail"
	"net/textproto"
	"strings"
	"time"

	"etrnflush/bounce"
	"etrnflush/bsmtp"
	"etrnflush/sender"
	"etrnflush/spool"
)

// bounceFailed returns each complete copy in the host's failed folder to
// its sender as a DSN and removes the copies the sendmail command took.
// It runs under the host lock after each pass, so that refusals of this
// run are reported in this run, and copies whose DSN could not be handed
// over on an earlier run are tried again. A copy stays until the command
// exited 0: a kill between that and the removal sends that one DSN twice,
// never none.
func (r *run) bounceFailed(ctx context.Context) {
	if len(r.cfg.Sendmail) == 0 {
		return
	}
	copies, err := spool.ListFailed(r.cfg.Spool.Path)
	if err != nil {
		r.sum.BounceFailed++
		r.log.Errorf("event=bounce host=%s status=bounce_failed reason=%s", r.cfg.Host, Quote(err.Error()))
		return
	}
	for _, c := range copies {
		if ctx.Err() != nil {
			return
		}
		r.bounceOne(ctx, c)
	}
}

func (r *run) bounceOne(ctx context.Context, c spool.FailedCopy) {
	var env bsmtp.Envelope
	var arrival time.Time
	err := c.Read(func(e bsmtp.Envelope, content io.Reader) error {
		env = e
		arrival = receivedDate(content)
		return nil
	})
	if err == nil && env.From == "" {
		// RFC 5321 section 6.1: a message from the null sender is
		// never bounced; its copy stays for the admin, as without
		// bounces.
		r.log.Debugf("event=bounce host=%s id=%s from=<> status=not_bounced reason=%s", r.cfg.Host, logID(c.Stem), Quote("null sender"))
		return
	}
	if err == nil {
		why, remote := cutRemoteTag(c.Why)
		rep := bounce.Report{
			ReportingMTA: r.cfg.Sender.Helo,
			Host:         r.cfg.Host,
			RemoteMTA:    remote,
			Sender:       env.From,
			Arrival:      arrival,
			Rcpts:        rcptReasons(env.To, why),
		}
		var dsn bytes.Buffer
		err = c.Read(func(_ bsmtp.Envelope, content io.Reader) error {
			return bounce.Write(&dsn, rep, content)
		})
		if err == nil {
			err = bounce.Send(ctx, r.cfg.Sendmail, env.From, dsn.Bytes())
		}
		if err == nil {
			if rerr := c.Remove(); rerr != nil {
				// The DSN is out; the copy will be bounced once more.
				r.log.Errorf("event=error host=%s id=%s error=%s", r.cfg.Host, logID(c.Stem), Quote(rerr.Error()))
			}
			r.sum.Bounced++
			r.log.Infof("event=bounce host=%s id=%s from=%s to=%s status=bounced", r.cfg.Host, logID(c.Stem), logAddr(env.From), addrs(env.To))
			return
		}
	}
	r.sum.BounceFailed++
	r.log.Warnf("event=bounce host=%s id=%s from=%s to=%s status=bounce_failed reason=%s",
		r.cfg.Host, logID(c.Stem), logAddr(env.From), addrs(env.To), Quote(err.Error()))
}

// rcptReasons gives each failed recipient its reply from the .why line
// that failReason wrote: one reply for all, or "<a> reply; <b> reply"
// in the order of the recipients when their replies differ.
func rcptReasons(to []string, why string) []bounce.Recipient {
	out := make([]bounce.Recipient, len(to))
	per := len(to) > 0 && strings.HasPrefix(why, "<"+to[0]+"> ")
	rest := why
	for i, a := range to {
		out[i] = bounce.Recipient{Addr: a, Reply: why}
		if !per {
			continue
		}
		rest = strings.TrimPrefix(rest, "<"+a+"> ")
		end := len(rest)
		if i+1 < len(to) {
			if j := strings.Index(rest, "; <"+to[i+1]+"> "); j >= 0 {
				end = j
			}
		}
		out[i].Reply = rest[:end]
		rest = strings.TrimPrefix(rest[end:], "; ")
	}
	return out
}

// receivedDate is the date of the first (newest) Received: field of
// content, the one the MTA that spooled the message wrote: when the
// message arrived here. Zero when there is none or it does not parse.
func receivedDate(content io.Reader) time.Time {
	h, err := textproto.NewReader(bufio.NewReader(io.LimitReader(content, bounce.MaxHeaders))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return time.Time{}
	}
	recv := h.Get("Received")
	i := strings.LastIndexByte(recv, ';')
	if i < 0 {
		return time.Time{}
	}
	t, err := mail.ParseDate(strings.TrimSpace(recv[i+1:]))
	if err != nil {
		return time.Time{}
	}
	return t
}

// remoteTagStart begins the note at the end of a .why line naming the
// server that gave the replies in it, for the DSN's Remote-MTA.
const remoteTagStart = " [remote-mta: "

// remoteTag is that note for the failed recipients of res, "" when the
// refusal was local (too big for SIZE, no SMTPUTF8) or nothing failed.
func remoteTag(remote string, res sender.Result) string {
	if remote == "" || res.Local || strings.ContainsAny(remote, " []") {
		return ""
	}
	for _, st := range res.Rcpts {
		if st == sender.Failed {
			return remoteTagStart + remote + "]"
		}
	}
	return ""
}

// cutRemoteTag splits a .why line into the replies and the server named
// by remoteTag ("" when none).
func cutRemoteTag(why string) (string, string) {
	i := strings.LastIndex(why, remoteTagStart)
	if i < 0 || !strings.HasSuffix(why, "]") {
		return why, ""
	}
	remote := why[i+len(remoteTagStart) : len(why)-1]
	if remote == "" || strings.ContainsAny(remote, " []") {
		return why, ""
	}
	return why[:i], remote
}
