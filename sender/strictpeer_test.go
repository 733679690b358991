package sender

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// strictPeer is a byte-level SMTP server for the pipelined engine's tests.
// Unlike go-smtp it is as strict as Exim where that matters to a
// pipelining client: a MAIL inside an open transaction gets 503 (so a
// missing RSET shows), a failed BDAT leaves the transaction open and
// refuses the chunks after it, and DATA without a valid recipient gets 554.
// It reads every BDAT chunk, as RFC 3030 requires, and can hold its
// replies to see how far the client runs ahead.
//
// Fault keys: "MAIL <from>", "RCPT <to>", "DATA <from>" (the reply to
// DATA), "DOT <from>" (the reply after the content, by DATA or BDAT LAST),
// "CHUNK <from>" (the reply to the first chunk that is not the last).
// Values: a reply line ("451 4.3.0 later"), "drop" (close instead of
// replying), "hang" (never reply; wait for the test's release), "421"
// (reply 421 and close), "354" (DATA only: accept it even without a valid
// recipient).
type strictPeer struct {
	exts   []string
	faults map[string]string
	split  bool // write replies a few octets at a time
	// maxRcpts, when set, answers RCPTs past it in a transaction with
	// 452 4.5.3, as Exim's recipients_max does.
	maxRcpts int
	multi    bool          // every reply on two lines
	delay    time.Duration // before each reply
	// hold: keep every reply until this many MAILs arrived and the client
	// then went quiet, to measure how far it runs ahead.
	hold int
	// holdThen, when set, replaces the release: "drop" closes after
	// writing the first holdReplies held replies, "hang" writes those and
	// then waits for the test's release.
	holdThen    string
	holdReplies int

	mu        sync.Mutex
	got       []string // "from>to,to" for each message taken
	data      [][]byte // content of each message taken
	cmds      []string // every command line, RSET included
	heldMails int      // MAILs seen while holding
	heldBytes int64    // chunk octets seen while holding
	overrun   string   // what the client sent after it should have waited
	// protoErrs lists the commands Exim would log as "SMTP protocol
	// error" and count towards smtp_max_synprot_errors; past maxProtoErrs
	// the peer drops the session as Exim does. Every test fails on one
	// unless allowProtoErrs is set.
	protoErrs      []string
	allowProtoErrs bool
}

// maxProtoErrs is Exim's default smtp_max_synprot_errors.
const maxProtoErrs = 3

func (s *strictPeer) accepted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func (s *strictPeer) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

func (s *strictPeer) render(line string) string {
	if !s.multi || len(line) < 4 {
		return line + "\r\n"
	}
	return line[:3] + "-first line of " + line[:3] + "\r\n" + line + "\r\n"
}

func (s *strictPeer) write(p *peer, lines []string) bool {
	if len(lines) == 0 {
		return true
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(s.render(l))
	}
	out := []byte(b.String())
	if !s.split {
		_, err := p.c.Write(out)
		return err == nil
	}
	for len(out) > 0 {
		n := min(3, len(out))
		if _, err := p.c.Write(out[:n]); err != nil {
			return false
		}
		out = out[n:]
		time.Sleep(200 * time.Microsecond)
	}
	return true
}

func addrArg(line string) string {
	i, j := strings.IndexByte(line, '<'), strings.IndexByte(line, '>')
	if i < 0 || j < i {
		return ""
	}
	return line[i+1 : j]
}

