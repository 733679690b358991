package serve

import (
	"fmt"
	"testing"

	"etrnflush/internal/fakesmtp"
)

// BenchmarkETRNReply is the time from ETRN to its 253 for a host holding
// 100 messages in an appended BSMTP file: parsing the command, the rate
// check (a file in state_dir), counting the spool, and starting the flush
// (recorded here, not run).
func BenchmarkETRNReply(b *testing.B) {
	f := hostsFixture(b, trustLocal+"\netrn_limit = 1000000000\nmax_commands = 1000000000")
	f.hold("h1.example", 100)
	c := f.start()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.cmd("ETRN h1.example", 253, "100 pending")
	}
	b.StopTimer()
	c.cmd("QUIT", 221, "")
}

// BenchmarkATRN is one whole ODMR session per iteration: AUTH, ATRN, the
// turnaround and the delivery of 100 messages of about 2 KB to go-smtp's
// server on the same connection (loopback, no TLS).
func BenchmarkATRN(b *testing.B) {
	const n = 100
	f := hostsFixture(b, trustLocal+"\nallow_plaintext_auth = true\nmax_commands = 1000")
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f.holdBig("h1.example", n, 2000)
		c := f.start()
		b.StartTimer()
		c.cmd("EHLO customer.example", 250, "ATRN")
		c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
		c.cmd("ATRN h1.example", 250, "reversing")
		cust := &fakesmtp.Server{}
		c.serveCustomer(b, cust)
		if got := len(messages(cust)); got != n {
			b.Fatalf("customer got %d of %d", got, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// holdBig is hold with a body of size octets.
func (f *fixture) holdBig(host string, n, size int) {
	f.t.Helper()
	line := fmt.Sprintf("%075d\n", 0)
	body := ""
	for len(body) < size {
		body += line
	}
	f.holdBody(host, n, body)
}

// BenchmarkATRNTLS is BenchmarkATRN over implicit TLS, with each line in
// a TLS record of its own after the turnaround (what serve does there,
// for fetchmail) and with records as the sender's writes make them, to
// show what lineRecords costs.
func BenchmarkATRNTLS(b *testing.B) {
	const n = 100
	for _, mode := range []struct {
		name string
		off  bool
	}{{"line-per-record", false}, {"as-written", true}} {
		b.Run(mode.name, func(b *testing.B) {
			noLineRecords = mode.off
			defer func() { noLineRecords = false }()
			f := hostsFixture(b, trustLocal+"\nmax_commands = 1000")
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				f.holdBig("h1.example", n, 2000)
				c := f.startImplicit()
				b.StartTimer()
				c.cmd("EHLO customer.example", 250, "ATRN")
				c.cmd("AUTH PLAIN "+plainAuth("alice", alicePass), 235, "")
				c.cmd("ATRN h1.example", 250, "reversing")
				cust := &fakesmtp.Server{}
				c.serveCustomer(b, cust)
				if got := len(messages(cust)); got != n {
					b.Fatalf("customer got %d of %d", got, n)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
