package sender

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"etrnflush/internal/fakesmtp"
)

// startSink serves be, the fake server of internal/fakesmtp, on 127.0.0.1
// and returns its address; tune, if set, adjusts go-smtp's server.
func startSink(t testing.TB, be *fakesmtp.Server, tune func(*smtp.Server)) string {
	t.Helper()
	be.Domain = "sink.test"
	be.Timeout = 10 * time.Second
	be.Tune = func(s *smtp.Server) {
		s.MaxLineLength = 0 // let 70 000-octet lines through
		if tune != nil {
			tune(s)
		}
	}
	return fakesmtp.Run(t, be)
}

func testOptions(addr string) Options {
	return Options{
		Addr:        addr,
		Helo:        "client.test",
		TLS:         TLSNone,
		Timeout:     2 * time.Second,
		DataTimeout: 2 * time.Second,
	}
}

func msg(from, body string, to ...string) *Message {
	return &Message{
		From: from,
		To:   to,
		Size: int64(len(body)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
	}
}

// sendAll runs one Send over msgs and returns the results in report order.
func sendAll(t testing.TB, s *Session, msgs []*Message) ([]Result, error) {
	t.Helper()
	var res []Result
	i := 0
	next := func() (*Message, error) {
		if i == len(msgs) {
			return nil, io.EOF
		}
		i++
		return msgs[i-1], nil
	}
	report := func(m *Message, r Result) error {
		if want := msgs[len(res)]; m != want {
			t.Errorf("report %d: got message %p, want %p", len(res), m, want)
		}
		res = append(res, r)
		return nil
	}
	err := s.Send(context.Background(), next, report)
	if len(res) != i {
		t.Errorf("took %d messages, reported %d", i, len(res))
	}
	return res, err
}

func statuses(r Result) string {
	var b strings.Builder
	for _, s := range r.Rcpts {
		b.WriteString(s.String()[:1]) // s, f, d
	}
	if r.Uncertain {
		b.WriteString("?")
	}
	return b.String()
}

func serr(code int, esc smtp.EnhancedCode, text string) fakesmtp.Fault {
	return fakesmtp.Fault{Code: code, Enhanced: esc, Text: text}
}

// Tricky content and what must arrive after go-smtp has undone the
// dot-stuffing: bare LF becomes CRLF, every other octet is kept.
var (
	edgeBody = ".lead\n..two\r\nnul\x00 8bit\xff\xfe bare\rcr\n" + strings.Repeat("L", 70000) + "\n.\n\nno final newline"
	edgeWire = ".lead\r\n..two\r\nnul\x00 8bit\xff\xfe bare\rcr\r\n" + strings.Repeat("L", 70000) + "\r\n.\r\n\r\nno final newline\r\n"
)

func TestGoSMTPFaults(t *testing.T) {
	type want struct {
		st    string // one letter per recipient, "?" when Uncertain
		code  int    // Result.Reply.Code
		rcpts []int  // RcptReplies codes, nil to skip
	}
	type got struct {
		from string
		to   string // comma-joined
	}
	cases := []struct {
		name   string
		faults map[string]fakesmtp.Fault
		msgs   []*Message
		want   []want
		got    []got // messages the sink accepted, in order
	}{
		{
			name: "all sent",
			msgs: []*Message{msg("a@x", "hi\n", "r1@y", "r2@y"), msg("", "bounce\n", "r3@y")},
			want: []want{{"ss", 250, []int{250, 250}}, {"s", 250, nil}},
			got:  []got{{"a@x", "r1@y,r2@y"}, {"", "r3@y"}},
		},
		{
			name:   "MAIL 550 then next message",
			faults: map[string]fakesmtp.Fault{"MAIL bad@x": serr(550, smtp.EnhancedCode{5, 7, 1}, "no")},
			msgs:   []*Message{msg("bad@x", "hi\n", "r1@y", "r2@y"), msg("a@x", "hi\n", "r1@y")},
			want:   []want{{"ff", 550, []int{0, 0}}, {"s", 250, nil}},
			got:    []got{{"a@x", "r1@y"}},
		},
		{
			name:   "MAIL 451",
			faults: map[string]fakesmtp.Fault{"MAIL a@x": serr(451, smtp.EnhancedCode{4, 3, 0}, "later")},
			msgs:   []*Message{msg("a@x", "hi\n", "r1@y", "r2@y")},
			want:   []want{{"dd", 451, nil}},
		},
		{
			name: "RCPT mixed",
			faults: map[string]fakesmtp.Fault{
				"RCPT gone@y": serr(550, smtp.EnhancedCode{5, 1, 1}, "unknown"),
				"RCPT full@y": serr(450, smtp.EnhancedCode{4, 2, 2}, "full"),
			},
			msgs: []*Message{msg("a@x", "hi\n", "ok1@y", "gone@y", "full@y", "ok2@y")},
			want: []want{{"sfds", 250, []int{250, 550, 450, 250}}},
			got:  []got{{"a@x", "ok1@y,ok2@y"}},
		},
		{
			name: "no RCPT accepted, session goes on",
			faults: map[string]fakesmtp.Fault{
				"RCPT gone@y": serr(550, smtp.EnhancedCode{5, 1, 1}, "unknown"),
				"RCPT full@y": serr(452, smtp.EnhancedCode{4, 2, 2}, "full"),
			},
			msgs: []*Message{msg("a@x", "hi\n", "gone@y", "full@y"), msg("b@x", "hi\n", "ok@y")},
			want: []want{{"fd", 452, []int{550, 452}}, {"s", 250, nil}},
			got:  []got{{"b@x", "ok@y"}},
		},
		{
			name:   "DATA 554 (refused after the content)",
			faults: map[string]fakesmtp.Fault{"DATA a@x": serr(554, smtp.EnhancedCode{5, 6, 0}, "spam")},
			msgs:   []*Message{msg("a@x", "hi\n", "r1@y", "r2@y"), msg("b@x", "hi\n", "r1@y")},
			want:   []want{{"ff", 554, nil}, {"s", 250, nil}},
			got:    []got{{"b@x", "r1@y"}},
		},
		{
			name:   "DATA 451",
			faults: map[string]fakesmtp.Fault{"DATA a@x": serr(451, smtp.EnhancedCode{4, 3, 0}, "disk")},
			msgs:   []*Message{msg("a@x", "hi\n", "r1@y")},
			want:   []want{{"d", 451, nil}},
		},
		{
			name: "RCPT 5xx kept when the dot gets a 4xx",
			faults: map[string]fakesmtp.Fault{
				"RCPT gone@y": serr(550, smtp.EnhancedCode{5, 1, 1}, "unknown"),
				"DATA a@x":    serr(452, smtp.EnhancedCode{4, 3, 1}, "full"),
			},
			msgs: []*Message{msg("a@x", "hi\n", "gone@y", "ok@y")},
			want: []want{{"fd", 452, []int{550, 250}}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			be := &fakesmtp.Server{Faults: c.faults}
			s, err := Dial(context.Background(), testOptions(startSink(t, be, nil)))
			if err != nil {
				t.Fatal(err)
			}
			res, err := sendAll(t, s, c.msgs)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if len(res) != len(c.want) {
				t.Fatalf("%d results, want %d", len(res), len(c.want))
			}
			for i, w := range c.want {
				if st := statuses(res[i]); st != w.st || res[i].Reply.Code != w.code {
					t.Errorf("msg %d: %s %+v, want %s %d", i, st, res[i].Reply, w.st, w.code)
				}
				if w.rcpts != nil {
					for j, code := range w.rcpts {
						if res[i].RcptReplies[j].Code != code {
							t.Errorf("msg %d rcpt %d: reply %+v, want code %d", i, j, res[i].RcptReplies[j], code)
						}
					}
				}
			}
			msgs := be.Messages()
			if len(msgs) != len(c.got) {
				t.Fatalf("sink accepted %d messages, want %d", len(msgs), len(c.got))
			}
			for i, g := range c.got {
				if msgs[i].From != g.from || strings.Join(msgs[i].To, ",") != g.to {
					t.Errorf("sink msg %d: %s -> %v, want %s -> %s", i, msgs[i].From, msgs[i].To, g.from, g.to)
				}
			}
		})
	}
}

func TestGoSMTPContentAndParams(t *testing.T) {
	cases := []struct {
		name     string
		from     string
		to       string
		body     string
		eightBit bool
		wantData string
		wantBody smtp.BodyType
		wantUTF8 bool
	}{
		{"edge content", "a@x", "r@y", edgeBody, true, edgeWire, smtp.Body8BitMIME, false},
		{"7bit no BODY", "a@x", "r@y", "plain\n", false, "plain\r\n", "", false},
		{"utf8 sender", "jörg@x", "r@y", "hi\n", false, "hi\r\n", "", true},
		{"utf8 recipient", "a@x", "東京@y", "hi\n", false, "hi\r\n", "", true},
		{"empty content", "a@x", "r@y", "", false, "", "", false},
	}
	be := &fakesmtp.Server{}
	addr := startSink(t, be, func(s *smtp.Server) { s.EnableSMTPUTF8 = true; s.MaxMessageBytes = 1 << 20 })
	s, err := Dial(context.Background(), testOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Extensions()["SIZE"]; got != "1048576" {
		t.Errorf("SIZE extension = %q", got)
	}
	var msgs []*Message
	for _, c := range cases {
		m := msg(c.from, c.body, c.to)
		m.EightBit = c.eightBit
		msgs = append(msgs, m)
	}
	res, err := sendAll(t, s, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	got := be.Messages()
	if len(got) != len(cases) {
		t.Fatalf("sink got %d messages, want %d", len(got), len(cases))
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if st := statuses(res[i]); st != "s" {
				t.Errorf("status %s %+v", st, res[i].Reply)
			}
			g := got[i]
			if string(g.Data) != c.wantData {
				t.Errorf("data differs: got %q, want %q", trunc(string(g.Data)), trunc(c.wantData))
			}
			if g.Opts.Size != int64(len(c.wantData)) {
				t.Errorf("SIZE=%d, want %d", g.Opts.Size, len(c.wantData))
			}
			if g.Opts.Body != c.wantBody {
				t.Errorf("BODY=%q, want %q", g.Opts.Body, c.wantBody)
			}
			if g.Opts.UTF8 != c.wantUTF8 {
				t.Errorf("SMTPUTF8=%v, want %v", g.Opts.UTF8, c.wantUTF8)
			}
		})
	}
}

func TestGoSMTPLimits(t *testing.T) {
	be := &fakesmtp.Server{}
	addr := startSink(t, be, func(s *smtp.Server) { s.MaxMessageBytes = 100; s.MaxRecipients = 2 })
	s, err := Dial(context.Background(), testOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	// 99 octets with LF become 99+3 with CRLF: over the limit only once
	// line ends are counted.
	big := strings.Repeat("x", 32) + "\n" + strings.Repeat("x", 32) + "\n" + strings.Repeat("x", 32) + "\n"
	res, err := sendAll(t, s, []*Message{
		msg("a@x", big, "r@y"),
		msg("a@x", "hi\n", "r1@y", "r2@y", "r3@y"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if st := statuses(res[0]); st != "f" || !res[0].Local || res[0].Reply.Code != 0 || !strings.Contains(res[0].Reply.Text, "SIZE") {
		t.Errorf("oversize: %s %+v", st, res[0].Reply)
	}
	// Over the recipient limit: the rest go in a new transaction.
	if st := statuses(res[1]); st != "sss" {
		t.Errorf("rcpt limit: %s %+v", st, res[1].RcptReplies)
	}
	got := be.Messages()
	if len(got) != 2 || strings.Join(got[0].To, ",") != "r1@y,r2@y" || strings.Join(got[1].To, ",") != "r3@y" {
		t.Errorf("sink got %+v", got)
	}
}

func TestSendStopsOnReportAndNextErrors(t *testing.T) {
	boom := errors.New("boom")
	be := &fakesmtp.Server{}
	addr := startSink(t, be, nil)
	// A window of one: next is not called again before the report (the
	// wider window is TestPipelinedReportError's).
	o := testOptions(addr)
	o.MaxInflight = 1
	s, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	n := 0
	next := func() (*Message, error) { n++; return msg("a@x", "hi\n", "r@y"), nil }
	err = s.Send(context.Background(), next, func(*Message, Result) error { return boom })
	var se *Error
	if !errors.Is(err, boom) || errors.As(err, &se) || n != 1 {
		t.Errorf("report error: err=%v n=%d", err, n)
	}
	err = s.Send(context.Background(), func() (*Message, error) { return nil, boom },
		func(*Message, Result) error { t.Error("report called"); return nil })
	if !errors.Is(err, boom) || errors.As(err, &se) {
		t.Errorf("next error: %v", err)
	}
	// The session is still usable after both.
	res, err := sendAll(t, s, []*Message{msg("a@x", "hi\n", "r@y")})
	if err != nil || statuses(res[0]) != "s" {
		t.Errorf("after errors: %v %+v", err, res)
	}
	if len(be.Messages()) != 2 {
		t.Errorf("sink got %d messages, want 2", len(be.Messages()))
	}
}

func TestLocalRefusals(t *testing.T) {
	be := &fakesmtp.Server{}
	s, err := Dial(context.Background(), testOptions(startSink(t, be, nil)))
	if err != nil {
		t.Fatal(err)
	}
	bad := msg("a@x", "hi\n", "r@y")
	bad.Open = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
	res, err := sendAll(t, s, []*Message{
		msg("a\r\nRSET@x", "hi\n", "r@y"),
		msg("a@x", "hi\n", "r>@y"),
		msg("a@x", "hi\n"),
		bad,
		msg("a@x", "hi\n", "ok@y"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for i, want := range []string{"d", "d", "", "d", "s"} {
		if st := statuses(res[i]); st != want {
			t.Errorf("msg %d: %s %+v, want %s", i, st, res[i].Reply, want)
		}
		if i < 4 && (res[i].Reply.Code != 0 || res[i].Reply.Text == "") {
			t.Errorf("msg %d: want a local reason, got %+v", i, res[i].Reply)
		}
	}
	if len(be.Messages()) != 1 {
		t.Errorf("sink got %d messages, want 1", len(be.Messages()))
	}
}

// BenchmarkSend4K measures lock-step throughput on loopback: one session,
// 4 KiB bodies, one recipient each.
func BenchmarkSend4K(b *testing.B) {
	be := &fakesmtp.Server{Discard: true}
	addr := startSink(b, be, nil)
	body := strings.Repeat(strings.Repeat("b", 78)+"\n", 4096/79) + strings.Repeat("c", 4096%79)
	o := testOptions(addr)
	o.NoPipelining = true // go-smtp offers PIPELINING; see BenchmarkEngines
	s, err := Dial(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	m := msg("a@x", body, "r@y")
	b.ResetTimer()
	n := 0
	next := func() (*Message, error) {
		if n == b.N {
			return nil, io.EOF
		}
		n++
		return m, nil
	}
	report := func(_ *Message, r Result) error {
		if r.Rcpts[0] != Sent {
			return errors.New("not sent: " + r.Reply.Text)
		}
		return nil
	}
	start := time.Now()
	if err := s.Send(context.Background(), next, report); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.StopTimer()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}
