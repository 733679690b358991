package sender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pmode names the two pipelined modes and the extensions that select them.
var pmodes = []struct {
	name string
	exts []string
}{
	{"chunking", []string{"PIPELINING", "CHUNKING", "8BITMIME"}},
	{"pipelining", []string{"PIPELINING", "8BITMIME"}},
}

// pwant is one message's expected outcome: a letter per recipient (s, f,
// d), "?" when Uncertain, and Result.Reply.Code.
type pwant struct {
	st   string
	code int
}

func checkResults(t *testing.T, res []Result, want []pwant) {
	t.Helper()
	if len(res) != len(want) {
		t.Fatalf("%d results, want %d", len(res), len(want))
	}
	for i, w := range want {
		if st := statuses(res[i]); st != w.st || res[i].Reply.Code != w.code {
			t.Errorf("msg %d: %s %+v, want %s %d", i, st, res[i].Reply, w.st, w.code)
		}
		if res[i].Reply.Text == "" {
			t.Errorf("msg %d: no reason in Result.Reply", i)
		}
	}
}

// everyStage is a stream of messages where each transaction fails at a
// different step, and two that go through.
func everyStage() ([]*Message, map[string]string, []pwant, []string) {
	msgs := []*Message{
		msg("a@x", "a\n", "ok1@y"),
		msg("b@x", "b\n", "ok1@y", "ok2@y"),
		msg("c@x", "c\n", "gone@y", "ok3@y", "full@y"),
		msg("d@x", "d\n", "gone@y", "nope@y"),
		msg("e@x", "e\n", "ok4@y"),
		msg("f@x", "f\n", "ok5@y"),
		msg("g@x", "g\n", "ok6@y", "ok7@y"),
	}
	faults := map[string]string{
		"MAIL a@x":    "451 4.3.0 later",
		"MAIL b@x":    "550 5.7.1 not from you",
		"RCPT gone@y": "550 5.1.1 unknown",
		"RCPT full@y": "450 4.2.2 full",
		"RCPT nope@y": "551 5.1.6 moved",
		"DOT e@x":     "554 5.6.0 spam",
		"DOT f@x":     "451 4.3.1 disk",
	}
	want := []pwant{{"d", 451}, {"ff", 550}, {"fsd", 250}, {"ff", 551}, {"f", 554}, {"d", 451}, {"ss", 250}}
	got := []string{"c@x>ok3@y", "g@x>ok6@y,ok7@y"}
	return msgs, faults, want, got
}

