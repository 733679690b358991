package sender

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

// engines are the three ways a session can send. go-smtp always offers
// PIPELINING and CHUNKING (go-smtp.md 2.2), so the client opts out.
var engines = []struct {
	name string
	opt  func(*Options)
}{
	{"lock-step", func(o *Options) { o.NoPipelining = true }},
	{"pipelining", func(o *Options) { o.NoChunking = true }},
	{"chunking", func(*Options) {}},
}

// TestGoSMTPEngines runs three messages, the second one faulted at each
// step, through all three engines against go-smtp's server, and checks
// every message's and recipient's outcome and what the server took.
func TestGoSMTPEngines(t *testing.T) {
	const lock, pipe, chunk = "lock-step", "pipelining", "chunking"
	ok, okC := pwant{"s", 250}, []string{"a@x>a1@y", "c@x>c1@y"}
	onlyA := []string{"a@x>a1@y"}
	cases := []struct {
		name   string
		faults map[string]string
		want   map[string][]pwant
		need   map[string]int // results that must be there (default all)
		got    []string
	}{
		{name: "MAIL 550", faults: map[string]string{"MAIL b@x": "550"},
			want: map[string][]pwant{"": {ok, {"ff", 550}, ok}}, got: okC},
		{name: "MAIL 451", faults: map[string]string{"MAIL b@x": "451"},
			want: map[string][]pwant{"": {ok, {"dd", 451}, ok}}, got: okC},
		{name: "one RCPT 550", faults: map[string]string{"RCPT b2@y": "550"},
			want: map[string][]pwant{"": {ok, {"sf", 250}, ok}}, got: []string{"a@x>a1@y", "b@x>b1@y", "c@x>c1@y"}},
		{name: "every RCPT refused", faults: map[string]string{"RCPT b1@y": "450", "RCPT b2@y": "550"},
			want: map[string][]pwant{"": {ok, {"df", 550}, ok}}, got: okC},
		{name: "554 after the content", faults: map[string]string{"DATA b@x": "554"},
			want: map[string][]pwant{"": {ok, {"ff", 554}, ok}}, got: okC},
		{name: "451 after the content", faults: map[string]string{"DATA b@x": "451"},
			want: map[string][]pwant{"": {ok, {"dd", 451}, ok}}, got: okC},
		{name: "drop at MAIL", faults: map[string]string{"MAIL b@x": "drop"},
			want: map[string][]pwant{lock: {ok, {"dd", 0}}, pipe: {ok, {"dd", 0}}, chunk: {ok, {"dd?", 0}, {"d?", 0}}},
			need: map[string]int{chunk: 2}, got: onlyA},
		{name: "drop after the content", faults: map[string]string{"DATA b@x": "drop"},
			want: map[string][]pwant{lock: {ok, {"dd?", 0}}, pipe: {ok, {"dd?", 0}, {"d", 0}}, chunk: {ok, {"dd?", 0}, {"d?", 0}}},
			need: map[string]int{chunk: 2}, got: onlyA},
		{name: "RCPT slower than the timeout", faults: map[string]string{"RCPT b2@y": "slow"},
			want: map[string][]pwant{lock: {ok, {"dd", 0}}, pipe: {ok, {"dd", 0}}, chunk: {ok, {"dd?", 0}, {"d?", 0}}},
			need: map[string]int{chunk: 2}, got: onlyA},
		{name: "421 at MAIL", faults: map[string]string{"MAIL b@x": "421"},
			want: map[string][]pwant{lock: {ok, {"dd", 421}}, pipe: {ok, {"dd", 421}}, chunk: {ok, {"dd", 421}, {"d", 421}}},
			need: map[string]int{chunk: 2}, got: onlyA},
		{name: "421 after the content", faults: map[string]string{"DATA b@x": "421"},
			want: map[string][]pwant{lock: {ok, {"dd", 421}}, pipe: {ok, {"dd", 421}, {"d", 421}}, chunk: {ok, {"dd", 421}, {"d", 421}}},
			need: map[string]int{chunk: 2}, got: onlyA},
	}
	for _, en := range engines {
		for _, c := range cases {
			t.Run(en.name+"/"+c.name, func(t *testing.T) {
				want, ok := c.want[en.name]
				if !ok {
					want = c.want[""]
				}
				// Values as fakesmtp.Script: a reply, "drop" (close the
				// connection instead of replying; for DATA after reading
				// all content), "slow" (reply after the client's timeout),
				// "421" (reply 421 and close).
				be := &fakesmtp.Server{Faults: fakesmtp.Script(c.faults, 700*time.Millisecond)}
				addr := startSink(t, be, nil)
				o := testOptions(addr)
				o.Timeout, o.DataTimeout = 300*time.Millisecond, 300*time.Millisecond
				en.opt(&o)
				s, err := Dial(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				res, err := sendAll(t, s, []*Message{
					msg("a@x", "a\n", "a1@y"), msg("b@x", "b\n", "b1@y", "b2@y"), msg("c@x", "c\n", "c1@y"),
				})
				dies := false
				for _, f := range c.faults {
					dies = dies || f == "drop" || f == "slow" || f == "421"
				}
				var e *Error
				if dies && !errors.As(err, &e) {
					t.Errorf("Send err %v, want *Error", err)
				}
				if !dies && err != nil {
					t.Errorf("Send: %v", err)
				}
				if n := c.need[en.name]; n > 0 && len(res) >= n && len(res) < len(want) {
					want = want[:len(res)]
				}
				if len(want) > 2 && want[2].st == "d?" && len(res) > 2 && statuses(res[2]) == "d" {
					// The message after the faulted one was streaming when
					// the session died: whether its BDAT 0 LAST left before
					// a write failed is a matter of timing, and either
					// outcome keeps it.
					want = append([]pwant(nil), want...)
					want[2].st = "d"
				}
				checkResults(t, res, want)
				if err := s.Close(); err != nil {
					t.Logf("Close: %v", err)
				}
				// The server may finish a message after the client gave
				// up on the session; the "slow" RCPT's fate is timing.
				time.Sleep(10 * time.Millisecond)
				if g := be.Envelopes(); !reflect.DeepEqual(g, c.got) && c.name != "RCPT slower than the timeout" {
					t.Errorf("server took %q, want %q", g, c.got)
				}
			})
		}
	}
}

// TestPipelinedReportError: report failing stops the session cleanly:
// nothing more is taken, no report after the failing one, the replies to
// what was written are read, and the session stays usable.
func TestPipelinedReportError(t *testing.T) {
	boom := errors.New("spool broke")
	for _, en := range engines[1:] {
		t.Run(en.name, func(t *testing.T) {
			be := &fakesmtp.Server{}
			o := testOptions(startSink(t, be, nil))
			en.opt(&o)
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			taken, reports := 0, 0
			err = s.Send(context.Background(), func() (*Message, error) {
				taken++
				return msg("a@x", "hi\n", "r@y"), nil
			}, func(*Message, Result) error {
				reports++
				if reports == 3 {
					return boom
				}
				return nil
			})
			var se *Error
			if !errors.Is(err, boom) || errors.As(err, &se) {
				t.Errorf("err = %v, want the report's", err)
			}
			if reports != 3 || taken < 3 || taken > 3+DefaultMaxInflight {
				t.Errorf("%d taken, %d reports", taken, reports)
			}
			res, err := sendAll(t, s, []*Message{msg("b@x", "hi\n", "r@y")})
			if err != nil || statuses(res[0]) != "s" {
				t.Errorf("after the report error: %v %+v", err, res)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// TestPipelinedNextError: every message taken before next failed is
// reported before Send returns next's error.
func TestPipelinedNextError(t *testing.T) {
	boom := errors.New("spool unreadable")
	for _, en := range engines[1:] {
		t.Run(en.name, func(t *testing.T) {
			be := &fakesmtp.Server{}
			o := testOptions(startSink(t, be, nil))
			en.opt(&o)
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			var res []Result
			err = s.Send(context.Background(), func() (*Message, error) {
				if n == 5 {
					return nil, boom
				}
				n++
				return msg("a@x", "hi\n", "r"+strconv.Itoa(n)+"@y"), nil
			}, func(_ *Message, r Result) error { res = append(res, r); return nil })
			var se *Error
			if !errors.Is(err, boom) || errors.As(err, &se) {
				t.Errorf("err = %v, want next's", err)
			}
			want := make([]pwant, 5)
			for i := range want {
				want[i] = pwant{"s", 250}
			}
			checkResults(t, res, want)
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if len(be.Messages()) != 5 {
				t.Errorf("server took %d", len(be.Messages()))
			}
		})
	}
}

// TestPipelinedCancel: a cancelled context stops the session at once, even
// with BDAT LASTs waiting for replies that DataTimeout would wait minutes
// for; each message is reported, Uncertain when its end had left.
func TestPipelinedCancel(t *testing.T) {
	for _, m := range pmodes {
		t.Run(m.name, func(t *testing.T) {
			sp := &strictPeer{exts: m.exts, faults: map[string]string{"DOT a@x": "hang"}}
			addr, release := runStrict(t, sp)
			o := fastOptions(addr)
			o.DataTimeout = time.Minute
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			var res []Result
			msgs := []*Message{msg("a@x", "hi\n", "r@y"), msg("b@x", "hi\n", "r@y")}
			i := 0
			err = s.Send(ctx, func() (*Message, error) {
				if i == len(msgs) {
					return nil, io.EOF
				}
				i++
				return msgs[i-1], nil
			}, func(_ *Message, r Result) error { res = append(res, r); return nil })
			release()
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("Send took %v after cancel", el)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want the context's", err)
			}
			if len(res) != i {
				t.Fatalf("took %d, reported %d", i, len(res))
			}
			if statuses(res[0]) != "d?" {
				t.Errorf("msg 0: %s", statuses(res[0]))
			}
			if m.name == "chunking" && len(res) == 2 && statuses(res[1]) != "d?" {
				t.Errorf("msg 1: %s", statuses(res[1]))
			}
			if err := s.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
		})
	}
}

// TestChunkedMemoryFlat streams a large message over BDAT and checks that
// allocation does not grow with it.
func TestChunkedMemoryFlat(t *testing.T) {
	const size = 64 << 20
	addr, _ := runPeer(t, func(p *peer) {
		p.greet("PIPELINING", "CHUNKING", "SIZE")
		var n int64
		for {
			// What is checked is memory, not speed: a -race build on a
			// loaded 2-core machine may take many seconds per chunk.
			if err := p.c.SetReadDeadline(time.Now().Add(2 * time.Minute)); err != nil {
				t.Error(err)
				return
			}
			l, err := p.br.ReadString('\n')
			if err != nil {
				t.Errorf("peer: %v", err)
				return
			}
			switch {
			case strings.HasPrefix(l, "BDAT "):
				f := strings.Fields(l)
				k, _ := strconv.ParseInt(f[1], 10, 64)
				if _, err := io.CopyN(io.Discard, p.br, k); err != nil {
					t.Errorf("peer: %v", err)
					return
				}
				n += k
				p.send("250 ok")
				if len(f) == 3 && n < size {
					t.Errorf("LAST after %d octets", n)
				}
			case strings.HasPrefix(l, "QUIT"):
				p.send("221 bye")
				return
			default:
				p.send("250 ok")
			}
		}
	})
	o := testOptions(addr)
	o.Timeout, o.DataTimeout = 2*time.Minute, 2*time.Minute
	sendFlat(t, o, size)
}

// TestPipelinedTLS runs both pipelined engines over STARTTLS against
// go-smtp: the reply reader and the writer share one tls.Conn.
func TestPipelinedTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	for _, en := range engines[1:] {
		t.Run(en.name, func(t *testing.T) {
			be := &fakesmtp.Server{}
			addr := startSink(t, be, func(s *smtp.Server) {
				s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
			})
			o := testOptions(addr)
			o.TLS, o.TLSName, o.TLSConf = TLSVerify, "mx.test", &tls.Config{RootCAs: pool}
			en.opt(&o)
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if !s.TLS() {
				t.Fatal("not TLS")
			}
			var msgs []*Message
			var want []pwant
			for i := range 20 {
				msgs = append(msgs, msg("a@x", strings.Repeat("line\n", i*2000), "r@y"))
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
			got := be.Messages()
			if len(got) != 20 {
				t.Fatalf("server took %d", len(got))
			}
			for i, g := range got {
				if string(g.Data) != strings.Repeat("line\r\n", i*2000) {
					t.Errorf("msg %d content differs", i)
				}
			}
		})
	}
}

// TestPipelinedCancelDrains: a context cancelled mid-stream takes no new
// message, but the replies to what already left are still read (within
// a grace), so those messages get their real outcome rather than being
// left uncertain and sent twice.
func TestPipelinedCancelDrains(t *testing.T) {
	for _, m := range pmodes {
		t.Run(m.name, func(t *testing.T) {
			sp := &strictPeer{exts: m.exts, delay: 2 * time.Millisecond}
			addr, _ := runStrict(t, sp)
			s, err := Dial(context.Background(), testOptions(addr))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			taken := 0
			var res []Result
			err = s.Send(ctx, func() (*Message, error) {
				taken++
				return msg("a@x", "hi\n", "r"+strconv.Itoa(taken)+"@y"), nil
			}, func(_ *Message, r Result) error {
				res = append(res, r)
				if len(res) == 3 {
					cancel()
				}
				return nil
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want the context's", err)
			}
			if taken != len(res) || taken < 3 || taken > 3+DefaultMaxInflight {
				t.Errorf("%d taken, %d reported", taken, len(res))
			}
			for i, r := range res {
				// The message being written when the cancel came may
				// have been cut short: deferred, never uncertain.
				if st := statuses(r); st != "s" && !(i == len(res)-1 && st == "d") {
					t.Errorf("msg %d: %s %+v", i, st, r.Reply)
				}
			}
			if got := len(sp.accepted()); got != taken && got != taken-1 {
				t.Errorf("peer took %d of %d", got, taken)
			}
			if err := s.Send(context.Background(), func() (*Message, error) { return nil, io.EOF }, nil); err == nil {
				t.Error("the session goes on after a cancel")
			}
			if err := s.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
		})
	}
}

// TestBatchMemoryFlat: the live heap in the middle of a long pipelined
// batch does not grow with the number of messages already sent (the
// queues behind the window are let go as it slides).
func TestBatchMemoryFlat(t *testing.T) {
	for _, en := range engines[1:] {
		t.Run(en.name, func(t *testing.T) {
			o := testOptions(startSink(t, &fakesmtp.Server{Discard: true}, nil))
			en.opt(&o)
			s, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			m := msg("a@x", body4K, "r@y")
			const n = 6000
			i, reported := 0, 0
			var early, late uint64
			heap := func() uint64 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			err = s.Send(context.Background(), func() (*Message, error) {
				if i == n {
					return nil, io.EOF
				}
				i++
				return m, nil
			}, func(_ *Message, r Result) error {
				reported++
				switch reported {
				case 1000:
					early = heap()
				case n - 100:
					late = heap()
				}
				if r.Rcpts[0] != Sent {
					return errors.New("not sent")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			t.Logf("live heap %d after 1000 messages, %d after %d", early, late, n-100)
			if late > early+1<<20 {
				t.Errorf("live heap grew from %d to %d octets over %d messages", early, late, n-1100)
			}
		})
	}
}
