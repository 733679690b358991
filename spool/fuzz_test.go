package spool

import (
	"fmt"
	"os"
	"path/filepath"
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
