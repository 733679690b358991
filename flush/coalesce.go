package flush

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"

	"etrnflush/sender"
	"etrnflush/spool"
)

// maxGroupRcpts bounds the recipients of one coalesced transaction. RFC
// 5321 4.5.3.1.8 obliges a server to take 100; beyond that a 452 would
// only leave copies behind for the next run.
const maxGroupRcpts = 100

// feeder turns spool messages into sender transactions. Exim with the
// default batch_max = 1 writes one copy of a message per recipient; with
// coalescing on, consecutive copies with the same sender and the same
// content become one transaction with several RCPTs (RFC 5321 4.5.4.1), so
// the body crosses the link once. Each group remembers its spool messages,
// in spool order, so that every recipient's outcome goes back to the copy
// it came from.
type feeder struct {
	sp       spool.Spool
	coalesce bool

	pending    *spool.Message // taken from the spool, not yet offered
	pendingSum []byte         // its digest, when it was computed
	err        error          // what the spool said after the last lookahead (io.EOF included)

	queue []*item // offered transactions awaiting their report, oldest first
	// retry holds what a session ended without touching (Result.Unsent)
	// and the remainders it ended part-way through (see item), in spool
	// order: the next session offers them first.
	retry []*item
	// order holds the outcomes that must wait, because an earlier
	// transaction's remainder went to retry: the spool records outcomes
	// in its own order only.
	order []*slot
}

// item is one transaction's spool messages. A remainder (prior set) is
// the part of one a session ended in the middle of: the recipients the
// server's limit left for a further transaction that never started. The
// recipients at idx (in the group's recipients, in order) go again, and
// their outcome joins prior's; slot holds the group's place in order.
type item struct {
	group []*spool.Message
	prior *sender.Result
	idx   []int
	slot  *slot
}

// slot is a transaction's outcome waiting for its turn to be recorded;
// ready once it is final.
type slot struct {
	group []*spool.Message
	res   sender.Result
	ready bool
}

// join merges the outcome c of a remainder's transaction into the
// outcome of its whole group.
func (it *item) join(c sender.Result) sender.Result {
	p := *it.prior
	r := p
	r.Rcpts = append([]sender.Status(nil), p.Rcpts...)
	r.RcptReplies = append([]sender.Reply(nil), p.RcptReplies...)
	r.RcptUnsent = nil
	r.Unsent, r.MailRefused = false, false
	whole := true
	for j, i := range it.idx {
		if j >= len(c.Rcpts) || i >= len(r.Rcpts) {
			break
		}
		r.Rcpts[i] = c.Rcpts[j]
		if j < len(c.RcptReplies) && i < len(r.RcptReplies) {
			r.RcptReplies[i] = c.RcptReplies[j]
		}
		whole = whole && c.Rcpts[j] == sender.Sent
		if c.Unsent || (c.RcptUnsent != nil && c.RcptUnsent[j]) {
			if r.RcptUnsent == nil {
				r.RcptUnsent = make([]bool, len(r.Rcpts))
			}
			r.RcptUnsent[i] = true
		}
	}
	if !whole {
		r.Reply = c.Reply // what explains the recipients not delivered
	}
	r.Uncertain = r.Uncertain || c.Uncertain
	r.Local = r.Local || c.Local
	r.Converted = r.Converted || c.Converted
	return r
}

// unsentRcpts lists the recipients of res marked RcptUnsent, when some
// of its recipients are not: a remainder worth a new session.
func unsentRcpts(res sender.Result) []int {
	if res.Unsent {
		return nil
	}
	var idx []int
	for i, u := range res.RcptUnsent {
		if u && i < len(res.Rcpts) && res.Rcpts[i] == sender.Deferred {
			idx = append(idx, i)
		}
	}
	return idx
}

// take returns the next spool message not yet offered.
func (f *feeder) take() (*spool.Message, []byte, error) {
	if m := f.pending; m != nil {
		sum := f.pendingSum
		f.pending, f.pendingSum = nil, nil
		return m, sum, nil
	}
	if f.err != nil {
		return nil, nil, f.err
	}
	m, err := f.sp.Next()
	if err != nil {
		f.err = err // never ask a spool again once it said EOF or failed
	}
	return m, nil, err
}

// leftover yields what is left to keep once no session will take more:
// the groups set aside for a retry, then the spool's messages not yet
// offered. Remainders must have been resolved (see run.resolve) first.
func (f *feeder) leftover() (*spool.Message, error) {
	for len(f.retry) > 0 {
		if g := f.retry[0].group; len(g) > 0 {
			f.retry[0].group = g[1:]
			return g[0], nil
		}
		f.retry = f.retry[1:]
	}
	return f.nextSpool()
}

// unread puts back the message leftover returned, for the next session.
func (f *feeder) unread(m *spool.Message) {
	if len(f.retry) > 0 {
		f.retry[0].group = append([]*spool.Message{m}, f.retry[0].group...)
		return
	}
	f.pending, f.pendingSum = m, nil
}

// nextSpool is take without the digest, for keeping what is left.
func (f *feeder) nextSpool() (*spool.Message, error) {
	m, _, err := f.take()
	return m, err
}

