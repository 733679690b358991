package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"etrnflush/config"
)

// TestManPageServeKeys keeps the [serve] and [user.NAME] keys of
// etrnflush.toml(5) in step with the code, both ways, as
// TestManPageToml5 does for the global and per-host keys.
func TestManPageServeKeys(t *testing.T) {
	const page = "man/etrnflush.toml.5"
	entries := readMan(t, page)
	for _, tc := range []struct {
		ss   string
		keys []string
	}{
		{"Serve keys", tomlKeys(config.Serve{})},
		{"User keys", tomlKeys(config.User{})},
	} {
		doc := map[string]int{}
		for _, e := range entries {
			if e.ss == tc.ss {
				doc[strings.Fields(e.tag)[0]]++
			}
		}
		if len(doc) == 0 {
			t.Errorf("%s: no .TP entries under %q", page, tc.ss)
			continue
		}
		want := map[string]bool{}
		for _, k := range tc.keys {
			want[k] = true
			if doc[k] != 1 {
				t.Errorf("%s: %s: key %q documented %d times, want once", page, tc.ss, k, doc[k])
			}
		}
		for k := range doc {
			if !want[k] {
				t.Errorf("%s: %s: documents key %q, which the config does not have", page, tc.ss, k)
			}
		}
	}
}

// TestManPageServeExamples: every file of examples/ that the man page
// names exists, and every example file for serve and Exim is named there.
func TestManPageServeExamples(t *testing.T) {
	b, err := os.ReadFile("man/etrnflush.8")
	if err != nil {
		t.Fatal(err)
	}
	text := unroff(string(b))
	for _, m := range regexp.MustCompile(`examples/[A-Za-z0-9@._-]+`).FindAllString(text, -1) {
		if _, err := os.Stat(strings.TrimRight(m, ".")); err != nil {
			t.Errorf("man/etrnflush.8 names %s: %v", m, err)
		}
	}
	for _, f := range []string{"examples/exim-etrn.conf", "examples/xinetd-etrnflush", "examples/etrnflush.socket", "examples/etrnflush@.service", "examples/serve.toml"} {
		if !strings.Contains(text, f) {
			t.Errorf("man/etrnflush.8 does not mention %s", f)
		}
	}
}
