package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"etrnflush/config"
)

// The man pages are hand-written, so these tests keep them honest against
// the code. How the pages are read: every entry of a list is a ".TP" whose
// next line (the tag) names the item. The tag is un-roffed (font escapes
// dropped, "\-" made "-") and then
//   - in etrnflush.8, section OPTIONS: every "-x" / "--name" word of a tag
//     is a flag; section COMMANDS: the tag's first word is a command;
//     section EXIT STATUS: the tag is a number; section ENVIRONMENT: the tag
//     is a variable name;
//   - in etrnflush.toml.5, subsections "Global keys" and "Per-host keys":
//     the tag's first word is a key.
// Both directions are checked: what the code has must be documented, and
// what is documented must exist.

type manEntry struct {
	sh, ss string // enclosing .SH and .SS headings
	tag    string // un-roffed tag line
	line   int
}

var (
	roffFont = regexp.MustCompile(`\\f(\[[^\]]*\]|\(..|.)`)
	roffChar = strings.NewReplacer(`\-`, "-", `\(dq`, `"`, `\(lq`, `"`, `\(rq`, `"`, `\&`, "", `\e`, `\`, `\ `, " ")
)

func unroff(s string) string {
	return roffChar.Replace(roffFont.ReplaceAllString(s, ""))
}

// macroText turns a request line such as `.BR foo ", " bar` into its text;
// a plain text line is returned un-roffed.
func macroText(line string) string {
	if !strings.HasPrefix(line, ".") {
		return unroff(line)
	}
	_, rest, _ := strings.Cut(line, " ")
	var words []string
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		if rest[0] == '"' {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				words = append(words, rest[1:])
				break
			}
			words = append(words, rest[1:end+1])
			rest = rest[end+2:]
			continue
		}
		w, r, _ := strings.Cut(rest, " ")
		words = append(words, w)
		rest = r
	}
	// .BR/.IR alternate fonts without spaces; .B/.I join with spaces.
	sep := " "
	if m, _, _ := strings.Cut(line, " "); len(m) == 3 {
		sep = ""
	}
	return unroff(strings.Join(words, sep))
}

func readMan(t *testing.T, path string) []manEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open man page: %v", err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Errorf("close %s: %v", path, err)
		}
	}()
	var out []manEntry
	var sh, ss string
	wantTag := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, `.\"`):
			continue
		case strings.HasPrefix(line, ".SH "):
			sh, ss = strings.Trim(strings.TrimPrefix(line, ".SH "), `"`), ""
		case strings.HasPrefix(line, ".SS "):
			ss = strings.Trim(strings.TrimPrefix(line, ".SS "), `"`)
		case line == ".TP":
			wantTag = true
			continue
		case wantTag:
			out = append(out, manEntry{sh: sh, ss: ss, tag: macroText(line), line: n})
		}
		wantTag = false
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return out
}

var flagWord = regexp.MustCompile(`(?:^|[\s,\[|])(--?[A-Za-z0-9][A-Za-z0-9-]*)`)

// appSurface returns the flags (each flag's names, as "-x"/"--name") and
// commands the binary offers, help and version included, and the
// environment variables its flags read.
func appSurface(t *testing.T) (flags [][]string, commands []string, env []string) {
	t.Helper()
	app := newApp()
	app.Setup()
	seen := map[string]bool{}
	add := func(fs []cli.Flag) {
		for _, f := range fs {
			var names []string
			for _, n := range f.Names() {
				if len(n) == 1 {
					names = append(names, "-"+n)
				} else {
					names = append(names, "--"+n)
				}
			}
			key := strings.Join(names, ",")
			if !seen[key] {
				seen[key] = true
				flags = append(flags, names)
			}
			if d, ok := f.(cli.DocGenerationFlag); ok {
				env = append(env, d.GetEnvVars()...)
			}
		}
	}
	add(app.Flags)
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		commands = append(commands, c.Names()...)
		add(c.Flags)
	}
	return flags, commands, env
}

