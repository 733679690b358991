package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"etrnflush/bsmtp"
)

// The archive keeps a copy of every message a server accepted, instead of
// nothing: archive_dir/HOST/TIME-DIGEST.bsmtp, one BSMTP transaction per
// file, so that "exim -bS < FILE" puts it back into Exim's queue. Each
// host has a folder of its own, so that a run only ever writes and prunes
// under its own host lock, whatever other hosts' runs do in archive_dir.

// ArchiveSuffix ends the name of every archive file.
const ArchiveSuffix = ".bsmtp"

// ArchiveDir is the folder of host under the archive root.
func ArchiveDir(root, host string) string {
	return filepath.Join(root, host)
}

// Archive writes a copy of m for the recipients in to (those the server
// accepted) into dir, through the atomic-write helper: a temporary file,
// fsync, a rename that replaces nothing, a directory fsync. The file is
//
//	NOOP etrnflush accepted NOTE
//	MAIL FROM:<sender>
//	RCPT TO:<each of to>
//	DATA
//	the message as stored, dot-stuffed
//	.
//	QUIT
//
// with the message's own line ends. Exim ignores NOOP in batched SMTP,
// so the first line records the server's reply and the rest re-injects.
// note must be one line of printable ASCII. It must be called before m
// is settled: the entry may be gone afterwards. dir and the root above
// it are created (mode 0700) if missing; a dir that is a symbolic link or
// not a directory is refused, and no existing file is ever replaced or
// followed. It returns the file written.
func Archive(dir string, m *Message, to []string, note string, now time.Time) (string, error) {
	if m == nil || m.ref == nil {
		return "", errors.New("archive: unknown message")
	}
	for i := 0; i < len(note); i++ {
		if c := note[i]; c < 0x20 || c >= 0x7f {
			return "", fmt.Errorf("archive: note holds octet %#02x", c)
		}
	}
	if len(to) == 0 {
		return "", errors.New("archive: no recipients")
	}
	if err := mkdirPrivate(filepath.Dir(dir)); err != nil {
		return "", fmt.Errorf("archive: %w", err)
	}
	if err := mkdirPrivate(dir); err != nil {
		return "", fmt.Errorf("archive: %w", err)
	}
	r := m.ref
	eol := "\n"
	if r.crlf {
		eol = "\r\n"
	}
	sum := sha256.Sum256([]byte(m.ID + "\x00" + strings.Join(to, "\x00")))
	id := now.UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(sum[:6])
	env := bsmtp.Envelope{From: r.env.From, To: to}
	var path string
	err := placeCopy(dir, id, func(stem string) error {
		path = filepath.Join(dir, stem+ArchiveSuffix)
		return writeFileNew(path, 0o600, func(w io.Writer) error {
			if _, err := io.WriteString(w, "NOOP etrnflush accepted "+note+eol); err != nil {
				return err
			}
			var err error
			if r.plain != nil {
				err = bsmtp.NewWriter(w).Write(env, r.plain(), r.crlf)
			} else {
				err = bsmtp.NewWriter(w).WriteStuffed(env, io.NewSectionReader(r.section, 0, r.section.Size()), r.crlf)
			}
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, "QUIT"+eol)
			return err
		})
	})
	if err != nil {
		return "", diskFull(fmt.Errorf("archive: %w", err))
	}
	return path, nil
}

// PruneArchive removes the archive files in dir last changed more than
// age before now, and what killed runs left of their atomic writes there
// (only the holder of the host lock calls it, so none is in progress).
// Anything else in dir (a file an admin put there, a directory, a
// symbolic link) is left alone. A missing dir holds nothing.
func PruneArchive(dir string, age time.Duration, now time.Time) (removed int, err error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("archive: %w", err)
	}
	cut := now.Add(-age)
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if staleTemp(e, ".") {
			if err := removeFile(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return removed, fmt.Errorf("archive: %w", err)
			}
			continue
		}
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ArchiveSuffix) {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("archive: %w", err)
		}
		if !fi.ModTime().Before(cut) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("archive: %w", err)
		}
		removed++
	}
	if removed > 0 {
		if err := syncDir(dir); err != nil {
			return removed, fmt.Errorf("archive: %w", err)
		}
	}
	return removed, nil
}
