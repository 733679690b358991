package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress draws a flush's live line on a terminal: messages and octets
// settled of those the spool held at the start, the rate, and the time
// left at that rate. It redraws at most every progressEvery, and clears
// its line before a log line is written to the same terminal (see
// logging.Logger.SetBeforeLine); the next update draws it again.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	host     string
	total    int
	bytes    int64
	start    time.Time
	last     time.Time
	drawn    bool
	done     int
	doneSize int64
}

// progressEvery bounds how often the line is redrawn: often enough to
// look alive, rarely enough to cost nothing next to the flush.
const progressEvery = 200 * time.Millisecond

func newProgress(w io.Writer, host string, total int, bytes int64) *progress {
	p := &progress{w: w, host: host, total: total, bytes: bytes, start: time.Now()}
	p.mu.Lock()
	p.draw()
	p.mu.Unlock()
	return p
}

// update is flush.Config.Progress.
func (p *progress) update(done int, size int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.doneSize = done, size
	if time.Since(p.last) >= progressEvery || !p.drawn {
		p.draw()
	}
}

// clear removes the line, if it is shown.
func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.erase()
}

func (p *progress) erase() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

func (p *progress) draw() {
	// Mail that arrived during the flush is settled too.
	total, bytes := max(p.total, p.done), max(p.bytes, p.doneSize)
	el := time.Since(p.start)
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = float64(p.doneSize) / s
	}
	left := "--:--"
	if rate > 0 {
		left = clock(time.Duration(float64(bytes-p.doneSize) / rate * float64(time.Second)))
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s: %d/%d messages, %s/%s, %s/s, %s left", p.host, p.done, total, octets(p.doneSize), octets(bytes), octets(int64(rate)), left)
	p.drawn = true
	p.last = time.Now()
}

// clock writes a duration as M:SS, or H:MM:SS from an hour on.
func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// octets writes a size in B, KiB, MiB or GiB.
func octets(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
