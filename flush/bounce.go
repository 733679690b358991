package flush

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/textproto"
	"os"
	"strings"
	"time"

	"etrnflush/bounce"
	"etrnflush/bsmtp"
	"etrnflush/logging"
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
		r.log.Errorf("event=bounce host=%s status=bounce_failed reason=%s", r.cfg.Host, logging.Quote(err.Error()))
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
	unlock, err := c.Lock()
	if errors.Is(err, spool.ErrCopyBusy) || errors.Is(err, os.ErrNotExist) {
		// The bounce command has it (or just removed it): one DSN is
		// enough.
		r.log.Debugf("event=bounce host=%s id=%s status=not_bounced reason=%s", r.cfg.Host, logID(c.Stem), logging.Quote("not bounced here: "+err.Error()))
		return
	}
	if err != nil {
		r.sum.BounceFailed++
		r.log.Warnf("event=bounce host=%s id=%s status=bounce_failed reason=%s", r.cfg.Host, logID(c.Stem), logging.Quote(err.Error()))
		return
	}
	defer func() {
		if err := unlock(); err != nil {
			r.log.Debugf("event=error host=%s id=%s error=%s", r.cfg.Host, logID(c.Stem), logging.Quote("unlock: "+err.Error()))
		}
	}()
	var env bsmtp.Envelope
	var arrival time.Time
	err = c.Read(func(e bsmtp.Envelope, content io.Reader) error {
		env = e
		arrival = receivedDate(content)
		return nil
	})
	if err == nil && env.From == "" {
		// RFC 5321 section 6.1: a message from the null sender is
		// never bounced; its copy stays for the admin, as without
		// bounces.
		r.log.Debugf("event=bounce host=%s id=%s from=<> status=not_bounced reason=%s", r.cfg.Host, logID(c.Stem), logging.Quote("null sender"))
		return
	}
	if err == nil {
		rep := failedReport(r.cfg.Sender.Helo, r.cfg.Host, c.Why, env, arrival)
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
				r.log.Errorf("event=error host=%s id=%s error=%s", r.cfg.Host, logID(c.Stem), logging.Quote(rerr.Error()))
			}
			r.sum.Bounced++
			r.log.Infof("event=bounce host=%s id=%s from=%s to=%s status=bounced", r.cfg.Host, logID(c.Stem), logAddr(env.From), addrs(env.To))
			return
		}
	}
	r.sum.BounceFailed++
	r.log.Warnf("event=bounce host=%s id=%s from=%s to=%s status=bounce_failed reason=%s",
		r.cfg.Host, logID(c.Stem), logAddr(env.From), addrs(env.To), logging.Quote(err.Error()))
}

// failedReport is the DSN report for a failed copy whose .why line is
// why (see failReason and remoteTag).
func failedReport(mta, host, why string, env bsmtp.Envelope, arrival time.Time) bounce.Report {
	why, remote := cutRemoteTag(why)
	return bounce.Report{
		ReportingMTA: mta,
		Host:         host,
		RemoteMTA:    remote,
		Sender:       env.From,
		Arrival:      arrival,
		Rcpts:        rcptReasons(env.To, why),
	}
}

// BounceConfig is what the bounce command needs to return a copy.
type BounceConfig struct {
	Host         string
	ReportingMTA string   // the HELO name
	Sendmail     []string // the command that takes the DSN
}

// ErrNotBounceable means a copy cannot be returned to its sender: it is
// from the null sender, or not one complete BSMTP message. Nothing was
// changed.
var ErrNotBounceable = errors.New("cannot be returned to its sender")

// ErrSendmail means the sendmail command did not take the DSN; the copy
// stays.
var ErrSendmail = errors.New("the sendmail command did not take the DSN; the copy stays")

// BounceCopy returns the copy c of a failed folder (or, with quarantined,
// of a quarantine folder) to its envelope sender as one DSN, as the
// flush does for refused mail, and removes it once the sendmail command
// exited 0. It holds the copy's lock meanwhile, so that a flush of the
// host bouncing its failed folder at the same moment leaves it alone. A
// failed copy's recipients are reported with the server's replies; a
// quarantined one's with status 5.0.0 and the reason it was set aside.
func BounceCopy(ctx context.Context, bc BounceConfig, c spool.Copy, quarantined bool) (env bsmtp.Envelope, err error) {
	unlock, err := spool.LockCopy(c)
	if errors.Is(err, spool.ErrNotOneMessage) {
		return env, fmt.Errorf("%w: %w", ErrNotBounceable, err)
	}
	if err != nil {
		return env, err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	var arrival time.Time
	err = spool.ReadCopy(c, func(e bsmtp.Envelope, content io.Reader) error {
		env = e
		arrival = receivedDate(content)
		return nil
	})
	if errors.Is(err, spool.ErrNotOneMessage) {
		return env, fmt.Errorf("%w: %w", ErrNotBounceable, err)
	}
	if err != nil {
		return env, err
	}
	if env.From == "" {
		// RFC 5321 section 6.1.
		return env, fmt.Errorf("%w: it is from the null sender", ErrNotBounceable)
	}
	rep := failedReport(bc.ReportingMTA, bc.Host, c.Reason, env, arrival)
	if quarantined {
		rep.RemoteMTA = ""
		for i := range rep.Rcpts {
			rep.Rcpts[i].Reply = "5.0.0 not delivered: the copy held for " + bc.Host + " was damaged and set aside (" + c.Reason + ")"
		}
	}
	var dsn bytes.Buffer
	err = spool.ReadCopy(c, func(_ bsmtp.Envelope, content io.Reader) error {
		return bounce.Write(&dsn, rep, content)
	})
	if err != nil {
		return env, err
	}
	if err := bounce.Send(ctx, bc.Sendmail, env.From, dsn.Bytes()); err != nil {
		return env, fmt.Errorf("%w: %w", ErrSendmail, err)
	}
	if err := spool.Delete(c); err != nil {
		return env, fmt.Errorf("the DSN was handed over, but the copy could not be removed (remove it by hand, or the next flush with bounce on returns it again): %w", err)
	}
	return env, nil
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
