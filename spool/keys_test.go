package spool

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestKeysStable: in every layout a message's Key is the same in a dry
// run, in the run that settles part of it, and in the next run, which
// reads the rewritten entry (a compacted work file, a rewritten BSMTP
// file, .env or Envelope-to:); copies alike get ~1, ~2 in spool order;
// Message-ID and Exim's id come from the header.
func TestKeysStable(t *testing.T) {
	hdr := "Received: from x by mx.example with esmtp id 1xXKke-000173-05\n\tfor a@h.example; Sun, 01 Mar 2026 11:00:00 +0100\nMessage-ID: <k1@x.example>\nSubject: k\n\nbody\n"
	other := "Subject: other\n\nbody\n"
	three := []string{"r1@h.example", "r2@h.example", "r3@h.example"}
	layouts := []struct {
		name  string
		write func(t *testing.T, p string)
	}{
		{"bsmtp-file", func(t *testing.T, p string) {
			writeFile(t, p, tmsg{"s@x.example", three, hdr}.bsmtp()+tmsg{"s@x.example", []string{"o@h.example"}, other}.bsmtp()+
				tmsg{"s@x.example", []string{"o2@h.example"}, other}.bsmtp())
		}},
		{"bsmtp-dir", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(p, "q1"), tmsg{"s@x.example", three, hdr}.bsmtp())
			writeFile(t, filepath.Join(p, "q2"), tmsg{"s@x.example", []string{"o@h.example"}, other}.bsmtp())
			writeFile(t, filepath.Join(p, "q3"), tmsg{"s@x.example", []string{"o2@h.example"}, other}.bsmtp())
		}},
		{"maildir", func(t *testing.T, p string) {
			mkMaildir(t, p,
				[2]string{"new/1.M1P1.host", eximMaildirMsg("s@x.example", three, hdr)},
				[2]string{"new/2.M2P2.host", eximMaildirMsg("s@x.example", []string{"o@h.example"}, other)},
				[2]string{"new/3.M3P3.host", eximMaildirMsg("s@x.example", []string{"o2@h.example"}, other)})
		}},
		{"mailstore", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(p, "a.msg"), hdr)
			writeFile(t, filepath.Join(p, "a.env"), "s@x.example\n"+strings.Join(three, "\n")+"\n")
			writeFile(t, filepath.Join(p, "b.msg"), other)
			writeFile(t, filepath.Join(p, "b.env"), "s@x.example\no@h.example\n")
			writeFile(t, filepath.Join(p, "c.msg"), other)
			writeFile(t, filepath.Join(p, "c.env"), "s@x.example\no2@h.example\n")
		}},
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "h.example")
			l.write(t, p)
			keys := func(dry bool, settle func(*Message) []Outcome) []string {
				t.Helper()
				s := open(t, p, nil, dry)
				var ks []string
				for m := range messages(t, s) {
					ks = append(ks, m.Key)
					if m.To[0] == "r1@h.example" || m.To[0] == "r2@h.example" {
						if m.MessageID != "<k1@x.example>" || m.EximID != "1xXKke-000173-05" || m.Received.IsZero() {
							t.Errorf("header ids: %q %q %v", m.MessageID, m.EximID, m.Received)
						}
					}
					if err := s.Settle(m, settle(m), "550 no"); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				return ks
			}
			keep := all(Keep)
			dry := keys(true, keep)
			if len(dry) != 3 || dry[2] != dry[1]+"~1" || len(dry[0]) != 16 || dry[0] == dry[1] {
				t.Fatalf("dry run keys %q: want three, the last two alike with ~1", dry)
			}
			// r1 taken, r2 refused, r3 kept; o and o2 kept.
			first := keys(false, func(m *Message) []Outcome {
				out := make([]Outcome, len(m.To))
				if len(m.To) == 3 {
					out[0], out[1] = Sent, Failed
				}
				return out
			})
			second := keys(false, keep)
			// A rewritten entry may take another place among entries of
			// the same second; its key goes with it.
			sort.Strings(second)
			sorted := append([]string(nil), dry...)
			sort.Strings(sorted)
			if strings.Join(first, " ") != strings.Join(dry, " ") || strings.Join(second, " ") != strings.Join(sorted, " ") {
				t.Errorf("keys: dry run %q, first run %q, after the rewrite %q", dry, first, second)
			}
			if f := glob(t, filepath.Join(FailedDir(p), dry[0]+"-*.bsmtp")); len(f) != 1 {
				t.Errorf("failed copy not named after the key %s: %v", dry[0], f)
			}
		})
	}
}