func TestManPageEtrnflush8(t *testing.T) {
	const page = "man/etrnflush.8"
	entries := readMan(t, page)
	flags, commands, env := appSurface(t)

	var optTags []manEntry
	documented := map[string]bool{}    // every flag word in an OPTIONS tag
	cmdDocumented := map[string]bool{} // first word of every COMMANDS tag
	envDocumented := map[string]bool{}
	exitDocumented := map[int]bool{}
	for _, e := range entries {
		switch e.sh {
		case "OPTIONS":
			optTags = append(optTags, e)
			for _, m := range flagWord.FindAllStringSubmatch(e.tag, -1) {
				documented[m[1]] = true
			}
		case "COMMANDS":
			// "help [COMMAND], h": each comma-separated part names one.
			for _, part := range strings.Split(e.tag, ",") {
				if f := strings.Fields(part); len(f) > 0 {
					cmdDocumented[f[0]] = true
				}
			}
		case "ENVIRONMENT":
			envDocumented[strings.Fields(e.tag)[0]] = true
		case "EXIT STATUS":
			n, err := strconv.Atoi(e.tag)
			if err != nil {
				t.Errorf("%s:%d: EXIT STATUS entry %q is not a number", page, e.line, e.tag)
				continue
			}
			exitDocumented[n] = true
		}
	}
	if len(optTags) == 0 || len(cmdDocumented) == 0 {
		t.Fatalf("%s: found %d OPTIONS and %d COMMANDS entries; has the .TP convention changed?", page, len(optTags), len(cmdDocumented))
	}

	// Every flag is documented, with all its names in one entry.
	known := map[string]bool{}
	for _, names := range flags {
		for _, n := range names {
			known[n] = true
		}
		found := false
		for _, e := range optTags {
			all := true
			for _, n := range names {
				if !containsWord(e.tag, n) {
					all = false
					break
				}
			}
			if all {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: flag %s has no OPTIONS entry naming all of %v", page, names[len(names)-1], names)
		}
	}
	// Every documented flag exists.
	for n := range documented {
		if !known[n] {
			t.Errorf("%s: OPTIONS documents %s, which the binary does not have", page, n)
		}
	}
	// Commands, both ways.
	cmdKnown := map[string]bool{}
	for _, c := range commands {
		cmdKnown[c] = true
		if !cmdDocumented[c] {
			t.Errorf("%s: command %q is not in COMMANDS", page, c)
		}
	}
	for c := range cmdDocumented {
		if !cmdKnown[c] {
			t.Errorf("%s: COMMANDS documents %q, which the binary does not have", page, c)
		}
	}
	// Environment variables read through flags.
	for _, v := range env {
		if !envDocumented[v] {
			t.Errorf("%s: environment variable %s is not in ENVIRONMENT", page, v)
		}
	}
	// Exit codes, both ways: these are what a calling MTA acts on.
	codes := []int{exOK, exUsage, exDataErr, exIOErr, exTempFail, exNoPerm, exConfig}
	for _, c := range codes {
		if !exitDocumented[c] {
			t.Errorf("%s: exit status %d is not in EXIT STATUS", page, c)
		}
	}
	for c := range exitDocumented {
		if !containsInt(codes, c) {
			t.Errorf("%s: EXIT STATUS documents %d, which main.go never returns", page, c)
		}
	}
}

// TestDocsMentionOnlyRealFlags catches examples that drifted: every
// "--name" anywhere in the man page and the README must be a flag.
func TestDocsMentionOnlyRealFlags(t *testing.T) {
	flags, _, _ := appSurface(t)
	known := map[string]bool{}
	for _, names := range flags {
		for _, n := range names {
			known[n] = true
		}
	}
	long := regexp.MustCompile(`(?:^|[^A-Za-z0-9-])(--[a-z][a-z0-9-]*)`)
	for _, p := range []string{"man/etrnflush.8", "README.md"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		text := string(data)
		if strings.HasSuffix(p, ".8") {
			text = unroff(text)
		}
		for i, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, `.\"`) {
				continue // roff comment
			}
			for _, m := range long.FindAllStringSubmatch(line, -1) {
				if !known[m[1]] {
					t.Errorf("%s:%d: mentions %s, which is not a flag of etrnflush", p, i+1, m[1])
				}
			}
		}
	}
}

