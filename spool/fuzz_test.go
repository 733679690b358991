package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParseRecord: a journal line either is a record that formats back to
// a line parsing to the same record, or is ignored; never a panic.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"0 s\n", "289 skf\n", "12 q400\n", "12 q12\n", "-1 s\n", "7 \n", "run\n", "5 sx\n", "9223372036854775807 q1\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, ok := parseRecord(line)
		if !ok {
			return
		}
		if r.off < 0 || r.st == "" {
			t.Fatalf("parseRecord(%q) = %+v", line, r)
		}
		if end := r.quarantinedTo(); r.st[0] == 'q' && end <= r.off {
			t.Fatalf("parseRecord(%q): quarantine end %d not after %d", line, end, r.off)
		}
		again, ok := parseRecord([]byte(fmt.Sprintf("%d %s\n", r.off, r.st)))
		if !ok || again != r {
			t.Fatalf("record %+v does not survive formatting: %+v, %v", r, again, ok)
		}
	})
}

// FuzzLoadJournal: a journal torn or garbled by a crash or a bad disk loads
// without a panic, and the segments it finds lie inside the file.
func FuzzLoadJournal(f *testing.F) {
	f.Add([]byte("run\n0 s\n289 kk\n"))
	f.Add([]byte("run\n0 s\nrun\n0 k"))
	f.Add([]byte("0 s\nrun\n\n\nrun\n12 q40\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		p := filepath.Join(dir, "j")
		data := append([]byte(journalHeader(1, 2)+"\n"), body...)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		j, stale, err := loadJournal(p, 1, 2)
		if err != nil || stale {
			return // too long a line is reported, not guessed at
		}
		if j.valid > int64(len(data)) {
			t.Fatalf("valid %d beyond the %d-octet file", j.valid, len(data))
		}
		for _, s := range j.segs {
			if s[0] > s[1] || s[1] > j.valid {
				t.Fatalf("segment %v outside [0,%d]", s, j.valid)
			}
		}
	})
}

// FuzzParseMailstoreEnv: a .env either parses into addresses that pass
// the BSMTP rules and writes back to exactly the same octets (so that a
// rewrite with every recipient pending changes nothing), or is refused
// with a reason; never a panic.
func FuzzParseMailstoreEnv(f *testing.F) {
	f.Add([]byte("alice@sender.example\nbob@h1.example\n"), 0, 0)
	f.Add([]byte("\npostmaster@h1.example\n"), 0, 0)
	f.Add([]byte("X-Prefix: /var/spool/x\n\nr@h.example\nX-Suffix: end of envelope\n"), 1, 1)
	f.Add([]byte("j\xc3\xb6rg@sender.example\n\xe7\x94\xa8@h1.example\nbob@h1.example\n"), 0, 0)
	f.Add([]byte("s@x\nr\r@h\n"), 0, 0)
	f.Fuzz(func(t *testing.T, raw []byte, pre, suf int) {
		if pre < 0 || suf < 0 || pre > 5 || suf > 5 {
			return
		}
		env, why := parseMailstoreEnv(raw, pre, suf)
		if why != "" {
			return
		}
		if len(env.To) == 0 {
			t.Fatalf("%q: parsed without recipients", raw)
		}
		if env.From != "" && checkEnvAddress([]byte(env.From)) != "" {
			t.Fatalf("%q: bad sender %q accepted", raw, env.From)
		}
		for _, a := range env.To {
			if checkEnvAddress([]byte(a)) != "" {
				t.Fatalf("%q: bad recipient %q accepted", raw, a)
			}
		}
		if back := env.bytes(); string(back) != string(raw) {
			t.Fatalf("%q writes back as %q", raw, back)
		}
	})
}

// FuzzMaildirEnvelope: the envelope fields on top of a message either
// give valid addresses, a length inside the input, and survive the
// Envelope-to: rewrite a partial acceptance makes, or are refused with a
// reason; never a panic.
func FuzzMaildirEnvelope(f *testing.F) {
	f.Add([]byte("Return-path: <a@x.example>\nEnvelope-to: b@h.example,\n c@h.example\nDelivery-date: now\nReceived: x\n\nbody\n"), false, "")
	f.Add([]byte("Return-path: <>\nEnvelope-to: \"q,q\"@h.example\n\n"), false, "")
	f.Add([]byte("Return-Path: <a@x.example>\nDelivered-To: isp-ppp-bob@h.example\nDelivered-To: x@y\n\nb\n"), true, "isp-ppp-")
	f.Add([]byte("Envelope-to: b@h.example\nReturn-path: <a@x.example>\nEnvelope-to: c@h.example\n"), false, "")
	f.Add([]byte("Return-path: <a@x.example>\r\nEnvelope-to: b@h.example\r\n\r\nb\r\n"), false, "")
	f.Fuzz(func(t *testing.T, in []byte, deliveredTo bool, prefix string) {
		env, fields, n, why, err := readMaildirEnvelope(bytes.NewReader(in), deliveredTo, prefix)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if why != "" {
			return
		}
		if n <= 0 || n > int64(len(in)) || len(env.To) == 0 {
			t.Fatalf("%q: length %d, envelope %+v", in, n, env)
		}
		var hdr []byte
		for _, fl := range fields {
			hdr = append(hdr, fl.raw...)
		}
		if string(hdr) != string(in[:n]) {
			t.Fatalf("%q: fields %q are not the first %d octets", in, hdr, n)
		}
		for _, a := range append([]string{env.From}, env.To...) {
			if a != "" && checkEnvAddress([]byte(a)) != "" {
				t.Fatalf("%q: bad address %q accepted", in, a)
			}
		}
		if deliveredTo {
			return
		}
		// The rewrite with every recipient reads back the same envelope.
		var re []byte
		for _, fl := range fields {
			if fl.name == "envelope-to" {
				re = append(re, fl.rawName+": "+strings.Join(env.To, ",\n ")+"\n"...)
			} else {
				re = append(re, fl.raw...)
			}
		}
		re = append(re, in[n:]...)
		env2, _, _, why2, err := readMaildirEnvelope(bytes.NewReader(re), false, "")
		if err != nil || why2 != "" || env2.From != env.From || !slices.Equal(env2.To, env.To) {
			t.Fatalf("%q: rewritten as %q reads %+v %q %v, want %+v", in, re, env2, why2, err, env)
		}
	})
}