// TestEximIDFromMailstoreName: a mailstore pair is named after Exim's
// message id; a message whose header lacks Exim's Received: field still
// gets it from there, and other names give none.
func TestEximIDFromMailstoreName(t *testing.T) {
	p := filepath.Join(t.TempDir(), "h.example")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(p, "1xXKkf-0001AA-0c-0001AD.msg"), "Subject: a\n\nA\n")
	writeFile(t, filepath.Join(p, "1xXKkf-0001AA-0c-0001AD.env"), "s@x.example\nr@h.example\n")
	writeFile(t, filepath.Join(p, "other.msg"), "Subject: b\n\nB\n")
	writeFile(t, filepath.Join(p, "other.env"), "s@x.example\nr@h.example\n")
	s := open(t, p, nil, true)
	ids := map[string]bool{}
	for m := range messages(t, s) {
		ids[m.EximID] = true
		if err := s.Settle(m, all(Keep)(m), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || !ids["1xXKkf-0001AA-0c"] || !ids[""] {
		t.Errorf("Exim ids %v, want 1xXKkf-0001AA-0c and none", ids)
	}
}

// TestLastFlushStaleTemp: a run killed while writing the state file
// leaves its temporary file; the next write removes it.
func TestLastFlushStaleTemp(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, strings.TrimSuffix(tempPattern(statePath(dir, "h.example")), "*")+"123")
	writeFile(t, stale, "{")
	other := filepath.Join(dir, strings.TrimSuffix(tempPattern(statePath(dir, "h.example.org")), "*")+"456")
	writeFile(t, other, "{")
	if err := WriteLastFlush(dir, "h.example", LastFlush{Exit: 75, Sent: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file left: %v", err)
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("another host's temporary file removed: %v", err)
	}
	l, err := ReadLastFlush(dir, "h.example")
	if err != nil || l == nil || l.Exit != 75 || l.Sent != 1 {
		t.Errorf("read back %+v %v", l, err)
	}
}

// TestContentKeyAsBefore: the streamlined digest and header scan give
// the very keys and header fields the first version did (a full copy,
// strings.ReplaceAll and net/textproto), so ids in failed copies, logs and
// state files written before stay valid. FuzzContentKey goes further.
func TestContentKeyAsBefore(t *testing.T) {
	long := strings.Repeat("x", KeyPrefix)
	for _, c := range []string{
		"",
		"\r\n",
		"\r",
		"a\r\r\nb\r\n\r\n",
		"Received: from x by mx.example with esmtp id 1xXKke-000173-05\r\n\tfor a@h.example; Sun, 01 Mar 2026 11:00:00 +0100\r\nMessage-ID:  <k1@x.example> \r\n\r\nbody\r\n",
		"message-id: <lower@x>\nreceived: by y; Mon, 02 Mar 2026 10:00:00 +0000\nReceived: by z; Tue, 03 Mar 2026 10:00:00 +0000\n\n",
		"Subject: a\nbroken line\nMessage-ID: <after-damage@x>\n\n",
		" Message-ID: <leading-space@x>\n\n",
		"Bad Name: v\nMessage-ID: <x@x>\n\n",
		"Received: by x\n  id 1xXKkf-0001AA-0c\n  ; Sun, 01 Mar 2026 11:00:00 +0100\nMessage-ID:\n <folded@x>\n\n",
		"Subject: " + long + "\r\nMessage-ID: <beyond@x>\r\n\r\n",
		long[:KeyPrefix-1] + "\r\n tail",
		"Message-ID: <no-end@x>",
	} {
		checkKeyAsBefore(t, c)
	}
}

func FuzzContentKey(f *testing.F) {
	f.Add("Received: by x; Sun, 01 Mar 2026 11:00:00 +0100\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n")
	f.Add("a\r\r\n\r\nb")
	f.Fuzz(func(t *testing.T, content string) {
		checkKeyAsBefore(t, content)
	})
}

func checkKeyAsBefore(t *testing.T, content string) {
	t.Helper()
	m := &Message{From: "s@x.example", Size: int64(len(content)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(content)), nil
	}}
	k := &keyed{}
	for range 2 { // the second time with the reused buffer
		key, h, err := k.contentKey(m)
		if err != nil {
			t.Fatal(err)
		}
		wantKey, wantHead := keyBefore(m, content)
		if key != wantKey || h.messageID != wantHead.messageID || h.eximID != wantHead.eximID || !h.received.Equal(wantHead.received) {
			t.Fatalf("content %q: got %s %+v, the first version gave %s %+v", content, key, h, wantKey, wantHead)
		}
	}
}

// keyBefore is contentKey and parseHead as first written.
func keyBefore(m *Message, content string) (string, head) {
	buf := []byte(content)
	if len(buf) > KeyPrefix {
		buf = buf[:KeyPrefix]
	}
	d := sha256.New()
	fmt.Fprintf(d, "%s\x00%d\x00", m.From, m.Size)
	d.Write(bytes.ReplaceAll(buf, []byte("\r\n"), []byte("\n")))
	var h head
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(buf)))
	mh, _ := tp.ReadMIMEHeader()
	if rs := mh["Received"]; len(rs) > 0 {
		top := rs[0]
		if i := strings.LastIndexByte(top, ';'); i >= 0 {
			if t, err := mail.ParseDate(strings.TrimSpace(top[i+1:])); err == nil {
				h.received = t
			}
		}
		if sm := eximIDRe.FindStringSubmatch(top); sm != nil {
			h.eximID = sm[1]
		}
	}
	h.messageID = strings.TrimSpace(mh.Get("Message-Id"))
	return hex.EncodeToString(d.Sum(nil)[:8]), h
}
