//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// needTools skips (fails under CI=true) when a program the test runs is
// missing.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found (CI=true: .ci/run installs it)", n)
			}
			t.Skipf("%s not found", n)
		}
	}
}

func runCmd(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestMakeInstall: make install under PREFIX and DESTDIR puts every part
// in place with PREFIX in the units, and never replaces a configuration.
func TestMakeInstall(t *testing.T) {
	needTools(t, "make")
	dest := t.TempDir()
	src, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	install := func() string {
		return runCmd(t, src, nil, "make", "-s", "install", "DESTDIR="+dest, "PREFIX=/opt/ef")
	}
	install()
	for _, f := range []string{
		"opt/ef/sbin/etrnflush", "opt/ef/share/man/man8/etrnflush.8", "opt/ef/share/man/man5/etrnflush.toml.5",
		"opt/ef/share/doc/etrnflush/examples/exim-etrn.conf", "opt/ef/share/doc/etrnflush/examples/etrnflush.toml",
		"etc/etrnflush/etrnflush.toml",
		"opt/ef/lib/systemd/system/etrnflush-all.service", "opt/ef/lib/systemd/system/etrnflush-all.timer",
		"opt/ef/lib/systemd/system/etrnflush@.service", "opt/ef/lib/systemd/system/etrnflush.socket",
		"opt/ef/lib/systemd/system/etrnflush-tls@.service", "opt/ef/lib/systemd/system/etrnflush-tls.socket",
		"opt/ef/lib/tmpfiles.d/etrnflush.conf",
		"opt/ef/share/bash-completion/completions/etrnflush", "opt/ef/share/zsh/site-functions/_etrnflush",
	} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	// Every installed unit and example names the installed binary.
	for _, dir := range []string{"opt/ef/lib/systemd/system", "opt/ef/share/doc/etrnflush/examples"} {
		ents, err := os.ReadDir(filepath.Join(dest, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dest, dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte("/usr/local/sbin")) {
				t.Errorf("%s/%s still names /usr/local/sbin", dir, e.Name())
			}
			if strings.HasSuffix(e.Name(), ".service") && !bytes.Contains(b, []byte("ExecStart=/opt/ef/sbin/etrnflush ")) {
				t.Errorf("%s/%s: ExecStart does not name /opt/ef/sbin/etrnflush", dir, e.Name())
			}
		}
	}
	rule, err := os.ReadFile(filepath.Join(dest, "opt/ef/lib/tmpfiles.d/etrnflush.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^d /var/spool/etrnflush 0750 Debian-exim Debian-exim -$`).Match(rule) {
		t.Errorf("tmpfiles.d rule:\n%s", rule)
	}
	out, err := exec.Command(filepath.Join(dest, "opt/ef/sbin/etrnflush"), "--version").Output()
	if err != nil || !regexp.MustCompile(`^etrnflush version \d+\.\d+\.\d+`).Match(out) {
		t.Errorf("--version: %v, %q", err, out)
	}
	// The installed sample loads.
	if _, stderr, code := runEtrnflush(t, "-c", filepath.Join(dest, "etc/etrnflush/etrnflush.toml"), "check-config"); code != exOK && code != exConfig || strings.Contains(stderr, "error") {
		t.Errorf("the installed sample does not load: exit %d\n%s", code, stderr)
	}
	conf := filepath.Join(dest, "etc/etrnflush/etrnflush.toml")
	if err := os.WriteFile(conf, []byte("# mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	install()
	if b, err := os.ReadFile(conf); err != nil || string(b) != "# mine\n" {
		t.Errorf("a second make install replaced the configuration: %q, %v", b, err)
	}
	runCmd(t, src, nil, "make", "-s", "uninstall", "DESTDIR="+dest, "PREFIX=/opt/ef")
	var left []string
	if err := filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, strings.TrimPrefix(p, dest+"/"))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(left, " ") != "etc/etrnflush/etrnflush.toml" {
		t.Errorf("make uninstall left %q, want only the configuration", left)
	}
}

// TestDebPackage builds the package, installs it on this machine with
// dpkg -i, runs the installed etrnflush and man page, and removes it with
// dpkg -r, which must leave only the configuration; dpkg --purge then
// restores the machine. It needs root and a machine without etrnflush.
func TestDebPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	needTools(t, "make", "dpkg", "dpkg-deb", "man")
	if err := exec.Command("dpkg-query", "-W", "etrnflush").Run(); err == nil {
		t.Skip("the etrnflush package is installed on this machine: not touching it")
	}
	for _, p := range []string{"/usr/sbin/etrnflush", "/etc/etrnflush", "/var/spool/etrnflush"} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists on this machine: not touching it", p)
		}
	}
	src, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	deb := filepath.Join(tmp, "etrnflush.deb")
	runCmd(t, src, nil, "make", "-s", "deb", "DEB="+deb, "DEBSTAGE="+filepath.Join(tmp, "stage"))

	// What the package holds, and which of it this machine already has
	// (directories such as /usr/sbin): those must stay, the rest go.
	var paths []string
	sc := bufio.NewScanner(strings.NewReader(runCmd(t, "", nil, "sh", "-c", "dpkg-deb --fsys-tarfile "+deb+" | tar -t")))
	for sc.Scan() {
		p := strings.TrimSuffix(strings.TrimPrefix(sc.Text(), "."), "/")
		if p != "" {
			paths = append(paths, p)
		}
	}
	existed := map[string]bool{}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			existed[p] = true
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("dpkg", "--purge", "etrnflush").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
		for _, p := range []string{"/etc/etrnflush", "/var/spool/etrnflush", "/usr/sbin/etrnflush"} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s is still there after dpkg --purge", p)
			}
		}
	})
	// Slim container images tell dpkg to leave man pages out
	// (path-exclude in /etc/dpkg/dpkg.cfg.d); the man page is part of
	// what is tested here.
	runCmd(t, "", []string{"DEBIAN_FRONTEND=noninteractive"}, "dpkg", "--path-include=/usr/share/man/man[58]/etrnflush*", "-i", deb)

	if out := runCmd(t, "", nil, "/usr/sbin/etrnflush", "--help"); !strings.Contains(out, "check-config") {
		t.Errorf("etrnflush --help:\n%s", out)
	}
	if out := runCmd(t, "", []string{"MANPAGER=cat", "MANWIDTH=80"}, "man", "etrnflush"); !strings.Contains(out, "ETRNFLUSH(8)") || !strings.Contains(out, "check-config") {
		t.Errorf("man etrnflush:\n%.500s", out)
	}
	if out := runCmd(t, "", []string{"MANPAGER=cat"}, "man", "5", "etrnflush.toml"); !strings.Contains(out, "spool_dir") {
		t.Errorf("man 5 etrnflush.toml:\n%.500s", out)
	}
	// The postinst made the spool directory from the tmpfiles.d rule
	// when the Exim user exists.
	if exec.Command("id", "Debian-exim").Run() == nil {
		if fi, err := os.Stat("/var/spool/etrnflush"); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
			t.Errorf("spool directory after dpkg -i: %v %v", fi, err)
		}
	}
	conffiles := runCmd(t, "", nil, "dpkg-query", "-W", "-f=${Conffiles}", "etrnflush")
	if !strings.Contains(conffiles, "/etc/etrnflush/etrnflush.toml") {
		t.Errorf("conffiles: %q", conffiles)
	}

	runCmd(t, "", nil, "dpkg", "-r", "etrnflush")
	for _, p := range paths {
		if existed[p] || p == "/etc/etrnflush" || p == "/etc/etrnflush/etrnflush.toml" {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("dpkg -r left %s", p)
		}
	}
	if _, err := os.Stat("/etc/etrnflush/etrnflush.toml"); err != nil {
		t.Errorf("dpkg -r removed the configuration: %v", err)
	}
	if _, err := os.Lstat("/var/spool/etrnflush"); err == nil {
		t.Errorf("dpkg -r left the empty spool directory")
	}
}

