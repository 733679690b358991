//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"etrnflush/spool"
)

// listRow is what a test reads back from list --json.
type listRow struct {
	Host        string     `json:"host"`
	Spool       string     `json:"spool"`
	Layout      string     `json:"layout"`
	Messages    int        `json:"messages"`
	Recipients  int        `json:"recipients"`
	Bytes       int64      `json:"bytes"`
	Oldest      *time.Time `json:"oldest"`
	Newest      *time.Time `json:"newest"`
	Damaged     int        `json:"damaged"`
	Failed      int        `json:"failed"`
	Quarantined int        `json:"quarantined"`
	Running     bool       `json:"running"`
	LastFlush   *struct {
		Time        time.Time `json:"time"`
		Exit        int       `json:"exit"`
		Messages    int       `json:"messages"`
		Sent        int       `json:"sent"`
		Deferred    int       `json:"deferred"`
		Unreachable bool      `json:"unreachable"`
	} `json:"last_flush"`
	Error string `json:"error"`
	List  []struct {
		ID        string    `json:"id"`
		EximID    string    `json:"exim_id"`
		MessageID string    `json:"message_id"`
		Arrived   time.Time `json:"arrived"`
		Size      int64     `json:"size"`
		From      string    `json:"from"`
		To        []string  `json:"to"`
	} `json:"list"`
}

