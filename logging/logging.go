// Package logging writes etrnflush's log lines: one key=value line per
// event, event= first, to stderr, a file or syslog, for the flush engine,
// the server and main alike. Quote and Token make text from the network or
// a spool safe for one field of one line: a hostile server or file name
// must not be able to end a field, forge a line or flood the log.
package logging

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Logger writes one line per event to stderr, a file or syslog. Under Exim
// and inetd stdout and stderr are not ours, so the destination is chosen by
// the caller, never assumed.
type Logger struct {
	mu      sync.Mutex
	w       io.Writer      // stderr or file; nil when syslog is used
	sys     *syslog.Writer // syslog; nil otherwise
	closer  io.Closer
	verbose bool
	pid     int
	trace   bool   // -vv: the SMTP transcript too
	before  func() // called before each line is written to w (see SetBeforeLine)
}

// SetBeforeLine makes the logger call f before it writes each line to
// standard error or a file: a live progress line on the same terminal
// is cleared first, so that the two never share a line.
func (l *Logger) SetBeforeLine(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.before = f
}

// SetTrace turns the SMTP transcript on (-vv; see Tracef).
func (l *Logger) SetTrace(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trace = on
}

// Tracing reports whether the transcript is wanted.
func (l *Logger) Tracing() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.trace
}

// Tracef logs a transcript line: only with -vv.
func (l *Logger) Tracef(format string, args ...any) {
	if l.Tracing() {
		l.logf(lvTrace, format, args...)
	}
}

// Stderr reports whether the log goes to standard error.
func (l *Logger) Stderr() bool { return l != nil && l.w == os.Stderr }

// New opens dest: "stderr", "syslog" or an absolute file name
// (appended to, created 0640).
func New(dest string, verbose bool) (*Logger, error) {
	l := &Logger{verbose: verbose, pid: os.Getpid()}
	switch dest {
	case "stderr", "":
		l.w = os.Stderr
	case "syslog":
		w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, "etrnflush")
		if err != nil {
			return nil, fmt.Errorf("open syslog: %w", err)
		}
		l.sys, l.closer = w, w
	default:
		// Never through a symbolic link: the log's directory may be
		// writable by a less trusted user.
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		l.w, l.closer = f, f
	}
	return l, nil
}

// NewWriter logs to w (tests, and --log stderr).
func NewWriter(w io.Writer, verbose bool) *Logger {
	return &Logger{w: w, verbose: verbose, pid: os.Getpid()}
}

// Close closes a log file or the syslog connection.
func (l *Logger) Close() error {
	if l == nil || l.closer == nil {
		return nil
	}
	return l.closer.Close()
}

type level int

const (
	lvTrace level = iota
	lvDebug
	lvInfo
	lvWarn
	lvErr
)

func (l *Logger) logf(lv level, format string, args ...any) {
	if l == nil || (lv <= lvDebug && !l.verbose && !l.trace) {
		return
	}
	if l.sys != nil {
		line := fmt.Sprintf(format, args...)
		l.mu.Lock()
		defer l.mu.Unlock()
		// A failing syslog cannot be reported anywhere better.
		switch lv {
		case lvTrace, lvDebug:
			_ = l.sys.Debug(line)
		case lvInfo:
			_ = l.sys.Info(line)
		case lvWarn:
			_ = l.sys.Warning(line)
		default:
			_ = l.sys.Err(line)
		}
		return
	}
	// One line per message: built in a reused buffer with one format
	// pass and written with one write, not formatted twice into fresh
	// strings.
	bp := linePool.Get().(*[]byte)
	b := (*bp)[:0]
	if l.w != os.Stderr {
		b = time.Now().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00 ")
	}
	b = append(b, "etrnflush["...)
	b = strconv.AppendInt(b, int64(l.pid), 10)
	b = append(b, "]: "...)
	switch lv {
	case lvWarn:
		b = append(b, "warning: "...)
	case lvErr:
		b = append(b, "error: "...)
	}
	b = fmt.Appendf(b, format, args...)
	b = append(b, '\n')
	l.mu.Lock()
	if l.before != nil {
		l.before() // under the lock: no other line gets between
	}
	_, _ = l.w.Write(b)
	l.mu.Unlock()
	if cap(b) <= maxPooledLine {
		*bp = b
		linePool.Put(bp)
	}
}

// linePool holds the buffers log lines are built in; an unusually long
// line's buffer is left to the collector.
var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

const maxPooledLine = 16 << 10

// Debugf logs only with -v.
func (l *Logger) Debugf(format string, args ...any) { l.logf(lvDebug, format, args...) }

// Infof logs an ordinary event.
func (l *Logger) Infof(format string, args ...any) { l.logf(lvInfo, format, args...) }

// Warnf logs something the admin should look at.
func (l *Logger) Warnf(format string, args ...any) { l.logf(lvWarn, format, args...) }

// Errorf logs a failure.
func (l *Logger) Errorf(format string, args ...any) { l.logf(lvErr, format, args...) }

// MaxText caps remote and local text in a log line: a hostile server must
// not be able to flood or forge log lines.
const MaxText = 300

// Quote makes text safe for one log line: printable ASCII only, capped, in
// double quotes.
func Quote(s string) string {
	if len(s) > MaxText {
		s = s[:MaxText] + "..."
	}
	if plainASCII(s) {
		// What QuoteToASCII makes of it, without building it twice.
		return `"` + s + `"`
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			b.WriteByte('?')
			continue
		}
		b.WriteRune(r)
	}
	return strconv.QuoteToASCII(b.String())
}

// plainASCII: printable ASCII without a quote or a backslash, which
// Quote and escape leave as it is.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Token makes a short value from outside (a name, a mechanism) safe as
// an unquoted log field: see escape.
func Token(s string) string { return escape(s) }

// escape writes the octets that could end a log field, or confuse a
// terminal, as \xHH, and caps the length.
func escape(a string) string {
	if len(a) > MaxText {
		a = a[:MaxText] + "..."
	}
	if plainASCII(a) && !strings.Contains(a, " ") {
		return a
	}
	var b strings.Builder
	for i := 0; i < len(a); i++ {
		c := a[i]
		if c <= ' ' || c >= 0x7f || c == '\\' || c == '"' {
			fmt.Fprintf(&b, "\\x%02x", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