// TestVersionScript: the version comes from the nearest vX.Y.Z tag, and
// is a valid, sensibly sorting version in a clone without tags.
func TestVersionScript(t *testing.T) {
	needTools(t, "git")
	script, err := filepath.Abs("packaging/version.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out := runCmd(t, dir, nil, script); out != "0.0.0+unknown\n" {
		t.Errorf("outside git: %q", out)
	}
	git := func(args ...string) string {
		return strings.TrimSpace(runCmd(t, dir, []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example"}, "git", args...))
	}
	git("init", "-q")
	f := filepath.Join(dir, "f")
	commit := func(text string) string {
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "f")
		git("commit", "-q", "-m", text)
		return git("rev-parse", "--short", "HEAD")
	}
	h := commit("one")
	version := func() string { return strings.TrimSpace(runCmd(t, dir, nil, script)) }
	if v := version(); v != "0.0.0+git.1.g"+h {
		t.Errorf("no tag: %q", v)
	}
	git("tag", "v0.3.1")
	git("tag", "release-7") // not a version tag: ignored
	if v := version(); v != "0.3.1" {
		t.Errorf("on the tag: %q", v)
	}
	h = commit("two")
	if v := version(); v != "0.3.1+1.g"+h {
		t.Errorf("after the tag: %q", v)
	}
	if err := os.WriteFile(f, []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := version(); v != "0.3.1+1.g"+h+".dirty" {
		t.Errorf("dirty: %q", v)
	}
	if _, err := exec.LookPath("dpkg"); err == nil {
		// Debian orders them: the tag, then what follows it.
		runCmd(t, "", nil, "dpkg", "--compare-versions", "0.3.1+1.g"+h, "gt", "0.3.1")
		runCmd(t, "", nil, "dpkg", "--compare-versions", "0.3.1", "gt", "0.0.0+git.1.gabc")
	}
}

// TestBuildsOnTheBSDs: Linux-only system calls (renameat2, fallocate,
// TCGETS) stay behind build tags or golang.org/x/term, so the code builds
// for FreeBSD and OpenBSD.
func TestBuildsOnTheBSDs(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	for _, goos := range []string{"freebsd", "openbsd"} {
		cmd := exec.Command(goTool, "build", "-o", os.DevNull, "./...")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s go build ./...: %v\n%s", goos, err, out)
		}
	}
}