// TestPipelinedEveryStage runs one stream in which every step of a
// transaction fails once, in both pipelined modes, with plain, split and
// multi-line replies and with a server that answers slowly. The strict
// peer answers a MAIL inside an open transaction with 503, so a missing
// RSET would show as a wrong outcome.
func TestPipelinedEveryStage(t *testing.T) {
	variants := []struct {
		name  string
		tune  func(*strictPeer)
		opt   func(*Options)
		check func(t *testing.T, s *Session)
	}{
		{name: "plain"},
		{name: "split replies", tune: func(s *strictPeer) { s.split = true }},
		{name: "multi-line replies", tune: func(s *strictPeer) { s.multi = true }},
		{
			// Each reply comes 80 ms after the previous: under the 300 ms
			// Timeout, which counts per reply, not per group.
			name: "slow replies", tune: func(s *strictPeer) { s.delay = 80 * time.Millisecond },
		},
		{name: "window of one", opt: func(o *Options) { o.MaxInflight = 1 }},
	}
	for _, m := range pmodes {
		for _, v := range variants {
			t.Run(m.name+"/"+v.name, func(t *testing.T) {
				msgs, faults, want, got := everyStage()
				sp := &strictPeer{exts: m.exts, faults: faults}
				if v.tune != nil {
					v.tune(sp)
				}
				addr, _ := runStrict(t, sp)
				o := fastOptions(addr)
				if v.opt != nil {
					v.opt(&o)
				}
				s, err := Dial(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				res, err := sendAll(t, s, msgs)
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				checkResults(t, res, want)
				if rr := res[2].RcptReplies; rr[0].Code != 550 || rr[1].Code != 250 || rr[2].Code != 450 {
					t.Errorf("msg 2 RCPT replies %+v", rr)
				}
				if rr := res[1].RcptReplies; rr[0].Code != 0 || rr[1].Code != 0 {
					t.Errorf("msg 1 (MAIL refused) RCPT replies %+v, want none", rr)
				}
				if g := sp.accepted(); !reflect.DeepEqual(g, got) {
					t.Errorf("peer took %q, want %q", g, got)
				}
				cmds := strings.Join(sp.commands(), "\n")
				if m.name == "chunking" && (strings.Contains(cmds, "\nDATA") || !strings.Contains(cmds, "BDAT 3 LAST") || strings.Contains(cmds, "BDAT 0")) {
					t.Errorf("chunking session used DATA or no BDAT:\n%s", cmds)
				}
				if m.name == "pipelining" && strings.Contains(cmds, "BDAT") {
					t.Errorf("BDAT without CHUNKING:\n%s", cmds)
				}
			})
		}
	}
}

// TestPipelinedDataRefusals covers what only DATA has: a refused DATA
// (RSET, next message fine) and a 354 despite no valid recipient, which
// RFC 2920 section 3.1 says to end with a lone dot.
func TestPipelinedDataRefusals(t *testing.T) {
	msgs := []*Message{
		msg("a@x", "a\n", "ok1@y", "ok2@y"),
		msg("b@x", "b\n", "gone@y"),
		msg("c@x", "c\n", "ok3@y"),
	}
	sp := &strictPeer{exts: []string{"PIPELINING"}, faults: map[string]string{
		"DATA a@x":    "554 5.3.0 no DATA for you",
		"RCPT gone@y": "550 5.1.1 unknown",
		"DATA b@x":    "354",
	}}
	addr, _ := runStrict(t, sp)
	s, err := Dial(context.Background(), fastOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sendAll(t, s, msgs)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	checkResults(t, res, []pwant{{"ff", 554}, {"f", 550}, {"s", 250}})
	if g := sp.accepted(); !reflect.DeepEqual(g, []string{"c@x>ok3@y"}) {
		t.Errorf("peer took %q", g)
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.data) != 1 || string(sp.data[0]) != "c\r\n" {
		t.Errorf("content taken %q", sp.data)
	}
	cmds := strings.Join(sp.cmds, "\n")
	if !strings.Contains(cmds, "DATA\nRSET\nMAIL FROM:<b@x>") {
		t.Errorf("no RSET after the refused DATA:\n%s", cmds)
	}
}

// TestChunkFailure: a chunk that is not the last is refused. No further
// chunk may follow once the refusal is read (RFC 3030), the transaction is
// reset and the next message goes through.
func TestChunkFailure(t *testing.T) {
	for _, c := range []struct {
		reply string
		want  pwant
	}{
		{"452 4.3.1 insufficient storage", pwant{"dd", 452}},
		{"554 5.3.4 too big for me", pwant{"ff", 554}},
	} {
		t.Run(c.reply[:3], func(t *testing.T) {
			// Larger than the byte window: the refusal is read before
			// the end could be sent.
			big := bigMsg(8 << 20)
			big.To = []string{"r1@y", "r2@y"}
			sp := &strictPeer{faults: map[string]string{"CHUNK a@x": c.reply}}
			addr, _ := runStrict(t, sp)
			s, err := Dial(context.Background(), fastOptions(addr))
			if err != nil {
				t.Fatal(err)
			}
			res, err := sendAll(t, s, []*Message{big, msg("b@x", "b\n", "r@y")})
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			checkResults(t, res, []pwant{c.want, {"s", 250}})
			if g := sp.accepted(); !reflect.DeepEqual(g, []string{"b@x>r@y"}) {
				t.Errorf("peer took %q", g)
			}
			// Only b's content was ended; a's chunks stopped at the refusal.
			if cmds := strings.Join(sp.commands(), "\n"); strings.Count(cmds, "LAST") != 1 || !strings.Contains(cmds, "BDAT 3 LAST") {
				t.Errorf("commands:\n%s", trunc(cmds))
			}
		})
	}
}

// TestPipelinedSessionEnds: a 421, a dropped connection or a timeout at
// each step ends the batch. Every message without a final 2xx is
// Deferred; those whose dot or BDAT LAST left unanswered are Uncertain,
// except after a 421, which says nothing after it was processed.
func TestPipelinedSessionEnds(t *testing.T) {
	three := func() []*Message {
		return []*Message{msg("a@x", "a\n", "r1@y"), msg("b@x", "b\n", "r2@y", "r3@y"), msg("c@x", "c\n", "r4@y")}
	}
	cases := []struct {
		name   string
		msgs   []*Message
		faults map[string]string
		want   map[string][]pwant // by mode
		op     map[string]string
		code   int
		// need is how many results must be there; the rest, if the
		// client took them before the end, must match too. 0: all.
		need int
	}{
		{
			name: "421 at MAIL", msgs: three(), faults: map[string]string{"MAIL b@x": "421"},
			want: map[string][]pwant{"chunking": {{"s", 250}, {"dd", 421}, {"d", 421}}, "pipelining": {{"s", 250}, {"dd", 421}}},
			op:   map[string]string{"chunking": "mail", "pipelining": "mail"}, code: 421, need: 2,
		},
		{
			name: "421 at RCPT", msgs: three(), faults: map[string]string{"RCPT r3@y": "421"},
			want: map[string][]pwant{"chunking": {{"s", 250}, {"dd", 421}, {"d", 421}}, "pipelining": {{"s", 250}, {"dd", 421}}},
			op:   map[string]string{"chunking": "rcpt", "pipelining": "rcpt"}, code: 421, need: 2,
		},
		{
			name: "421 after the content", msgs: three(), faults: map[string]string{"DOT b@x": "421"},
			want: map[string][]pwant{"chunking": {{"s", 250}, {"dd", 421}, {"d", 421}}, "pipelining": {{"s", 250}, {"dd", 421}, {"d", 421}}},
			op:   map[string]string{"chunking": "bdat", "pipelining": "dot"}, code: 421, need: 2,
		},
		{
			name: "drop at MAIL", msgs: three()[:2], faults: map[string]string{"MAIL b@x": "drop"},
			want: map[string][]pwant{"chunking": {{"s", 250}, {"dd?", 0}}, "pipelining": {{"s", 250}, {"dd", 0}}},
			op:   map[string]string{"chunking": "mail", "pipelining": "mail"},
		},
		{
			name: "drop at RCPT", msgs: three()[:2], faults: map[string]string{"RCPT r3@y": "drop"},
			want: map[string][]pwant{"chunking": {{"s", 250}, {"dd?", 0}}, "pipelining": {{"s", 250}, {"dd", 0}}},
			op:   map[string]string{"chunking": "rcpt", "pipelining": "rcpt"},
		},
		{
			name: "drop at DATA", msgs: three()[:2], faults: map[string]string{"DATA b@x": "drop"},
			want: map[string][]pwant{"pipelining": {{"s", 250}, {"dd", 0}}},
			op:   map[string]string{"pipelining": "data"},
		},
		{
			name: "drop after the content", msgs: three()[:2], faults: map[string]string{"DOT b@x": "drop"},
			want: map[string][]pwant{"chunking": {{"s", 250}, {"dd?", 0}}, "pipelining": {{"s", 250}, {"dd?", 0}}},
			op:   map[string]string{"chunking": "bdat", "pipelining": "dot"},
		},
		{
			name: "timeout at MAIL", msgs: three()[:1], faults: map[string]string{"MAIL a@x": "hang"},
			// With CHUNKING the LAST chunk left behind MAIL: a server that
			// batches replies may have taken it.
			want: map[string][]pwant{"chunking": {{"d?", 0}}, "pipelining": {{"d", 0}}},
			op:   map[string]string{"chunking": "mail", "pipelining": "mail"},
		},
		{
			name: "timeout at RCPT", msgs: three()[1:2], faults: map[string]string{"RCPT r3@y": "hang"},
			want: map[string][]pwant{"chunking": {{"dd?", 0}}, "pipelining": {{"dd", 0}}},
			op:   map[string]string{"chunking": "rcpt", "pipelining": "rcpt"},
		},
		{
			name: "timeout at DATA", msgs: three()[:1], faults: map[string]string{"DATA a@x": "hang"},
			want: map[string][]pwant{"pipelining": {{"d", 0}}},
			op:   map[string]string{"pipelining": "data"},
		},
		{
			name: "timeout after the content", msgs: three()[:1], faults: map[string]string{"DOT a@x": "hang"},
			want: map[string][]pwant{"chunking": {{"d?", 0}}, "pipelining": {{"d?", 0}}},
			op:   map[string]string{"chunking": "bdat", "pipelining": "dot"},
		},
	}
	for _, m := range pmodes {
		for _, c := range cases {
			want, ok := c.want[m.name]
			if !ok {
				continue
			}
			t.Run(m.name+"/"+c.name, func(t *testing.T) {
				sp := &strictPeer{exts: m.exts, faults: c.faults}
				addr, release := runStrict(t, sp)
				s, err := Dial(context.Background(), fastOptions(addr))
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				res, err := sendAll(t, s, c.msgs)
				if el := time.Since(start); el > 3*time.Second {
					t.Errorf("Send took %v", el)
				}
				release()
				var e *Error
				if !errors.As(err, &e) || !e.Temporary {
					t.Fatalf("Send err %T %v, want a temporary *Error", err, err)
				}
				if e.Op != c.op[m.name] || e.Reply.Code != c.code {
					t.Errorf("error op=%s code=%d (%v), want op=%s code=%d", e.Op, e.Reply.Code, e, c.op[m.name], c.code)
				}
				if c.need > 0 && len(res) >= c.need && len(res) < len(want) {
					want = want[:len(res)]
				}
				checkResults(t, res, want)
				if err := s.Send(context.Background(), func() (*Message, error) {
					t.Error("next called on a dead session")
					return nil, io.EOF
				}, nil); err == nil {
					t.Error("Send on a dead session succeeded")
				}
				if err := s.Close(); err != nil {
					t.Logf("Close: %v", err)
				}
			})
		}
	}
}

// TestStreamEnds holds every reply until the client has written three
// messages and waits, then ends the session after the first few replies
// (a message gets four: MAIL, RCPT, its data chunk and BDAT 0 LAST; the
// next ones one more, for the RSET before them): each BDAT LAST that left
// without an answer makes its message Uncertain; the answered one is Sent.
func TestStreamEnds(t *testing.T) {
	for _, c := range []struct {
		name    string
		then    string
		replies int
		want    []pwant
	}{
		{"drop with no reply", "drop", 0, []pwant{{"d?", 0}, {"dd?", 0}, {"d?", 0}}},
		{"drop after the first message's replies", "drop", 4, []pwant{{"s", 250}, {"dd?", 0}, {"d?", 0}}},
		{"timeout after the first message's replies", "hang", 4, []pwant{{"s", 250}, {"dd?", 0}, {"d?", 0}}},
		{"drop in the second message's RCPT replies", "drop", 7, []pwant{{"s", 250}, {"dd?", 0}, {"d?", 0}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sp := &strictPeer{hold: 3, holdThen: c.then, holdReplies: c.replies}
			addr, release := runStrict(t, sp)
			o := testOptions(addr)
			// Above the peer's one second of quiet before it answers.
			o.Timeout, o.DataTimeout = 3*time.Second, 3*time.Second
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			res, err := sendAll(t, s, []*Message{msg("a@x", "a\n", "r1@y"), msg("b@x", "b\n", "r2@y", "r3@y"), msg("c@x", "c\n", "r4@y")})
			release()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Send err %v, want *Error", err)
			}
			checkResults(t, res, c.want)
			if err := s.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
		})
	}
}

// TestWindow: with replies held back, the client puts exactly MaxInflight
// messages on the wire and then waits; with one large message, it stops
// at the byte bound. Both then finish once replies flow.
func TestWindow(t *testing.T) {
	for _, w := range []int{1, 4, 32} {
		t.Run("messages "+strconv.Itoa(w), func(t *testing.T) {
			sp := &strictPeer{hold: w}
			addr, _ := runStrict(t, sp)
			o := testOptions(addr)
			// Well above the peer's one second of quiet before it answers.
			o.Timeout, o.DataTimeout = 5*time.Second, 5*time.Second
			o.MaxInflight = w
			if w == 32 {
				o.MaxInflight = 0 // the default
			}
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			var msgs []*Message
			var want []pwant
			for range w + 3 {
				msgs = append(msgs, msg("a@x", "hi\n", "r@y"))
				want = append(want, pwant{"s", 250})
			}
			res, err := sendAll(t, s, msgs)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			checkResults(t, res, want)
			sp.mu.Lock()
			defer sp.mu.Unlock()
			if sp.overrun != "" || sp.heldMails != w {
				t.Errorf("window %d: %d messages before the first reply (%s)", w, sp.heldMails, sp.overrun)
			}
		})
	}
	t.Run("bytes", func(t *testing.T) {
		// Held replies: only the first chunk goes with the envelope; the
		// rest wait for the RCPT replies.
		sp := &strictPeer{hold: 1}
		addr, _ := runStrict(t, sp)
		o := testOptions(addr)
		o.Timeout, o.DataTimeout = 5*time.Second, 5*time.Second
		s, err := Dial(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		res, err := sendAll(t, s, []*Message{bigMsg(8 << 20)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkResults(t, res, []pwant{{"s", 250}})
		sp.mu.Lock()
		defer sp.mu.Unlock()
		if sp.heldBytes == 0 || sp.heldBytes > chunkSize+2 {
			t.Errorf("%d octets of content before the RCPT replies, want one chunk (%d)", sp.heldBytes, chunkSize)
		}
	})
	t.Run("byte bound", func(t *testing.T) {
		// Slow replies: once the recipient is known, chunks go up to the
		// byte bound and no further.
		sp := &strictPeer{delay: 20 * time.Millisecond}
		addr, _ := runStrict(t, sp)
		o := testOptions(addr)
		o.Timeout, o.DataTimeout = 5*time.Second, 5*time.Second
		s, err := Dial(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		res, err := sendAll(t, s, []*Message{bigMsg(8 << 20)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkResults(t, res, []pwant{{"s", 250}})
		if m := s.stats.maxBytes; m > maxInflightBytes+chunkSize+2 || m < maxInflightBytes-chunkSize {
			t.Errorf("at most %d octets of content unanswered, bound %d", m, maxInflightBytes)
		}
	})
}

// TestPipelinedContent checks the octets that arrive, and MAIL's
// parameters, in both modes: BDAT carries the content with CRLF line ends
// and no dot-stuffing, DATA dot-stuffed; both deliver the same message.
func TestPipelinedContent(t *testing.T) {
	for _, m := range pmodes {
		t.Run(m.name, func(t *testing.T) {
			sp := &strictPeer{exts: slices.Concat(m.exts, []string{"SIZE 1000000", "SMTPUTF8"})}
			addr, _ := runStrict(t, sp)
			s, err := Dial(context.Background(), fastOptions(addr))
			if err != nil {
				t.Fatal(err)
			}
			edge := msg("a@x", edgeBody, "r@y")
			edge.EightBit = true
			res, err := sendAll(t, s, []*Message{edge, msg("jörg@x", "", "r@y"), bigMsg(300 << 10)})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			checkResults(t, res, []pwant{{"s", 250}, {"s", 250}, {"s", 250}})
			sp.mu.Lock()
			defer sp.mu.Unlock()
			wantBig := strings.ReplaceAll(bigContentString(300<<10), "\n", "\r\n")
			if !strings.HasSuffix(wantBig, "\r\n") {
				wantBig += "\r\n" // the unterminated last line is ended
			}
			wants := []string{edgeWire, "", wantBig}
			if m.name == "pipelining" {
				// The peer keeps DATA content in its dot-stuffed wire form.
				wants[0] = strings.ReplaceAll("\n"+edgeWire, "\n.", "\n..")[1:]
			}
			for i, w := range wants {
				if i < len(sp.data) && !bytes.Equal(sp.data[i], []byte(w)) {
					t.Errorf("msg %d content differs: got %q", i, trunc(string(sp.data[i])))
				}
			}
			cmds := strings.Join(sp.cmds, "\n")
			for _, want := range []string{
				"MAIL FROM:<a@x> SIZE=" + strconv.Itoa(len(edgeWire)) + " BODY=8BITMIME",
				"MAIL FROM:<jörg@x> SIZE=0 SMTPUTF8",
			} {
				if !strings.Contains(cmds, want) {
					t.Errorf("no %q in:\n%s", want, cmds)
				}
			}
		})
	}
}

func bigContentString(n int64) string {
	b, err := io.ReadAll(&bigContent{n: n})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestChunkWriteFailure: a failed write ends the session, but what it
// means for the message depends on what reached the connection, and on
// the replies that still come: none of it sent is Deferred; all of it
// sent and answered is Sent (the replies are read for a moment after the
// failure); all of it sent and unanswered is Uncertain.
func TestChunkWriteFailure(t *testing.T) {
	for _, c := range []struct {
		name   string
		late   bool
		faults map[string]string
		want   string
	}{
		{"nothing written", false, nil, "d"},
		{"all written, answered", true, nil, "s"},
		{"all written, unanswered", true, map[string]string{"DOT a@x": "hang"}, "d?"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var armed atomic.Bool
			sp := &strictPeer{faults: c.faults}
			addr, release := runStrict(t, sp)
			o := fastOptions(addr)
			o.Dial = func(network, addr string, timeout time.Duration) (net.Conn, error) {
				nc, err := net.DialTimeout(network, addr, timeout)
				if err != nil {
					return nil, err
				}
				return &failConn{Conn: nc, armed: &armed, late: c.late}, nil
			}
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			res, err := sendAll(t, s, []*Message{msg("a@x", "hello\n", "r@y")})
			release()
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("err = %v, want *Error", err)
			}
			if st := statuses(res[0]); st != c.want {
				t.Errorf("statuses %s (%+v), want %s", st, res[0].Reply, c.want)
			}
			if err := s.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
		})
	}
}

// TestRefusedHeadNoProtocolError: a batch whose head a server refuses
// (one large message deferred at RCPT, small ones deferred and refused)
// costs no protocol error at an Exim-strict peer, which would otherwise
// drop the session after three and leave everything behind the head
// undelivered for good.
func TestRefusedHeadNoProtocolError(t *testing.T) {
	for _, m := range []struct {
		name string
		exts []string
	}{
		{"chunking", nil},
		{"pipelining", []string{"PIPELINING", "8BITMIME", "SIZE 100000000"}},
	} {
		t.Run(m.name, func(t *testing.T) {
			faults := map[string]string{}
			big := bigMsg(300 << 10)
			big.From, big.To = "big@x", []string{"grey0@y"}
			msgs := []*Message{big}
			want := []pwant{{"d", 451}}
			faults["RCPT grey0@y"] = "451 4.7.1 greylisted"
			for i := 1; i <= 5; i++ {
				to := fmt.Sprintf("grey%d@y", i)
				faults["RCPT "+to] = "451 4.7.1 greylisted"
				msgs = append(msgs, msg(fmt.Sprintf("d%d@x", i), "hold\n", to))
				want = append(want, pwant{"d", 451})
			}
			for i := 1; i <= 2; i++ {
				to := fmt.Sprintf("gone%d@y", i)
				faults["RCPT "+to] = "550 5.1.1 no such user"
				msgs = append(msgs, msg(fmt.Sprintf("f%d@x", i), "gone\n", to))
				want = append(want, pwant{"f", 550})
			}
			for i := range 30 {
				msgs = append(msgs, msg(fmt.Sprintf("s%d@x", i), "fine\n", fmt.Sprintf("ok%d@y", i)))
				want = append(want, pwant{"s", 250})
			}
			sp := &strictPeer{exts: m.exts, faults: faults}
			res := sendVia(t, sp, nil, msgs)
			checkResults(t, res, want)
			if n := len(sp.accepted()); n != 30 {
				t.Errorf("peer took %d messages, want 30", n)
			}
		})
	}
}

// TestRecipientLimit: recipients past the server's limit (452 4.5.3) go
// in new transactions of the same session, each exactly once, in both
// pipelined modes and whatever the window; a refused one among them keeps
// its own outcome.
func TestRecipientLimit(t *testing.T) {
	for _, m := range []struct {
		name string
		exts []string
	}{
		{"chunking", nil},
		{"pipelining", []string{"PIPELINING", "8BITMIME", "SIZE 100000000"}},
	} {
		for _, window := range []int{1, 4, 32} {
			t.Run(fmt.Sprintf("%s/window %d", m.name, window), func(t *testing.T) {
				var rcpts []string
				for i := range 7 {
					rcpts = append(rcpts, fmt.Sprintf("r%d@y", i))
				}
				sp := &strictPeer{exts: m.exts, maxRcpts: 3, faults: map[string]string{"RCPT r4@y": "550 5.1.1 no such user"}}
				res := sendVia(t, sp, func(o *Options) { o.MaxInflight = window }, []*Message{
					msg("a@x", "many\n", rcpts...),
					msg("b@x", "one\n", "q@y"),
				})
				if st := statuses(res[0]); st != "ssssfss" {
					t.Errorf("a: %s %+v", st, res[0])
				}
				if res[0].RcptReplies[4].Code != 550 {
					t.Errorf("a: r4's reply %+v", res[0].RcptReplies[4])
				}
				if st := statuses(res[1]); st != "s" {
					t.Errorf("b: %s %+v", st, res[1])
				}
				got := sp.accepted()
				sort.Strings(got)
				want := []string{"a@x>r0@y,r1@y,r2@y", "a@x>r3@y,r5@y,r6@y", "b@x>q@y"}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("peer took %q, want %q", got, want)
				}
			})
		}
	}
}

// sendVia sends msgs in one Send to the strict peer sp, with options
// tuned by opt (nil: the test defaults), and closes the session.
func sendVia(t *testing.T, sp *strictPeer, opt func(*Options), msgs []*Message) []Result {
	t.Helper()
	addr, _ := runStrict(t, sp)
	o := testOptions(addr)
	if opt != nil {
		opt(&o)
	}
	s, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sendAll(t, s, msgs)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	return res
}
