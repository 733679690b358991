package bsmtp

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

const fixtureDir = "../testdata/exim"

// expectedFile is one entry of expected.json, the oracle written when Exim
// produced the fixtures.
type expectedFile struct {
	Format   string `json:"format"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Messages []struct {
		Sender         string   `json:"sender"`
		Recipients     []string `json:"recipients"`
		DataLen        int64    `json:"data_len"`
		DataSHA256     string   `json:"data_sha256"`
		DataLineEnding string   `json:"data_line_ending"`
	} `json:"messages"`
	NonEnvelopeLines []string `json:"non_envelope_lines"`
}

// bsmtpFixtures returns expected.json's BSMTP entries by path, failing if
// there are none or if a known variant is missing.
func bsmtpFixtures(t testing.TB) map[string]expectedFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]expectedFile
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	out := map[string]expectedFile{}
	for k, v := range all {
		if strings.HasPrefix(k, "bsmtp/") {
			out[k] = v
		}
	}
	for _, variant := range []string{"bsmtp/file/", "bsmtp/file-crlf/", "bsmtp/file-quirk/", "bsmtp/dir/"} {
		found := false
		for k := range out {
			found = found || strings.HasPrefix(k, variant)
		}
		if !found {
			t.Fatalf("expected.json has no %s fixture", variant)
		}
	}
	return out
}

func sortedKeys(m map[string]expectedFile) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestGolden reads every BSMTP file Exim wrote and compares it with the
// oracle: envelopes, data digests after unstuffing, line ends, and the
// skipped message_prefix lines.
func TestGolden(t *testing.T) {
	fixtures := bsmtpFixtures(t)
	for _, name := range sortedKeys(fixtures) {
		want := fixtures[name]
		t.Run(name, func(t *testing.T) {
			input, err := os.ReadFile(filepath.Join(fixtureDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if sum, n := digest(t, bytes.NewReader(input)); sum != want.SHA256 || n != want.Size {
				t.Fatalf("fixture changed: sha256 %s size %d, expected.json says %s %d", sum, n, want.SHA256, want.Size)
			}
			es := readAll(t, input)
			checkEntries(t, input, es)
			if len(es) != len(want.Messages) {
				t.Fatalf("%d entries, want %d messages", len(es), len(want.Messages))
			}
			var skipped []string
			for i, e := range es {
				if e.Msg == nil {
					t.Fatalf("entry %d is damage: %s", i, e.Damage)
				}
				m, w := e.Msg, want.Messages[i]
				skipped = append(skipped, m.Skipped...)
				if m.From != w.Sender || !slices.Equal(m.To, w.Recipients) {
					t.Errorf("message %d: envelope <%s> %q, want <%s> %q", i, m.From, m.To, w.Sender, w.Recipients)
				}
				if got := map[bool]string{false: "LF", true: "CRLF"}[m.CRLF]; got != w.DataLineEnding {
					t.Errorf("message %d: line ends %s, want %s", i, got, w.DataLineEnding)
				}
				sum, n := digest(t, Unstuff(bytes.NewReader(input[m.DataStart:m.DataEnd])))
				if sum != w.DataSHA256 || n != w.DataLen || m.Size != w.DataLen {
					t.Errorf("message %d: data sha256 %s len %d Size %d, want %s %d", i, sum, n, m.Size, w.DataSHA256, w.DataLen)
				}
			}
			if !slices.Equal(skipped, want.NonEnvelopeLines) {
				t.Errorf("skipped lines %q, want %q", skipped, want.NonEnvelopeLines)
			}
		})
	}
}

// TestRoundTrip parses each fixture, writes it again both ways and parses
// the result: the envelopes and contents must survive, and for a file with
// no message_prefix the output must be the input, octet for octet.
func TestRoundTrip(t *testing.T) {
	fixtures := bsmtpFixtures(t)
	for _, name := range sortedKeys(fixtures) {
		t.Run(name, func(t *testing.T) {
			input, err := os.ReadFile(filepath.Join(fixtureDir, name))
			if err != nil {
				t.Fatal(err)
			}
			es := readAll(t, input)
			var stuffed, restuffed bytes.Buffer
			ws, wr := NewWriter(&stuffed), NewWriter(&restuffed)
			prefixed := false
			for _, e := range es {
				m := e.Msg
				prefixed = prefixed || len(m.Skipped) > 0
				data := input[m.DataStart:m.DataEnd]
				if err := ws.WriteStuffed(m.Envelope, bytes.NewReader(data), m.CRLF); err != nil {
					t.Fatalf("WriteStuffed: %v", err)
				}
				if err := wr.Write(m.Envelope, Unstuff(bytes.NewReader(data)), m.CRLF); err != nil {
					t.Fatalf("Write: %v", err)
				}
			}
			if !prefixed && !bytes.Equal(stuffed.Bytes(), input) {
				t.Errorf("WriteStuffed output differs from the Exim file")
			}
			// Exim stuffs exactly as Write does, so both paths agree.
			if !bytes.Equal(stuffed.Bytes(), restuffed.Bytes()) {
				t.Errorf("Write and WriteStuffed outputs differ")
			}
			for _, out := range []*bytes.Buffer{&stuffed, &restuffed} {
				again := readAll(t, out.Bytes())
				checkEntries(t, out.Bytes(), again)
				if len(again) != len(es) {
					t.Fatalf("%d entries after the round trip, want %d", len(again), len(es))
				}
				for i := range es {
					a, b := es[i].Msg, again[i].Msg
					if b == nil {
						t.Fatalf("entry %d became damage: %s", i, again[i].Damage)
					}
					if a.From != b.From || !slices.Equal(a.To, b.To) || a.CRLF != b.CRLF || a.Size != b.Size || a.EightBit != b.EightBit {
						t.Errorf("entry %d changed: %+v -> %+v", i, a, b)
					}
					s1, _ := digest(t, Unstuff(bytes.NewReader(input[a.DataStart:a.DataEnd])))
					s2, _ := digest(t, Unstuff(bytes.NewReader(out.Bytes()[b.DataStart:b.DataEnd])))
					if s1 != s2 {
						t.Errorf("entry %d: content changed", i)
					}
				}
			}
		})
	}
}

// largestFixture is the 1 MiB one-message file.
const largestFixture = "bsmtp/dir/h1.bsmtp-dir.example/q1xXKke-770101"

// BenchmarkParseUnstuff measures reading a 1 MiB message and unstuffing its
// data, as the flush does for each message.
func BenchmarkParseUnstuff(b *testing.B) {
	input, err := os.ReadFile(filepath.Join(fixtureDir, largestFixture))
	if err != nil {
		b.Fatal(err)
	}
	br := bytes.NewReader(input)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		br.Reset(input)
		r := NewReader(br)
		for {
			e, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil || e.Msg == nil {
				b.Fatalf("entry %+v, err %v", e, err)
			}
			sec := io.NewSectionReader(bytes.NewReader(input), e.Msg.DataStart, e.Msg.DataEnd-e.Msg.DataStart)
			if _, err := io.Copy(io.Discard, Unstuff(sec)); err != nil {
				b.Fatal(err)
			}
		}
	}
}
