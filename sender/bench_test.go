package sender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"etrnflush/internal/fakesmtp"
)

// body4K is the benchmark content: 4 KiB of 78-column lines.
var body4K = strings.Repeat(strings.Repeat("b", 78)+"\n", 4096/79) + strings.Repeat("c", 4096%79)

// startDelayProxy forwards every connection to upstream, holding each
// segment oneWay in each direction: a link with a round trip of 2*oneWay
// and no bandwidth limit. Order is kept; nothing is coalesced or dropped.
func startDelayProxy(t testing.TB, upstream string, oneWay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(u, c, oneWay) }()
			go func() { defer wg.Done(); delayCopy(c, u, oneWay) }()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

func delayCopy(dst, src net.Conn, d time.Duration) {
	type seg struct {
		at time.Time
		b  []byte
	}
	ch := make(chan seg, 1<<12)
	go func() {
		defer close(ch)
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				ch <- seg{time.Now().Add(d), append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for s := range ch {
		if failed {
			continue
		}
		time.Sleep(time.Until(s.at))
		if _, err := dst.Write(s.b); err != nil {
			failed = true
		}
	}
	// Both ends are closed once either side is done: a test proxy has no
	// half-closed sessions to keep.
	_ = dst.Close()
	_ = src.Close()
}

// sendN sends n copies of m over one session and returns the time Send
// took (the dial, EHLO and QUIT are not counted) and the writer's waits.
func sendN(t testing.TB, o Options, n int, m *Message) (time.Duration, int) {
	t.Helper()
	s, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	next := func() (*Message, error) {
		if i == n {
			return nil, io.EOF
		}
		i++
		return m, nil
	}
	report := func(_ *Message, r Result) error {
		for _, st := range r.Rcpts {
			if st != Sent {
				return errors.New("not sent: " + r.Reply.Text)
			}
		}
		return nil
	}
	start := time.Now()
	if err := s.Send(context.Background(), next, report); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return el, s.stats.waits
}

func rcpts(n int) []string {
	var to []string
	for i := range n {
		to = append(to, fmt.Sprintf("r%d@y", i))
	}
	return to
}

// TestRoundTrips checks the engine's reason to be: through a link with a
// 50 ms round trip, CHUNKING costs at most 0.1 round trips per message and
// PIPELINING alone at most 1.05 (one per message, plus the last dot's),
// whatever the number of recipients. Round trips are counted two ways,
// each an upper bound: the writer's turnarounds (it wrote, then had to
// wait for a reply; exact without CHUNKING, where every wait is for a 354
// with nothing else in flight, but an overcount when replies stream in
// while it writes), and the time Send takes over the round-trip time, less
// the time the same run takes through the same proxy with no delay (an
// overcount by the proxy's timer slack, a few milliseconds per round trip
// on a busy machine). The smaller must meet the bound.
func TestRoundTrips(t *testing.T) {
	const n, oneWay = 60, 25 * time.Millisecond
	rtt := 2 * oneWay
	sinkAddr := startSink(t, &fakesmtp.Server{Discard: true}, nil)
	fast := startDelayProxy(t, sinkAddr, 0)
	slow := startDelayProxy(t, sinkAddr, oneWay)
	for _, c := range []struct {
		engine string
		to     int
		max    float64
	}{
		{"chunking", 1, 0.1},
		{"chunking", 5, 0.1},
		{"pipelining", 1, 1.05},
		{"pipelining", 5, 1.05},
	} {
		t.Run(fmt.Sprintf("%s/%d rcpt", c.engine, c.to), func(t *testing.T) {
			m := msg("a@x", body4K, rcpts(c.to)...)
			opts := func(addr string) Options {
				o := testOptions(addr)
				o.NoChunking = c.engine == "pipelining"
				return o
			}
			local, _ := sendN(t, opts(fast), n, m)
			el, waits := sendN(t, opts(slow), n, m)
			byTime := float64(el-local) / float64(rtt) / n
			byTurns := float64(waits) / n
			per := min(byTime, byTurns)
			t.Logf("%s, %d rcpt: %d messages in %v (%v without delay): %.3f round trips per message by time, %.3f by turnarounds",
				c.engine, c.to, n, el.Round(time.Millisecond), local.Round(time.Millisecond), byTime, byTurns)
			if per > c.max {
				t.Errorf("%.3f round trips per message, want at most %.2f", per, c.max)
			}
		})
	}
}

// BenchmarkRoundTrips reports round trips per message (rt/msg: Send's
// time over the round-trip time, so the proxy's timer slack adds a few
// percent) through a link with a 20 ms round trip, for 100 messages of
// 4 KiB, with each engine and 1 or 5 recipients. Lock-step should show
// 3+recipients.
func BenchmarkRoundTrips(b *testing.B) {
	const n, oneWay = 100, 10 * time.Millisecond
	addr := startDelayProxy(b, startSink(b, &fakesmtp.Server{Discard: true}, nil), oneWay)
	for _, en := range engines {
		for _, to := range []int{1, 5} {
			b.Run(fmt.Sprintf("%s/%drcpt", en.name, to), func(b *testing.B) {
				o := testOptions(addr)
				o.Timeout, o.DataTimeout = 10*time.Second, 10*time.Second
				en.opt(&o)
				var total time.Duration
				turns := 0
				for b.Loop() {
					el, w := sendN(b, o, n, msg("a@x", body4K, rcpts(to)...))
					total += el
					turns += w
				}
				b.ReportMetric(float64(total)/float64(b.N)/float64(2*oneWay)/n, "rt/msg")
				if en.name != "lock-step" {
					// The writer's write-then-wait count (TestRoundTrips).
					b.ReportMetric(float64(turns)/float64(b.N)/n, "turns/msg")
				}
			})
		}
	}
}

// BenchmarkEngines measures loopback throughput of each engine: one
// session, 4 KiB messages, one recipient, go-smtp's server discarding.
// Both ends run in this process, so B/op and allocs/op include the
// server's.
func BenchmarkEngines(b *testing.B) {
	addr := startSink(b, &fakesmtp.Server{Discard: true}, nil)
	for _, en := range engines {
		b.Run(en.name, func(b *testing.B) {
			o := testOptions(addr)
			en.opt(&o)
			b.ReportAllocs()
			b.ResetTimer()
			el, _ := sendN(b, o, b.N, msg("a@x", body4K, "r@y"))
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
		})
	}
}
