package serve

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"etrnflush/config"
)

// FuzzParseCommand checks the parsers a client's line goes through: a
// command that parses has a verb of letters in upper case and an argument
// without control characters or surrounding space; an ETRN or ATRN
// argument that is accepted names only valid, lower-case host names, so
// nothing like a path, an option or a second word can reach a file name
// or a child's argument list.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"EHLO client.example", "ETRN h1.example", "etrn @Example.NET", "ETRN #queue-7",
		"ETRN ../../etc/passwd", "ETRN -x", "ETRN a b", "ATRN", "ATRN a.example,b.example",
		"ATRN a.example,,b", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "\tNOOP\t", "ETRN h\x00x",
		"ETRN h\xc3\xa9.example", "QUIT", "1234", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		verb, arg, err := parseCommand(line)
		if err != nil {
			return
		}
		if verb == "" || len(verb) > 16 || strings.ToUpper(verb) != verb {
			t.Fatalf("verb %q", verb)
		}
		for i := 0; i < len(verb); i++ {
			if verb[i] < 'A' || verb[i] > 'Z' {
				t.Fatalf("verb %q holds %q", verb, verb[i])
			}
		}
		if strings.Trim(arg, " \t") != arg {
			t.Fatalf("argument %q has surrounding space", arg)
		}
		for i := 0; i < len(arg); i++ {
			if (arg[i] < 0x20 && arg[i] != '\t') || arg[i] >= 0x7f {
				t.Fatalf("argument %q holds %q", arg, arg[i])
			}
		}
		checkName := func(n string) {
			if got, err := config.CheckHostName(n); err != nil || got != n {
				t.Fatalf("accepted name %q: %q, %v", n, got, err)
			}
			if strings.ContainsAny(n, "/ \t@#") || strings.HasPrefix(n, "-") || strings.Contains(n, "..") {
				t.Fatalf("accepted name %q", n)
			}
		}
		if kind, name, err := parseETRN(arg); err == nil {
			checkName(name)
			switch kind {
			case etrnHost, etrnDomain, etrnQueue:
			default:
				t.Fatalf("kind %q", kind)
			}
		}
		if names, err := parseATRN(arg); err == nil {
			seen := map[string]bool{}
			for _, n := range names {
				checkName(n)
				if seen[n] {
					t.Fatalf("%q twice in %q", n, names)
				}
				seen[n] = true
			}
		}
	})
}

// FuzzConversation feeds whatever a client might send to a real
// conversation and checks that the server ends, that every reply line is
// a well-formed SMTP reply, and that a flush is started only for a host
// it knows.
func FuzzConversation(f *testing.F) {
	for _, s := range []string{
		"EHLO c\r\nETRN h1.example\r\nQUIT\r\n",
		"ETRN @example.net\nETRN #cust7\nETRN ../x\r\n",
		"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\n*\r\nAUTH PLAIN\r\n\r\nATRN\r\n",
		"NOOP " + strings.Repeat("x", 600) + "\r\nHELP\r\n",
		"\x00\xff\r\n\r\n\n\rETRN\r\n",
	} {
		f.Add([]byte(s))
	}
	fx := newFixture(f, trustLocal+"\netrn_limit = 0\nidle_timeout = \"5s\"\nallow_plaintext_auth = true", hostsConf)
	fx.hold("h1.example", 1)
	fx.holdAt(filepath.Join(fx.dir, "queues", "cust7"), "queued.example", 1)
	known := map[string]bool{"h1.example": true, "queued.example": true}
	f.Fuzz(func(t *testing.T, input []byte) {
		srv, cli := socketPair(t)
		done := make(chan error, 1)
		go func() { done <- Serve(context.Background(), srv, fx.cfg) }()
		if err := cli.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = cli.Write(input)
			_ = cli.(*net.TCPConn).CloseWrite()
		}()
		br := bufio.NewReader(cli)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				if l != "" {
					t.Fatalf("unterminated reply %q", l)
				}
				break
			}
			if len(l) < 6 || !strings.HasSuffix(l, "\r\n") || l[0] < '2' || l[0] > '5' ||
				(l[3] != ' ' && l[3] != '-') || strings.ContainsAny(l[:len(l)-2], "\r\n\x00") {
				t.Fatalf("malformed reply line %q", l)
			}
		}
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("Serve did not end")
		}
		if err := cli.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range fx.calls() {
			if !known[c.host] || c.to != "" {
				t.Fatalf("started a flush of %q to %q", c.host, c.to)
			}
		}
	})
}
