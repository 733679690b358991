package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"etrnflush/bsmtp"
)

// FailedCopy is a message set aside in a host's failed folder: its
// envelope names the original sender and the refused recipients.
type FailedCopy struct {
	Stem    string // the name without .bsmtp/.why; also its id in the log
	Why     string // the reason line, without its line end
	ModTime time.Time
	path    string // the .bsmtp file
}

// ListFailed lists the complete failed copies of the spool at spoolPath,
// oldest name first. A .bsmtp without its .why is a copy still being
// written when a run was killed: its recipients were not yet recorded as
// failed and will be refused (and the copy completed) again, so it is
// not listed. A .why left without its .bsmtp (a removal cut short) is
// removed.
func ListFailed(spoolPath string) ([]FailedCopy, error) {
	spoolPath = filepath.Clean(spoolPath)
	dir := failedDir(filepath.Dir(spoolPath), filepath.Base(spoolPath))
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed folder: %w", err)
	}
	have := map[string]bool{}
	for _, e := range ents {
		have[e.Name()] = true
	}
	var out []FailedCopy
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !e.Type().IsRegular() {
			continue
		}
		if stem, ok := strings.CutSuffix(n, ".why"); ok && !have[stem+".bsmtp"] {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("failed folder: %w", err)
			}
			continue
		}
		stem, ok := strings.CutSuffix(n, ".bsmtp")
		if !ok || !have[stem+".why"] {
			continue
		}
		why, err := readSmall(filepath.Join(dir, stem+".why"), 64<<10)
		if err != nil {
			return nil, fmt.Errorf("failed folder: %w", err)
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("failed folder: %w", err)
		}
		out = append(out, FailedCopy{Stem: stem, Why: strings.TrimRight(why, "\n"), ModTime: fi.ModTime(),
			path: filepath.Join(dir, n)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stem < out[j].Stem })
	return out, nil
}

// readSmall reads at most limit octets of a regular file: a reason file
// is a line or two, and a planted FIFO must not hang a run or a listing.
func readSmall(path string, limit int64) (string, error) {
	f, err := openRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(f, limit))
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return string(b), nil
}

// Read parses the copy and calls use with its envelope and its content
// (not dot-stuffed); the file is closed when use returns.
func (c FailedCopy) Read(use func(env bsmtp.Envelope, content io.Reader) error) (err error) {
	f, err := openRegular(c.path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("failed copy %s: %w", c.Stem, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("failed copy %s: %w", c.Stem, cerr)
		}
	}()
	e, err := bsmtp.NewReader(f).Next()
	if err != nil {
		return fmt.Errorf("failed copy %s: %w", c.Stem, err)
	}
	if e.Msg == nil {
		return fmt.Errorf("failed copy %s: damaged: %s", c.Stem, e.Damage)
	}
	data := io.NewSectionReader(f, e.Msg.DataStart, e.Msg.DataEnd-e.Msg.DataStart)
	return use(e.Msg.Envelope, bsmtp.Unstuff(data))
}

// Remove deletes the copy once its sender has been told. The .bsmtp goes
// first: a kill before the .why follows leaves a .why alone, which
// ListFailed clears, and never a copy that would be bounced twice
// without its reason.
func (c FailedCopy) Remove() error {
	if err := os.Remove(c.path); err != nil {
		return fmt.Errorf("remove failed copy %s: %w", c.Stem, err)
	}
	if err := os.Remove(strings.TrimSuffix(c.path, ".bsmtp") + ".why"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove failed copy %s: %w", c.Stem, err)
	}
	return syncDirectory(filepath.Dir(c.path))
}

// warnedDir holds one empty file per message whose sender was warned of
// its delay, named by a key the engine makes from the message.
func warnedDir(spoolPath string) string {
	spoolPath = filepath.Clean(spoolPath)
	return filepath.Join(filepath.Dir(spoolPath), ".etrnflush-"+privName(filepath.Base(spoolPath))+".warned")
}

// Warned reports whether MarkWarned recorded key for this spool.
func Warned(spoolPath, key string) (bool, error) {
	_, err := os.Lstat(filepath.Join(warnedDir(spoolPath), key))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("warned mark: %w", err)
	}
	return true, nil
}

// MarkWarned records, durably, that the delay warning for key was sent.
// key must be a plain file name (the engine uses a hex digest).
func MarkWarned(spoolPath, key string) error {
	if key == "" || strings.ContainsAny(key, "/.") {
		return fmt.Errorf("warned mark: bad key %q", key)
	}
	dir := warnedDir(spoolPath)
	if err := mkdirPrivate(dir); err != nil {
		return err
	}
	err := writeFileNew(filepath.Join(dir, key), 0o600, func(io.Writer) error { return nil })
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	return err
}

// PruneWarned removes the marks older than age: their messages have been
// delivered or expired by then, and the folder must not grow for ever.
func PruneWarned(spoolPath string, age time.Duration) error {
	dir := warnedDir(spoolPath)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("warned marks: %w", err)
	}
	cut := time.Now().Add(-age)
	for _, e := range ents {
		fi, err := e.Info()
		// Everything here is ours, a killed run's temporary files too.
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(cut) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("warned marks: %w", err)
		}
	}
	return nil
}