// next is the sender's source of transactions.
func (f *feeder) next() (*sender.Message, error) {
	if len(f.retry) > 0 {
		it := f.retry[0]
		f.retry = f.retry[1:]
		return f.offer(it), nil
	}
	head, headSum, err := f.take()
	if err != nil {
		return nil, err
	}
	group := []*spool.Message{head}
	if f.coalesce && len(head.To) > 0 {
		group = f.grow(head, headSum)
	}
	return f.offer(&item{group: group}), nil
}

// offer queues it for its report and makes its transaction.
func (f *feeder) offer(it *item) *sender.Message {
	f.queue = append(f.queue, it)
	head := it.group[0]
	to := head.To
	if len(it.group) > 1 {
		to = make([]string, 0, maxGroupRcpts)
		for _, m := range it.group {
			to = append(to, m.To...)
		}
	}
	if it.prior != nil {
		all := to
		to = make([]string, len(it.idx))
		for j, i := range it.idx {
			to[j] = all[i]
		}
	}
	return &sender.Message{From: head.From, To: to, Size: head.Size, WireSize: head.WireSize, EightBit: head.EightBit, Open: head.Open}
}

// grow adds the following spool messages that are copies of head. The
// first one that is not stays pending (with its digest, if computed) and
// heads the next group; a spool error is kept for the next call, so that
// the group already formed is still sent.
func (f *feeder) grow(head *spool.Message, headSum []byte) []*spool.Message {
	group := []*spool.Message{head}
	n := len(head.To)
	seen := map[string]bool{}
	for _, a := range head.To {
		seen[strings.ToLower(a)] = true
	}
	for n < maxGroupRcpts && f.err == nil {
		m, err := f.sp.Next()
		if err != nil {
			f.err = err
			break
		}
		f.pending = m
		if m.From != head.From || m.Size != head.Size || len(m.To) == 0 || n+len(m.To) > maxGroupRcpts || overlaps(seen, m.To) ||
			needsUTF8(m.To) != needsUTF8(head.To) {
			break
		}
		// A copy that cannot be read is simply not coalesced: the error
		// belongs to the transaction that sends it.
		if headSum == nil {
			if headSum, err = digest(head); err != nil {
				break
			}
		}
		sum, err := digest(m)
		if err != nil {
			break
		}
		if !bytes.Equal(sum, headSum) {
			f.pendingSum = sum
			break
		}
		f.pending = nil
		group = append(group, m)
		n += len(m.To)
		for _, a := range m.To {
			seen[strings.ToLower(a)] = true
		}
	}
	return group
}

// overlaps tells whether a recipient is already in the group: naming it
// twice in one transaction could deliver it twice, or get the second RCPT
// refused for a reason that is not the copy's own.
func overlaps(seen map[string]bool, to []string) bool {
	for _, a := range to {
		if seen[strings.ToLower(a)] {
			return true
		}
	}
	return false
}

// needsUTF8 tells whether an address needs SMTPUTF8. The sender keeps
// back a whole transaction when the server does not offer it, so a copy
// that needs it must not take copies that do not along (the sender is the
// same for all: it needs it for every copy or none).
func needsUTF8(to []string) bool {
	for _, a := range to {
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}

// digest reads a message's content once, streaming. SHA-256 makes equal
// digests mean equal content without holding either copy in memory.
func digest(m *spool.Message) ([]byte, error) {
	rc, err := m.Open()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", m.ID, err)
	}
	h := sha256.New()
	_, err = io.Copy(h, rc)
	if cerr := rc.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", m.ID, err)
	}
	return h.Sum(nil), nil
}

// split hands out a transaction's result to the group's spool messages:
// recipients in the order next concatenated them; the final reply and the
// uncertainty are every copy's.
func split(group []*spool.Message, res sender.Result) []sender.Result {
	if len(group) == 1 {
		return []sender.Result{res}
	}
	out := make([]sender.Result, len(group))
	off := 0
	for i, m := range group {
		out[i] = sender.Result{
			Reply:       res.Reply,
			Rcpts:       part(res.Rcpts, off, len(m.To)),
			RcptReplies: part(res.RcptReplies, off, len(m.To)),
		}
		out[i].Uncertain = res.Uncertain && mayHaveTaken(out[i], len(m.To))
		off += len(m.To)
	}
	return out
}

// mayHaveTaken tells whether the server may have taken a recipient of a
// copy in a transaction whose end went unanswered: one not refused at
// RCPT. A copy whose recipients were all refused there is not uncertain:
// its outcome is known, and it must not be logged as kept when it failed.
func mayHaveTaken(r sender.Result, n int) bool {
	for i := range n {
		if i >= len(r.Rcpts) || i >= len(r.RcptReplies) {
			return true
		}
		if c := r.RcptReplies[i].Code; r.Rcpts[i] == sender.Sent || (r.Rcpts[i] == sender.Deferred && (c == 0 || c/100 == 2)) {
			return true
		}
	}
	return false
}

// part is s[off:off+n], cut short where s is; settle treats a missing
// status as Deferred.
func part[T any](s []T, off, n int) []T {
	if off >= len(s) {
		return nil
	}
	return s[off:min(off+n, len(s))]
}