// serve runs the dialogue until QUIT, a fault that ends it, or an error.
func (s *strictPeer) serve(p *peer) {
	exts := s.exts
	if exts == nil {
		exts = []string{"PIPELINING", "CHUNKING", "8BITMIME", "SIZE 100000000"}
	}
	if !s.write(p, []string{"220 peer.test ESMTP"}) {
		return
	}
	var held []string
	holding := false // from the first MAIL on
	reply := func(lines ...string) bool {
		if holding {
			held = append(held, lines...)
			return true
		}
		return s.write(p, lines)
	}
	var (
		from      string
		inTxn     bool
		rcpts     []string
		body      bytes.Buffer
		chunkSeen bool
		bdatBad   bool // a chunk failed: the rest are refused until RSET
		// As Exim: a refusal that a pipelining client could not have
		// foreseen is not an error, anything else is (smtp_in.c: RCPT
		// right after a refused MAIL, DATA or BDAT right after a RCPT).
		prevVerb string
		rejMail  bool // the last MAIL was refused, and only RCPTs came since
	)
	// protoErr answers a command Exim counts as a protocol error, and
	// drops the session past the limit, as Exim does.
	protoErr := func(line, text string) bool {
		s.mu.Lock()
		s.protoErrs = append(s.protoErrs, line)
		n := len(s.protoErrs)
		s.mu.Unlock()
		if n > maxProtoErrs {
			reply("554 5.0.0 Too many syntax or protocol errors")
			if holding {
				s.write(p, held)
			}
			return false
		}
		return reply(text)
	}
	reset := func() {
		from, inTxn, rcpts, chunkSeen, bdatBad = "", false, nil, false, false
		body.Reset()
	}
	// fault answers a faulted step; handled false means no fault.
	fault := func(key string) (handled, goOn bool) {
		f, ok := s.faults[key]
		switch {
		case !ok:
			return false, true
		case f == "drop":
			return true, false
		case f == "hang":
			<-p.release
			return true, false
		case f == "421":
			reply("421 4.3.2 closing, bye")
			if holding {
				s.write(p, held)
			}
			return true, false
		case f == "354":
			return false, true
		}
		return true, reply(f)
	}
	take := func() {
		s.mu.Lock()
		s.got = append(s.got, from+">"+strings.Join(rcpts, ","))
		s.data = append(s.data, bytes.Clone(body.Bytes()))
		s.mu.Unlock()
	}
	for {
		wait := 5 * time.Second
		if holding && s.heldMails >= s.hold {
			// The window is full: the client must now wait for replies.
			// Quiet this long means it does; shorter misreads a client
			// slowed by a loaded machine (-race, parallel packages).
			wait = time.Second
		}
		if err := p.c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return
		}
		line, err := p.br.ReadString('\n')
		var ne net.Error
		if holding && s.heldMails >= s.hold && errors.As(err, &ne) && ne.Timeout() && line == "" {
			holding = false
			if s.holdThen != "" {
				s.write(p, held[:min(s.holdReplies, len(held))])
				if s.holdThen == "hang" {
					<-p.release
				}
				return
			}
			if !s.write(p, held) {
				return
			}
			held = nil
			continue
		}
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		verb, _, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		s.mu.Lock()
		s.cmds = append(s.cmds, line)
		if holding && s.heldMails >= s.hold && verb == "MAIL" && s.overrun == "" {
			s.overrun = fmt.Sprintf("MAIL number %d before any reply", s.heldMails+1)
		}
		s.mu.Unlock()
		ok := true
		prev := prevVerb
		prevVerb = verb
		if verb != "RCPT" && verb != "MAIL" {
			rejMail = false
		}
		switch verb {
		case "EHLO":
			lines := []string{"250-peer.test"}
			for i, e := range exts {
				sep := "-"
				if i == len(exts)-1 {
					sep = " "
				}
				lines = append(lines, "250"+sep+e)
			}
			ok = reply(lines...)
		case "RSET":
			reset()
			ok = reply("250 2.0.0 reset")
		case "MAIL":
			if s.hold > 0 && len(held) == 0 && s.heldMails == 0 {
				holding = true
			}
			if holding {
				s.heldMails++
			}
			rejMail = false
			if inTxn {
				ok = protoErr(line, "503 5.5.1 sender already given")
				break
			}
			f := addrArg(line)
			if h, g := fault("MAIL " + f); h {
				rejMail = true
				ok = g
				break
			}
			from, inTxn = f, true
			ok = reply("250 2.1.0 ok")
		case "RCPT":
			if !inTxn {
				if rejMail {
					ok = reply("503 5.5.1 sender not yet given")
				} else {
					ok = protoErr(line, "503 5.5.1 sender not yet given")
				}
				break
			}
			to := addrArg(line)
			if h, g := fault("RCPT " + to); h {
				ok = g
				break
			}
			if s.maxRcpts > 0 && len(rcpts) >= s.maxRcpts {
				ok = reply("452 4.5.3 Too many recipients")
				break
			}
			rcpts = append(rcpts, to)
			ok = reply("250 2.1.5 ok")
		case "DATA":
			if len(rcpts) == 0 && s.faults["DATA "+from] != "354" {
				if prev == "RCPT" {
					ok = reply("503 5.5.1 valid RCPT command must precede DATA")
				} else {
					ok = protoErr(line, "503 5.5.1 valid RCPT command must precede DATA")
				}
				break
			}
			if h, g := fault("DATA " + from); h {
				ok = g
				break
			}
			if !reply("354 go ahead") {
				return
			}
			if holding {
				s.write(p, held)
				held, holding = nil, false
			}
			wire, _, complete := p.data(true)
			if !complete {
				return
			}
			body.Write(wire)
			if len(rcpts) == 0 {
				ok = reply("554 5.5.1 no valid recipients, content dropped")
				reset()
				break
			}
			if h, g := fault("DOT " + from); h {
				ok = g
				reset()
				break
			}
			take()
			reset()
			ok = reply("250 2.0.0 queued")
		case "BDAT":
			f := strings.Fields(line)
			if len(f) < 2 {
				ok = reply("501 5.5.4 no size")
				break
			}
			n, err := strconv.Atoi(f[1])
			if err != nil {
				ok = reply("501 5.5.4 bad size")
				break
			}
			last := len(f) == 3 && strings.EqualFold(f[2], "LAST")
			chunk := make([]byte, n)
			if _, err := io.ReadFull(p.br, chunk); err != nil {
				return
			}
			if holding {
				s.mu.Lock()
				s.heldBytes += int64(n)
				s.mu.Unlock()
			}
			switch {
			case !inTxn || len(rcpts) == 0:
				// Exim: free only right after a RCPT, so only once per
				// transaction.
				if prev == "RCPT" {
					ok = reply("503 5.5.1 valid RCPT command must precede BDAT")
				} else {
					ok = protoErr(line, "503 5.5.1 valid RCPT command must precede BDAT")
				}
			case bdatBad:
				ok = reply("503 5.5.1 previous chunk failed")
			case !last && !chunkSeen && s.faults["CHUNK "+from] != "":
				chunkSeen = true
				bdatBad = true
				if h, g := fault("CHUNK " + from); h {
					ok = g
				}
			case !last:
				chunkSeen = true
				body.Write(chunk)
				ok = reply("250 2.0.0 chunk ok")
			default:
				body.Write(chunk)
				if h, g := fault("DOT " + from); h {
					ok = g
					bdatBad = true
					break
				}
				take()
				reset()
				ok = reply("250 2.0.0 queued")
			}
		case "QUIT":
			reply("221 2.0.0 bye")
			if holding {
				s.write(p, held)
			}
			return
		default:
			ok = reply("500 5.5.2 what?")
		}
		if !ok {
			return
		}
	}
}

// runStrict serves one connection with s. The test fails if the client
// sent a command that Exim counts as a protocol error.
func runStrict(t *testing.T, s *strictPeer) (string, func()) {
	t.Helper()
	addr, release := runPeer(t, s.serve)
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.protoErrs) > 0 && !s.allowProtoErrs {
			t.Errorf("the client sent %d commands Exim counts as protocol errors: %q", len(s.protoErrs), s.protoErrs)
		}
	})
	return addr, release
}
