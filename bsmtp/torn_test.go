package bsmtp

import (
	"bytes"
	"strings"
	"testing"
)

// A torn append: a delivery killed mid-write, then the next one appended
// right after the fragment. The reader must point at the second
// delivery's envelope wherever the cut fell, so that no caller has to
// take it for part of the first message's data.
func TestReaderFindsInnerEnvelope(t *testing.T) {
	bob := "MAIL FROM:<s@x.example>\nRCPT TO:<bob@h.example>\nRCPT TO:<carol@h.example>\nDATA\nSubject: for bob\n\nbob's text\n.\n"
	alice := "MAIL FROM:<s@x.example>\nRCPT TO:<alice@h.example>\nDATA\nReceived: by x\nSubject: for alice\n\nalice's line one\nalice's line two\n"
	tests := []struct {
		name   string
		frag   string
		damage bool // the fragment and bob read as damage, not as one message
	}{
		{"cut in the body at a line end", alice, false},
		{"cut in the body inside a line", alice[:len(alice)-5], false},
		{"cut in the headers inside a line", alice[:strings.Index(alice, "alice\n")], false},
		{"cut in the headers at a line end", alice[:strings.Index(alice, "Subject")], false},
		{"cut right after DATA", alice[:strings.Index(alice, "Received")], false},
		{"cut inside a RCPT line", alice[:strings.Index(alice, "alice@")+3], true},
		{"cut after a RCPT line", alice[:strings.Index(alice, "DATA")], true},
		{"cut inside the MAIL line", alice[:10], true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := okLF + tc.frag + bob + okLF2
			es := readAll(t, []byte(in))
			checkEntries(t, []byte(in), es)
			if len(es) != 3 || es[0].Msg == nil || es[2].Msg == nil {
				t.Fatalf("entries %v, want ok, fragment, ok2", describeAll(es))
			}
			e := es[1]
			if (e.Msg == nil) != tc.damage {
				t.Errorf("fragment read as message=%v, want %v", e.Msg != nil, !tc.damage)
			}
			want := int64(len(okLF) + len(tc.frag))
			if e.Inner == nil || e.Inner.Off != want {
				t.Fatalf("Inner = %+v, want offset %d", e.Inner, want)
			}
			if wl := 1 + strings.Count(in[:want], "\n"); e.Inner.Line != wl {
				t.Errorf("Inner.Line = %d, want %d", e.Inner.Line, wl)
			}
			// Read on from there: bob's message, whole.
			rest := readAll(t, []byte(in[want:e.End]))
			if len(rest) != 1 || rest[0].Msg == nil || strings.Join(rest[0].Msg.To, ",") != "bob@h.example,carol@h.example" || rest[0].Inner != nil {
				t.Errorf("from Inner: %v, want bob's message alone", describeAll(rest))
			}
		})
	}
}

// What is not an envelope must not be found as one.
func TestReaderNoInnerEnvelope(t *testing.T) {
	for _, data := range []string{
		"Subject: x\n\nMAIL FROM:<a@b>\nquoted text\nDATA\n",
		"Subject: x\n\nMAIL FROM:<a@b>\nDATA\n",
		"Subject: x\n\nRCPT TO:<a@b>\nDATA\n",
		"Subject: x\n\nMAIL FROM:<a@b> SIZE=1\nRCPT TO:<c@d>\nDATA\n",
		"Subject: x\n\nsee MAIL FROM:<a@b>\nRCPT TO:<c@d> and then\nDATA\n",
	} {
		in := "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n" + data + ".\n"
		es := readAll(t, []byte(in))
		if len(es) != 1 || es[0].Msg == nil || es[0].Inner != nil {
			t.Errorf("%q: %v inner=%+v, want one message and no envelope", data, describeAll(es), es[0].Inner)
		}
	}
}

func TestReaderHeaderProblem(t *testing.T) {
	tests := []struct{ data, want string }{
		{"Subject: x\nX-A : spaced before colon\n\tfolded\n\nbody\n", ""},
		{"..X-Dot: stuffed header\n\nbody\n", ""},
		{"Subject: only headers\n", ""},
		{"", ""},
		{"\nno headers at all\n", ""},
		{"Subject: x\nSubjMAIL FROM:<b@x>\n\nbody\n", "line 5: not a header line"},
		{"just text\n", "line 4: not a header line"},
		{" folded first\n\n", "line 4: the data begins with a folded line"},
		{"Subject: x\nRCPT TO:<b@y>\n\n", "line 5: not a header line"},
		{"Subject: x\n: no name\n\n", "line 5: not a header line"},
	}
	for _, tc := range tests {
		in := "MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n" + tc.data + ".\n"
		es := readAll(t, []byte(in))
		if len(es) != 1 || es[0].Msg == nil {
			t.Fatalf("%q: %v", tc.data, describeAll(es))
		}
		got := es[0].Msg.HeaderProblem
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%q: HeaderProblem %q, want %q", tc.data, got, tc.want)
		}
	}
}

func describeAll(es []Entry) []string {
	var d []string
	for _, e := range es {
		d = append(d, describe(e))
	}
	return d
}

func TestLastIndex(t *testing.T) {
	for _, s := range []string{"", "MAIL FROM:", "xMAIL FROM:y", "MAIL FROM:MAIL FROM:", "aMAIL FROM:bMAIL FROM:c", "MAIL FROM", "MMAIL FROM:"} {
		if got, want := lastIndex([]byte(s), mailFrom), bytes.LastIndex([]byte(s), mailFrom); got != want {
			t.Errorf("lastIndex(%q) = %d, want %d", s, got, want)
		}
	}
}
