package sender

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestPipelinedInvariants throws random faults at random batches, in both
// pipelined modes, and checks what must hold whatever happens: a recipient
// reported Sent was taken by the server, one reported Failed was not, and
// one the server took is reported Sent or, if the session ended before its
// 250 was read, Uncertain. Nothing is reported twice or left unreported,
// and Uncertain only comes with a session that ended.
// invariantSeeds is how many random batches each mode gets.
var invariantSeeds = uint64(25)

func TestPipelinedInvariants(t *testing.T) {
	refusals := []string{"450 4.2.2 full", "550 5.1.1 unknown", "451 4.3.0 later", "554 5.6.0 no"}
	enders := []string{"drop", "421", "hang"}
	for _, m := range pmodes {
		for seed := range invariantSeeds {
			t.Run(fmt.Sprintf("%s/%d", m.name, seed), func(t *testing.T) {
				rnd := rand.New(rand.NewPCG(seed, 7))
				faults := map[string]string{}
				var msgs []*Message
				n := 3 + rnd.IntN(8)
				ended := false
				for i := range n {
					from := fmt.Sprintf("m%d@x", i)
					var to []string
					for j := range 1 + rnd.IntN(3) {
						to = append(to, fmt.Sprintf("r%d-%d@y", i, j))
					}
					var mm *Message
					if rnd.IntN(4) == 0 {
						mm = bigMsg(int64(100<<10 + rnd.IntN(200<<10)))
						mm.From, mm.To = from, to
					} else {
						mm = msg(from, strings.Repeat("line\n", rnd.IntN(50)), to...)
					}
					msgs = append(msgs, mm)
					switch k := rnd.IntN(10); {
					case k == 0:
						faults["MAIL "+from] = refusals[rnd.IntN(len(refusals))]
					case k <= 2:
						for _, r := range to {
							if rnd.IntN(2) == 0 {
								faults["RCPT "+r] = refusals[rnd.IntN(len(refusals))]
							}
						}
					case k == 3:
						faults["DOT "+from] = refusals[rnd.IntN(len(refusals))]
					case k == 4 && m.name == "pipelining":
						faults["DATA "+from] = refusals[rnd.IntN(len(refusals))]
					case k == 4:
						faults["CHUNK "+from] = refusals[rnd.IntN(len(refusals))]
					case k == 5 && !ended:
						ended = true
						stage := []string{"MAIL " + from, "RCPT " + to[0], "DOT " + from}[rnd.IntN(3)]
						faults[stage] = enders[rnd.IntN(len(enders))]
					}
				}
				sp := &strictPeer{exts: m.exts, faults: faults, split: rnd.IntN(4) == 0, multi: rnd.IntN(3) == 0}
				addr, release := runStrict(t, sp)
				o := fastOptions(addr)
				o.MaxInflight = []int{0, 1, 2, 5}[rnd.IntN(4)]
				s, err := Dial(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				var res []Result
				var got []*Message
				i := 0
				serr := s.Send(context.Background(), func() (*Message, error) {
					if i == len(msgs) {
						return nil, io.EOF
					}
					i++
					return msgs[i-1], nil
				}, func(m *Message, r Result) error {
					got = append(got, m)
					res = append(res, r)
					return nil
				})
				release()
				if err := s.Close(); err != nil {
					t.Logf("Close: %v", err)
				}
				if len(res) != i {
					t.Fatalf("took %d, reported %d", i, len(res))
				}
				if serr == nil && i != len(msgs) {
					t.Errorf("Send ended without error after %d of %d", i, len(msgs))
				}
				took := map[string][]string{}
				for _, a := range sp.accepted() {
					from, tos, _ := strings.Cut(a, ">")
					if _, dup := took[from]; dup {
						t.Errorf("%s taken twice", from)
					}
					took[from] = strings.Split(tos, ",")
				}
				for k, r := range res {
					mm := got[k]
					if mm != msgs[k] {
						t.Fatalf("report %d is for the wrong message", k)
					}
					if r.Uncertain && serr == nil {
						t.Errorf("%s uncertain in a session that did not end", mm.From)
					}
					for j, to := range mm.To {
						in := slices.Contains(took[mm.From], to)
						switch st := r.Rcpts[j]; {
						case st == Sent && !in:
							t.Errorf("%s <%s> reported sent, not taken (%+v)", mm.From, to, r.Reply)
						case st == Failed && in:
							t.Errorf("%s <%s> reported failed, but taken", mm.From, to)
						case in && st != Sent && !r.Uncertain:
							t.Errorf("%s <%s> taken, reported %v and not uncertain (%+v)", mm.From, to, st, r.Reply)
						}
					}
				}
				if t.Failed() {
					t.Logf("faults %v, window %d, err %v", faults, o.MaxInflight, serr)
				}
			})
		}
	}
}
