package flush

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"etrnflush/bsmtp"
	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

// BenchmarkFlush4K is the engine's cost per message: one flush of a BSMTP
// spool of 4 KiB messages (spool walk, claim, send, settle, journal, log
// line, compaction) into a minimal pipelining, chunking sink, the shape of
// make bench's throughput row. The sink is a bare line reader so that the
// profile is etrnflush's: run with -cpuprofile and look at ns/msg.
func BenchmarkFlush4K(b *testing.B) {
	const n = 1000
	addr, got := startRawSink(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "h.example")
	spoolBytes := benchSpool(b, n)
	logf, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = logf.Close() })
	b.ReportAllocs()
	cpu0, sw0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := os.WriteFile(path, spoolBytes, 0o600); err != nil {
			b.Fatal(err)
		}
		got.Store(0)
		b.StartTimer()
		cfg := Config{
			Host:   "h.example",
			Spool:  spool.Options{Path: path},
			Sender: sender.Options{Helo: "bench.example", TLS: sender.TLSNone, Timeout: time.Minute, DataTimeout: time.Minute},
			Log:    logging.NewWriter(logf, false),
			Dests:  []string{addr},
		}
		sum, err := Run(context.Background(), cfg)
		if err != nil || sum.Sent != n || sum.Left() {
			b.Fatalf("flush: %v, %+v", err, sum)
		}
		if g := got.Load(); g != n {
			b.Fatalf("sink took %d messages, want %d", g, n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
	// CPU, not wall time, is the figure to compare on a shared machine;
	// it includes the sink's, and the spool rewrites between runs.
	cpu, sw := cpuTime()
	b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/float64(b.N*n), "cpu-ns/msg")
	// Each voluntary context switch is a thread that went to sleep
	// waiting; on a loaded machine each costs a trip through the
	// scheduler's queue before it runs again.
	b.ReportMetric(float64(sw-sw0)/float64(b.N*n), "vcsw/msg")
}

// cpuTime is the user and system time this process has used, and its
// voluntary context switches.
func cpuTime() (time.Duration, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw
}

// benchSpool renders n messages of about 4 KiB, each with its own
// Message-ID and some dot-stuffed lines, as Exim appends them.
func benchSpool(b *testing.B, n int) []byte {
	var sb strings.Builder
	w := bsmtp.NewWriter(&sb)
	for i := range n {
		var body strings.Builder
		fmt.Fprintf(&body, "Message-ID: <%d@bench.example>\nSubject: bench %d\n\n", i, i)
		for body.Len() < 4096-80 {
			if body.Len()%7 == 0 {
				body.WriteString(".")
			}
			body.WriteString(strings.Repeat("x", 77) + "\n")
		}
		env := bsmtp.Envelope{From: fmt.Sprintf("sender%d@isp.example", i%7), To: []string{fmt.Sprintf("user%d@h.example", i)}}
		if err := w.Write(env, strings.NewReader(body.String()), false); err != nil {
			b.Fatal(err)
		}
	}
	return []byte(sb.String())
}

// startRawSink is a discarding SMTP server that does as little as it can:
// it answers each command line, takes BDAT chunks and DATA content, and
// writes its replies only when it has no more input waiting, as a
// pipelining server may. got counts the messages taken.
func startRawSink(b *testing.B) (string, *atomic.Int64) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	got := &atomic.Int64{}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = c.Close() }() // a sink: nothing to lose
				rawSession(c, got)
			}()
		}
	}()
	b.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return l.Addr().String(), got
}

func rawSession(c net.Conn, got *atomic.Int64) {
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 16<<10)
	reply := func(s string) bool {
		_, _ = bw.WriteString(s)
		if br.Buffered() == 0 {
			return bw.Flush() == nil
		}
		return true
	}
	reply("220 sink.bench ESMTP\r\n")
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimRight(string(line), "\r\n"))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			reply("250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 SIZE\r\n")
		case strings.HasPrefix(cmd, "BDAT "):
			f := strings.Fields(cmd)
			size, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, br, size); err != nil {
				return
			}
			if len(f) > 2 && f[2] == "LAST" {
				got.Add(1)
			}
			reply("250 2.0.0 ok\r\n")
		case cmd == "DATA":
			reply("354 go ahead\r\n")
			for {
				l, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
			}
			got.Add(1)
			reply("250 2.0.0 ok\r\n")
		case cmd == "QUIT":
			reply("221 bye\r\n")
			_ = bw.Flush()
			return
		default:
			reply("250 2.0.0 ok\r\n")
		}
	}
}
