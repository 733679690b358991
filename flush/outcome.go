package flush

import (
	"etrnflush/sender"
	"etrnflush/spool"
)

// count adds one settled message to the summary, once, under its status:
// "partial" is a bucket of its own, so that the buckets add up to the
// messages settled. A partial message with a recipient kept still leaves
// mail for later (Left).
func (r *run) count(status string, m *spool.Message, anySent, anyKept bool) {
	switch status {
	case "sent":
		r.sum.Sent++
	case "failed":
		r.sum.Failed++
	case "deferred":
		r.sum.Deferred++
	case "uncertain":
		r.sum.Uncertain++
	case "partial":
		r.sum.Partial++
		if anyKept {
			r.sum.PartialLeft++
		}
	}
	if anySent {
		r.sum.Bytes += m.Size
	}
}

// deferReason is the reply that kept the recipients of m the server did
// not take (out == Keep), as failReason is for the refused ones: one reply
// when they share it, else each recipient with its own.
func deferReason(m *spool.Message, res sender.Result, out []spool.Outcome) string {
	return reasonFor(m, res, out, spool.Keep, 4)
}