// writeConfig writes a config naming spoolDir and returns its path.
func writeConfig(t *testing.T, spoolDir, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "etrnflush.toml")
	if err := os.WriteFile(p, []byte("log = \"stderr\"\nbounce = false\nmax_age = \"3650d\"\nspool_dir = \""+spoolDir+"\"\n"+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// listJSON runs list --json and returns its rows by host; every line
// must be one JSON object.
func listJSON(t *testing.T, cfg string, args ...string) (map[string]listRow, []string) {
	t.Helper()
	out, stderr, code := runEtrnflush(t, append([]string{"-c", cfg, "list", "--json"}, args...)...)
	if code != exOK {
		t.Fatalf("list --json: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	rows := map[string]listRow{}
	var order []string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var r listRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("list --json: line %q: %v", line, err)
		}
		rows[r.Host] = r
		order = append(order, r.Host)
	}
	return rows, order
}

// expectedFixture sums expected.json for the entries under prefix.
func expectedFixture(t *testing.T, prefix string) (msgs, rcpts int, dataLen int64, eximIDs []string) {
	t.Helper()
	data, err := os.ReadFile("testdata/exim/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Messages []struct {
			Recipients []string `json:"recipients"`
			DataLen    int64    `json:"data_len"`
			EximID     string   `json:"exim_id"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(data, &all); err != nil {
		t.Fatal(err)
	}
	for k, v := range all {
		if k != prefix && !strings.HasPrefix(k, prefix+"/") {
			continue
		}
		for _, m := range v.Messages {
			msgs++
			rcpts += len(m.Recipients)
			dataLen += m.DataLen
			eximIDs = append(eximIDs, m.EximID)
		}
	}
	sort.Strings(eximIDs)
	return msgs, rcpts, dataLen, eximIDs
}

// TestCLIListFixtures: list on copies of real Exim spools of every layout
// counts what expected.json says is there, names each message's Exim id,
// dates it from its Received: field, and changes nothing: no lock file,
// no claim, no work file.
func TestCLIListFixtures(t *testing.T) {
	fixtures := []struct {
		fixture, host, layout string
		bytesAreData          bool // a BSMTP or mailstore message's size is its data's
	}{
		{"bsmtp/file/h1.bsmtp.example", "h1.bsmtp.example", "bsmtp-file", true},
		{"bsmtp/dir/h1.bsmtp-dir.example", "h1.bsmtp-dir.example", "bsmtp-dir", true},
		{"mailstore/plain/h1.mailstore.example", "h1.mailstore.example", "mailstore", true},
		{"maildir/batched/h1.maildir.example", "h1.maildir.example", "maildir", false},
	}
	dir := t.TempDir()
	for _, f := range fixtures {
		src := filepath.Join("testdata/exim", f.fixture)
		if fi, err := os.Stat(src); err != nil {
			t.Fatal(err)
		} else if fi.IsDir() {
			copyTree(t, src, filepath.Join(dir, f.host))
		} else {
			copyFile(t, src, filepath.Join(dir, f.host))
		}
	}
	// Exim's own kind of clutter is no host: a lock file and a hitching
	// post beside an appended file, and a file that is no host name.
	for _, n := range []string{"README_", "h1.bsmtp.example.lock", "h1.bsmtp.example.lock.mx.example.6a1b2c3d.1f2e"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, dir, "")
	before := treeSnapshot(t, dir)
	rows, order := listJSON(t, cfg, "-v")
	if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
		t.Errorf("list changed the spool directory:\n%s", d)
	}
	if len(rows) != len(fixtures) || !sort.StringsAreSorted(order) {
		t.Errorf("list --json listed hosts %v, want the %d fixtures' in order", order, len(fixtures))
	}
	// The fixtures were written by Exim on 2026-11-28 (MANIFEST.md).
	day := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	for _, f := range fixtures {
		r, ok := rows[f.host]
		if !ok {
			t.Errorf("%s: not listed", f.host)
			continue
		}
		msgs, rcpts, dataLen, eximIDs := expectedFixture(t, f.fixture)
		if r.Layout != f.layout || r.Messages != msgs || r.Recipients != rcpts || r.Error != "" {
			t.Errorf("%s: layout=%s messages=%d recipients=%d error=%q, want %s %d %d none",
				f.host, r.Layout, r.Messages, r.Recipients, r.Error, f.layout, msgs, rcpts)
		}
		if f.bytesAreData && r.Bytes != dataLen {
			t.Errorf("%s: bytes=%d, want %d (expected.json's data_len)", f.host, r.Bytes, dataLen)
		}
		if r.Oldest == nil || r.Newest == nil || r.Oldest.After(*r.Newest) ||
			r.Oldest.Before(day) || !r.Newest.Before(day.Add(24*time.Hour)) {
			t.Errorf("%s: oldest=%v newest=%v, want Received: dates of 2026-11-28", f.host, r.Oldest, r.Newest)
		}
		var got []string
		var sum int64
		for _, m := range r.List {
			got = append(got, m.EximID)
			sum += m.Size
			if m.MessageID == "" || m.Arrived.IsZero() || m.ID == "" {
				t.Errorf("%s: -v entry %+v lacks its Message-ID, arrival or id", f.host, m)
			}
		}
		sort.Strings(got)
		if strings.Join(got, " ") != strings.Join(eximIDs, " ") {
			t.Errorf("%s: Exim ids\n  %v\nwant\n  %v", f.host, got, eximIDs)
		}
		if sum != r.Bytes {
			t.Errorf("%s: -v sizes add up to %d, the host's bytes are %d", f.host, sum, r.Bytes)
		}
	}
}

// bsmtpEntry is one BSMTP message with the given header on top.
func bsmtpEntry(from, to, header string) string {
	return "MAIL FROM:<" + from + ">\nRCPT TO:<" + to + ">\nDATA\n" + header + "Subject: t\n\nbody\n.\n"
}

// TestCLIListWritten: on spools a test writes, ages come from the top
// Received: field, else the entry's file time; the failed and quarantine
// folders are counted (unfinished writes in them are not); an entry a
// flush would quarantine is counted as damaged and left where it is; a
// configured host with nothing held is listed with zeros; a named host
// limits the listing; the table has one line per host.
func TestCLIListWritten(t *testing.T) {
	dir := t.TempDir()
	host := "h.example"
	sp := filepath.Join(dir, host)
	if err := os.Mkdir(sp, 0o700); err != nil {
		t.Fatal(err)
	}
	received := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	fileTime := time.Date(2025, 12, 24, 8, 30, 0, 0, time.UTC)
	write := func(name, content string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(sp, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	// The top Received: line is the one our Exim wrote; the one below it
	// is older and must not count.
	write("q1aaaaa-1", bsmtpEntry("a@x.example", "b@h.example",
		"Received: from x by mx.example with esmtp id 1xXKke-000173-05\n\tfor b@h.example; Sun, 01 Mar 2026 11:00:00 +0100\n"+
			"Received: from y by x; Mon, 01 Jan 2024 00:00:00 +0000\n"), time.Now())
	write("q1aaaab-2", bsmtpEntry("c@x.example", "d@h.example", "Message-ID: <m2@x.example>\n"), fileTime)
	write("q1aaaac-3", "MAIL FROM:<e@x.example>\nRCPT TO:<f@h.example>\nDATA\nSubject: cut\n", fileTime) // torn: no final dot

	failed := filepath.Join(dir, ".etrnflush-"+host+".failed")
	quar := filepath.Join(dir, ".etrnflush-"+host+".quarantine")
	for _, p := range []string{failed, quar} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []struct{ dir, name, content string }{
		{failed, "id1-aa.bsmtp", bsmtpEntry("a@x.example", "z@h.example", "")},
		{failed, "id1-aa.why", "550 no such user"},
		{failed, "id2-bb.bsmtp", bsmtpEntry("a@x.example", "y@h.example", "")},
		{failed, "id2-bb.why", "550 no such user"},
		{failed, ".id3-cc.why.tmp-123", "unfinished"},
		{quar, "q1zzz.why", "no final dot"},
		{quar, "q1zzz.bsmtp", "MAIL FROM:<>\n"},
	} {
		if err := os.WriteFile(filepath.Join(f.dir, f.name), []byte(f.content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Only a failed folder is left of this one; it is listed all the same.
	if err := os.Mkdir(filepath.Join(dir, ".etrnflush-gone.example.failed"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, "[host.\"quiet.example\"]\nroute = \"192.0.2.1\"\n")

	before := treeSnapshot(t, dir)
	rows, order := listJSON(t, cfg)
	if d := diffSnapshots(before, treeSnapshot(t, dir)); d != "" {
		t.Errorf("list changed the spool directory:\n%s", d)
	}
	if strings.Join(order, " ") != "gone.example h.example quiet.example" {
		t.Errorf("hosts %v, want gone.example h.example quiet.example", order)
	}
	r := rows[host]
	if r.Layout != "bsmtp-dir" || r.Messages != 2 || r.Recipients != 2 || r.Damaged != 1 || r.Failed != 2 || r.Quarantined != 1 {
		t.Errorf("%s: %+v, want bsmtp-dir, 2 messages, 2 recipients, 1 damaged, 2 failed, 1 quarantined", host, r)
	}
	if r.Oldest == nil || !r.Oldest.Equal(fileTime) || r.Newest == nil || !r.Newest.Equal(received) {
		t.Errorf("%s: oldest=%v newest=%v, want %v (file time) and %v (Received:)", host, r.Oldest, r.Newest, fileTime, received)
	}
	if q := rows["quiet.example"]; q.Layout != "none" || q.Messages != 0 || q.Oldest != nil {
		t.Errorf("configured host with nothing held: %+v", q)
	}
	if r.Running {
		t.Errorf("%s: running with no flush", host)
	}

	// A flush holds the host's lock (taken here as a flush takes it):
	// list says so, and still reads the spool.
	lock, err := spool.LockHost(dir, host)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ = listJSON(t, cfg, host)
	if r := rows[host]; !r.Running || r.Messages != 2 {
		t.Errorf("during a flush: %+v, want running with 2 messages", r)
	}
	if again, err := lock.Release(); err != nil || again {
		t.Errorf("release the host lock: again=%v err=%v (list must not ask for another pass)", again, err)
	}
	rows, _ = listJSON(t, cfg, host)
	if rows[host].Running {
		t.Errorf("running after the lock was released")
	}

	rows, order = listJSON(t, cfg, "-v", "H.Example")
	if len(order) != 1 || order[0] != host || len(rows[host].List) != 2 {
		t.Fatalf("list -v H.Example: %v %+v", order, rows[host])
	}
	m := rows[host].List[0] // oldest first: the entry dated by its file time
	if m.From != "c@x.example" || m.MessageID != "<m2@x.example>" || m.EximID != "" || !m.Arrived.Equal(fileTime) {
		t.Errorf("first -v entry %+v", m)
	}
	if m := rows[host].List[1]; m.EximID != "1xXKke-000173-05" || !m.Arrived.Equal(received) {
		t.Errorf("second -v entry %+v", m)
	}

	out, stderr, code := runEtrnflush(t, "-c", cfg, "list", host)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != exOK || len(lines) != 2 || !strings.HasPrefix(lines[0], "HOST ") {
		t.Fatalf("list %s: exit %d\n%s%s", host, code, out, stderr)
	}
	if f := strings.Fields(lines[1]); len(f) < 12 || f[0] != host || f[2] != "2" || f[7] != "2" || f[8] != "1" || f[11] != "-" {
		t.Errorf("table line %q", lines[1])
	}
}

// TestCLIListNoSpoolDir: a spool_dir that does not exist (yet) holds
// nothing, and list says so without creating it.
func TestCLIListNoSpoolDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	rows, _ := listJSON(t, writeConfig(t, dir, ""))
	if len(rows) != 0 {
		t.Errorf("rows %+v, want none", rows)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("list created %s (%v)", dir, err)
	}
}

// TestCLIListUnreadable: a spool that cannot be read (here a FIFO where
// the spool should be) is reported in its row and in the exit status
// (74), and the other hosts are still listed.
func TestCLIListUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(dir, "bad.example"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "good.example"), []byte(bsmtpEntry("a@x.example", "b@good.example", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code := runEtrnflush(t, "-c", writeConfig(t, dir, ""), "list", "--json")
	if code != exIOErr {
		t.Errorf("exit %d, want %d", code, exIOErr)
	}
	if !strings.Contains(out, `"host":"good.example","spool"`) || !strings.Contains(out, `"messages":1,`) ||
		!strings.Contains(out, `"host":"bad.example"`) || !strings.Contains(out, `"error":`) {
		t.Errorf("output:\n%s", out)
	}
}

// TestCLIListLastFlush: each flush leaves the host's state file, which
// list shows (LAST FLUSH; last_flush in --json): its time, exit status and
// counts, those of the latest run. The file is replaced by a rename, so a
// symbolic link planted in its place is replaced, never written through;
// a dry run leaves none.
func TestCLIListLastFlush(t *testing.T) {
	dir := t.TempDir()
	host := "h.example"
	sp := filepath.Join(dir, host)
	if err := os.Mkdir(sp, 0o700); err != nil {
		t.Fatal(err)
	}
	for i, to := range []string{"a@h.example", "b@h.example"} {
		if err := os.WriteFile(filepath.Join(sp, fmt.Sprintf("q1aaaa-%d", i)), []byte(bsmtpEntry("s@x.example", to, "")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, dir, "")
	if _, stderr, code := runEtrnflush(t, "-c", cfg, "--dry-run", host); code != exOK {
		t.Fatalf("dry run: exit %d\n%s", code, stderr)
	}
	if rows, _ := listJSON(t, cfg); rows[host].LastFlush != nil {
		t.Fatalf("a dry run recorded %+v", rows[host].LastFlush)
	}
	// Unreachable first: a port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(elsewhere, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, ".etrnflush-"+host+".last")
	if err := os.Symlink(elsewhere, state); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Second)
	if _, stderr, code := runEtrnflush(t, "-c", cfg, "--to", dead, "--tls", "none", "--helo", "tx.example", host); code != exTempFail {
		t.Fatalf("flush to a dead port: exit %d\n%s", code, stderr)
	}
	if b, err := os.ReadFile(elsewhere); err != nil || string(b) != "keep" {
		t.Errorf("the state file was written through a symbolic link: %q %v", b, err)
	}
	if fi, err := os.Lstat(state); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v", fi, err)
	}
	rows, _ := listJSON(t, cfg)
	lf := rows[host].LastFlush
	if lf == nil || lf.Exit != exTempFail || lf.Messages != 2 || lf.Deferred != 2 || lf.Sent != 0 || !lf.Unreachable ||
		lf.Time.Before(start.Truncate(time.Second)) || lf.Time.After(time.Now()) {
		t.Fatalf("last_flush after an unreachable run: %+v", lf)
	}

	rx := newRecorder(t)
	if _, stderr, code := runEtrnflush(t, "-c", cfg, "--to", rx.addr, "--tls", "none", "--helo", "tx.example", host); code != exOK {
		t.Fatalf("flush: exit %d\n%s", code, stderr)
	}
	rows, _ = listJSON(t, cfg)
	if lf := rows[host].LastFlush; lf == nil || lf.Exit != exOK || lf.Messages != 2 || lf.Sent != 2 || lf.Deferred != 0 || lf.Unreachable {
		t.Errorf("last_flush after a full delivery: %+v", lf)
	}
	out, _, code := runEtrnflush(t, "-c", cfg, "list", host)
	if code != exOK || !strings.Contains(out, "LAST FLUSH") || !regexp.MustCompile(`(?m)^h\.example .*\d+s ago, exit 0, 2 sent of 2$`).MatchString(out) {
		t.Errorf("list: exit %d\n%s", code, out)
	}
}
