package flush

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"etrnflush/logging"
	"etrnflush/spool"
)

// archive copies m, for the recipients the server took, into the host's
// archive folder with the server's reply. It never stands in the way of
// the flush: a failure is logged once and the message is settled (and
// removed) as without an archive. After a failure the rest of the run
// archives nothing: a full or broken archive file system stays so for the
// run, and writing every message into it again would only slow the flush
// down and repeat the line.
func (r *run) archive(m *spool.Message, to []string, reply string) {
	if r.archiveOff {
		r.sum.ArchiveFailed++
		return
	}
	now := time.Now()
	remote := r.remote
	if remote == "" {
		remote = "-"
	}
	note := fmt.Sprintf("host=%s id=%s time=%s remote=%s reply=%s",
		r.cfg.Host, logID(m.Key), now.UTC().Format(time.RFC3339), logging.Token(remote), logging.Quote(reply))
	dir := spool.ArchiveDir(r.cfg.ArchiveDir, r.cfg.Host)
	err := r.archiveInSpool(dir)
	if err == nil {
		_, err = spool.Archive(dir, m, to, note, now)
	}
	if err != nil {
		r.archiveOff = true
		r.sum.ArchiveFailed++
		r.log.Errorf("event=archive-failed host=%s id=%s dir=%s reason=%s", r.cfg.Host, logID(m.Key), logging.Quote(dir),
			logging.Quote(err.Error()+"; the message is removed from the spool as without an archive, and nothing more is archived in this run"))
		return
	}
	r.sum.Archived++
}

// archiveInSpool refuses an archive folder in the spool's directory or
// the spool itself (the configuration refuses the ones it can see; a
// host that only arrives by ETRN is checked here): its files would be
// taken for a host's spool, or sent again.
func (r *run) archiveInSpool(dir string) error {
	inside := func(p, d string) bool {
		p, d = filepath.Clean(p), filepath.Clean(d)
		return p == d || strings.HasPrefix(p, d+string(filepath.Separator))
	}
	sp := filepath.Clean(r.cfg.Spool.Path)
	if inside(dir, filepath.Dir(sp)) || inside(sp, dir) {
		return fmt.Errorf("archive: %s is in the spool's directory %s; set archive_dir outside it", dir, filepath.Dir(sp))
	}
	return nil
}

// pruneArchive removes the host's archive files older than ArchiveMaxAge,
// once per run, after its first pass and bounces, under the host lock.
func (r *run) pruneArchive() {
	if r.cfg.ArchiveDir == "" || r.cfg.ArchiveMaxAge <= 0 || r.pruned {
		return
	}
	r.pruned = true
	dir := spool.ArchiveDir(r.cfg.ArchiveDir, r.cfg.Host)
	if r.archiveInSpool(dir) != nil {
		return // never prune in a spool; archive logged why
	}
	n, err := spool.PruneArchive(dir, r.cfg.ArchiveMaxAge, time.Now())
	if err != nil {
		r.log.Warnf("event=archive-prune-failed host=%s dir=%s reason=%s", r.cfg.Host, logging.Quote(dir), logging.Quote(err.Error()))
		return
	}
	if n > 0 {
		r.log.Infof("event=archive-pruned host=%s dir=%s removed=%d", r.cfg.Host, logging.Quote(dir), n)
	}
}
