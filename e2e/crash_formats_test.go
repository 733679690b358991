//go:build e2e

package e2e

import (
	"testing"
	"time"
)

// TestCrashSIGKILLFormats: TestCrashSIGKILLOutcomes for the mailstore and
// maildir layouts. Kills land right after the 250 to a partly deferred
// transaction (the .env or the Envelope-to: about to be rewritten) and
// right after a 5xx (the failed copy being written), among others; the
// recorder keeps what arrived octet for octet, so a maildir's envelope
// fields sent on would show as changed data.
func TestCrashSIGKILLFormats(t *testing.T) {
	mailstore := &crashFormat{fc: formatCase{name: "mailstore"}, write: writeCrashMailstore}
	maildir := &crashFormat{fc: formatCase{name: "maildir", maildir: true}, write: writeCrashMaildir}
	plans := func() []*killPoint {
		return []*killPoint{
			{kind: killAfterReply, n: 1, partial: true},
			{kind: killAfterRefusal, n: 1},
			{kind: killBeforeReply, n: 1, partial: true},
			{kind: killAfterReply, n: 2, partial: true, delay: 300 * time.Microsecond},
			{kind: killMidBody, n: 3, bytes: 500},
			{kind: killAfterRefusal, n: 2, delay: time.Millisecond},
			{kind: killAfterReply, n: 2, partial: true, delay: 2 * time.Millisecond},
			{kind: killAfterMail, n: 2},
			{kind: killBeforeReply, n: 3, partial: true},
			{kind: killAfterReply, n: 1, partial: true, delay: time.Millisecond},
			{kind: killAfterRefusal, n: 1, delay: 200 * time.Microsecond},
			{kind: killBeforeReply, n: 5},
		}
	}
	acceptAll := func() []*killPoint {
		return []*killPoint{
			{kind: killBeforeReply, n: 2},
			{kind: killAfterMail, n: 4},
			{kind: killMidBody, n: 3, bytes: 100},
			{kind: killAfterReply, n: 5},
			{kind: killAfterReply, n: 1, delay: time.Millisecond},
			{kind: killMidBody, n: 2, bytes: 0},
			{kind: killBeforeReply, n: 6},
			{kind: killAfterReply, n: 3, delay: 500 * time.Microsecond},
		}
	}
	cases := []crashCase{
		{name: "mailstore/partial", format: mailstore, n: 60, policy: markerPolicy, plans: plans(), timers: 3,
			minKills: 10, minPartial: 4, minRefusal: 2},
		{name: "maildir/partial", format: maildir, n: 60, policy: markerPolicy, plans: plans(), timers: 3,
			minKills: 10, minPartial: 4, minRefusal: 2},
		{name: "mailstore/accept-all", format: mailstore, n: 50, plans: acceptAll(), timers: 2, minKills: 7},
		{name: "maildir/accept-all", format: maildir, n: 50, plans: acceptAll(), timers: 2, minKills: 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runCrashCase(t, tc) })
	}
}