func TestManPageToml5(t *testing.T) {
	const page = "man/etrnflush.toml.5"
	entries := readMan(t, page)
	for _, tc := range []struct {
		ss   string
		keys []string
	}{
		{"Global keys", tomlKeys(config.Config{})},
		{"Per-host keys", tomlKeys(config.Host{})},
	} {
		doc := map[string]int{}
		for _, e := range entries {
			if e.ss == tc.ss {
				doc[strings.Fields(e.tag)[0]]++
			}
		}
		if len(doc) == 0 {
			t.Errorf("%s: no .TP entries under %q; has the convention changed?", page, tc.ss)
			continue
		}
		want := map[string]bool{}
		for _, k := range tc.keys {
			want[k] = true
			if doc[k] == 0 {
				t.Errorf("%s: %s: key %q is not documented", page, tc.ss, k)
			}
		}
		for k, n := range doc {
			switch {
			case !want[k]:
				t.Errorf("%s: %s: documents key %q, which the config does not have", page, tc.ss, k)
			case n > 1:
				t.Errorf("%s: %s: key %q documented %d times", page, tc.ss, k, n)
			}
		}
	}
}

// TestSampleConfig checks examples/etrnflush.toml: each key appears
// commented out under a "# Default:" line, in its section, and the file
// with every key uncommented is a valid configuration.
func TestSampleConfig(t *testing.T) {
	const sample = "examples/etrnflush.toml"
	data, err := os.ReadFile(sample)
	if err != nil {
		t.Fatalf("read sample: %v", err)
	}
	keyLine := regexp.MustCompile(`^#([a-z_]+) = `)
	tableLine := regexp.MustCompile(`^#(\[host\."[a-z0-9.-]+"\])$`)
	global, host := map[string]int{}, map[string]int{}
	inHost := false
	lastDefault := -10
	var uncommented []string
	for i, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "# Default:") {
			lastDefault = i
		}
		if m := tableLine.FindStringSubmatch(line); m != nil {
			inHost = true
			uncommented = append(uncommented, m[1])
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "#") {
				t.Errorf("%s:%d: an active setting in the sample: %q", sample, i+1, line)
			}
			continue
		}
		if i-lastDefault > 1 {
			t.Errorf("%s:%d: key %s has no \"# Default:\" line right above it", sample, i+1, m[1])
		}
		if inHost {
			host[m[1]]++
		} else {
			global[m[1]]++
		}
		uncommented = append(uncommented, line[1:])
	}
	for _, tc := range []struct {
		what string
		got  map[string]int
		keys []string
	}{
		{"global", global, tomlKeys(config.Config{})},
		{"per-host", host, tomlKeys(config.Host{})},
	} {
		want := map[string]bool{}
		for _, k := range tc.keys {
			want[k] = true
			if tc.got[k] != 1 {
				t.Errorf("%s: %s key %q appears %d times, want once", sample, tc.what, k, tc.got[k])
			}
		}
		for k := range tc.got {
			if !want[k] {
				t.Errorf("%s: %s key %q does not exist", sample, tc.what, k)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "all.toml")
	if err := os.WriteFile(p, []byte(strings.Join(uncommented, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(p, true); err != nil {
		t.Errorf("%s with every key uncommented does not load: %v", sample, err)
	}
}

// TestManPagesRender runs groff in its strictest warning mode: what
// man(1) shows must not depend on the formatter forgiving mistakes.
func TestManPagesRender(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not installed: apt-get install groff-base")
	}
	pages, err := filepath.Glob("man/*.[0-9]")
	if err != nil || len(pages) < 2 {
		t.Fatalf("man pages: %v %v", pages, err)
	}
	sort.Strings(pages)
	for _, p := range pages {
		out, err := exec.Command(groff, "-man", "-ww", "-z", p).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff -man -ww -z %s: %v\n%s", p, err, out)
		}
	}
}

func containsWord(s, w string) bool {
	for _, m := range flagWord.FindAllStringSubmatch(s, -1) {
		if m[1] == w {
			return true
		}
	}
	return false
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
