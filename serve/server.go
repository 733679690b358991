// Package serve is the server side of the front doors: one SMTP
// conversation on a connection handed over by inetd, xinetd or a systemd
// socket. It answers ETRN (RFC 1985) by starting a detached flush, and ATRN
// (RFC 2645) by turning the authenticated connection around and flushing
// down it. It never accepts mail.
package serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"etrnflush/config"
	"etrnflush/logging"
)

// Config is what one conversation needs.
type Config struct {
	Conf  *config.Config
	Serve config.ServeSettings
	// Hostname is this server's name, for the greeting and the EHLO the
	// provider sends after ATRN turned the connection around.
	Hostname string
	// TLS offers STARTTLS when set.
	TLS *tls.Config
	// ImplicitTLS does the TLS handshake (with TLS) before the greeting,
	// as on the odmrs port: everything after it is encrypted, so AUTH and
	// ATRN are offered at once and STARTTLS is not.
	ImplicitTLS bool
	// Secrets are the clear-text passwords of the users with a
	// secret_file, by user name; with one, AUTH CRAM-MD5 is offered.
	Secrets map[string]string
	Log     *logging.Logger
	// Spawn starts a flush of host detached from this conversation,
	// towards to (host:port) when not empty, else towards the host's
	// route. See Spawner.
	Spawn func(host, to string) error
}

// Serve holds one SMTP conversation on conn and closes conn. It returns
// when the client quits or goes away, on the idle or session timeout, or
// after an ATRN delivery; the error is for the log only.
func Serve(ctx context.Context, conn net.Conn, cfg *Config) error {
	s := &session{cfg: cfg, log: cfg.Log, raw: conn, ctx: ctx, deadline: time.Now().Add(cfg.Serve.SessionTimeout)}
	s.setConn(conn)
	s.client, s.clientStr = clientAddr(conn)
	s.log.Infof("event=connect client=%s", s.clientStr)
	err := s.run(ctx)
	if !s.closed {
		if cerr := conn.Close(); cerr != nil && err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("close connection: %w", cerr)
		}
	}
	switch {
	case err == nil || errors.Is(err, io.EOF):
		s.log.Infof("event=disconnect client=%s commands=%d", s.clientStr, s.commands)
		return nil
	default:
		s.log.Infof("event=disconnect client=%s commands=%d error=%s", s.clientStr, s.commands, logging.Quote(err.Error()))
		return err
	}
}

// clientAddr is the peer's IP address, if the connection has one (a unix
// socket has none: such a client is in no network).
func clientAddr(c net.Conn) (netip.Addr, string) {
	ra := c.RemoteAddr()
	if ra == nil {
		return netip.Addr{}, "unknown"
	}
	if ap, err := netip.ParseAddrPort(ra.String()); err == nil {
		return ap.Addr().Unmap(), ap.Addr().Unmap().String()
	}
	return netip.Addr{}, "unknown"
}

type session struct {
	ctx       context.Context // cancelled on SIGTERM: the conversation ends
	cfg       *Config
	log       *logging.Logger
	raw       net.Conn // the connection as handed over
	conn      net.Conn // raw, or the TLS connection on top of it
	br        *bufio.Reader
	bw        *bufio.Writer
	client    netip.Addr
	clientStr string
	helo      string // "" until EHLO/HELO
	tls       bool
	user      string // authenticated user, "" before AUTH
	authFails int
	commands  int
	closed    bool // conn was closed (ATRN's sender closes it)
	// deadline is session_timeout from the connection: no read or write
	// before ATRN's turnaround may go past it.
	deadline time.Time
}

// ioDeadline is the deadline for the next read or write: the idle
// timeout, but never past the session's own.
func (s *session) ioDeadline() time.Time {
	d := time.Now().Add(s.cfg.Serve.IdleTimeout)
	if s.deadline.Before(d) {
		return s.deadline
	}
	return d
}

func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.br = bufio.NewReaderSize(c, 4096)
	s.bw = bufio.NewWriterSize(c, 4096)
}

// errQuit ends the conversation normally.
var errQuit = errors.New("quit")

func (s *session) run(ctx context.Context) error {
	// A signal must not wait for the client's next line: a deadline in
	// the past ends the read in progress (readLine checks ctx after it
	// sets its own deadline, so this one cannot be overwritten unseen).
	stop := context.AfterFunc(ctx, func() { _ = s.raw.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if s.cfg.ImplicitTLS {
		if err := s.handshake(); err != nil {
			return err
		}
	}
	if err := s.reply(220, s.cfg.Hostname+" ESMTP etrnflush: ETRN and ATRN only, no mail accepted"); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			_ = s.reply(421, "4.3.2 "+s.cfg.Hostname+" shutting down")
			return err
		}
		line, err := s.readLine(maxAuthLine)
		if err != nil {
			if err := s.readFailed(err); !errors.Is(err, errQuit) {
				return err
			}
			return nil
		}
		s.commands++
		if s.commands > s.cfg.Serve.MaxCommands {
			s.log.Warnf("event=limit client=%s reason=%s", s.clientStr, logging.Quote(fmt.Sprintf("too many commands (max_commands = %d)", s.cfg.Serve.MaxCommands)))
			_ = s.reply(421, "4.7.0 "+s.cfg.Hostname+" too many commands, closing")
			return nil
		}
		if line == nil {
			if err := s.reply(500, "5.5.2 Line too long"); err != nil {
				return err
			}
			continue
		}
		err = s.command(ctx, line)
		if errors.Is(err, errQuit) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readFailed answers a read that ended the conversation: the idle
// timeout gets its 421 and errQuit; a client that went away gets nothing
// and its error back.
func (s *session) readFailed(err error) error {
	if s.ctx.Err() != nil {
		s.log.Infof("event=closing client=%s reason=%s", s.clientStr, logging.Quote(fmt.Sprint(context.Cause(s.ctx))))
		_ = s.reply(421, "4.3.2 "+s.cfg.Hostname+" shutting down")
		return errQuit
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(s.deadline) {
		s.log.Warnf("event=limit client=%s reason=%s", s.clientStr, logging.Quote(fmt.Sprintf("session lasted session_timeout (%s), closing", s.cfg.Serve.SessionTimeout)))
		_ = s.reply(421, "4.4.2 "+s.cfg.Hostname+" session time limit reached, closing")
		return errQuit
	}
	if errors.As(err, &ne) && ne.Timeout() {
		s.log.Infof("event=limit client=%s reason=%s", s.clientStr, logging.Quote(fmt.Sprintf("idle for %s, closing", s.cfg.Serve.IdleTimeout)))
		_ = s.reply(421, "4.4.2 "+s.cfg.Hostname+" idle timeout, closing")
		return errQuit
	}
	return err
}

// readLine reads one line within the idle timeout and returns it without
// its line end (CRLF, or a bare LF from a lax client). A line longer than
// limit is read to its end and thrown away: nil, nil.
func (s *session) readLine(limit int) ([]byte, error) {
	if err := s.conn.SetReadDeadline(s.ioDeadline()); err != nil {
		return nil, fmt.Errorf("set read deadline: %w", err)
	}
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	var line []byte
	tooLong := false
	for {
		frag, err := s.br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > limit {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && (len(line) > 0 || tooLong) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		break
	}
	if tooLong {
		return nil, nil
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// reply writes one reply line; text must not hold CR or LF.
func (s *session) reply(code int, text string) error {
	return s.replyLines(code, text)
}

// replyLines writes a reply of one or more lines.
func (s *session) replyLines(code int, lines ...string) error {
	// The 421 for session_timeout must still get out: a write gets at
	// least a few seconds.
	wd := s.ioDeadline()
	if floor := time.Now().Add(5 * time.Second); wd.Before(floor) {
		wd = floor
	}
	if err := s.conn.SetWriteDeadline(wd); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		if _, err := fmt.Fprintf(s.bw, "%d%s%s\r\n", code, sep, l); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

func (s *session) command(ctx context.Context, line []byte) error {
	verb, arg, err := parseCommand(line)
	switch {
	case errors.Is(err, errBadByte):
		return s.reply(501, "5.5.2 Syntax error: control or non-ASCII octet in command")
	case err != nil:
		return s.reply(500, "5.5.2 Syntax error, command unrecognized")
	}
	if verb != "AUTH" && len(line) > maxCommandLine-2 {
		return s.reply(500, "5.5.2 Line too long")
	}
	switch verb {
	case "EHLO", "HELO":
		return s.hello(verb, arg)
	case "STARTTLS":
		return s.startTLS(arg)
	case "AUTH":
		return s.auth(arg)
	case "ETRN":
		return s.etrn(arg)
	case "ATRN":
		return s.atrn(ctx, arg)
	case "NOOP":
		return s.reply(250, "2.0.0 OK")
	case "RSET":
		// No transaction exists here; the reply is all RSET needs.
		return s.reply(250, "2.0.0 OK")
	case "HELP":
		return s.replyLines(214,
			"2.0.0 etrnflush serves ETRN and ATRN, and accepts no mail.",
			"2.0.0 Commands: EHLO HELO STARTTLS AUTH ETRN ATRN NOOP RSET HELP QUIT",
			"2.0.0 ETRN host | ETRN @domain | ETRN #queue (RFC 1985)",
			"2.0.0 ATRN [domain,...] after AUTH (RFC 2645)",
			"2.0.0 End of HELP")
	case "QUIT":
		_ = s.reply(221, "2.0.0 "+s.cfg.Hostname+" closing connection")
		return errQuit
	}
	return s.reply(502, "5.5.1 Command not implemented")
}

func (s *session) authOffered() bool {
	return len(s.cfg.Conf.Users) > 0 && (s.tls || s.cfg.Serve.AllowPlaintextAuth)
}

func (s *session) hello(verb, arg string) error {
	if arg == "" || strings.ContainsAny(arg, " \t") {
		return s.reply(501, "5.5.4 Syntax: "+verb+" hostname")
	}
	s.helo = arg
	if verb == "HELO" {
		return s.reply(250, s.cfg.Hostname)
	}
	lines := []string{s.cfg.Hostname + " Hello", "ETRN"}
	if s.authOffered() {
		mechs := "AUTH PLAIN LOGIN"
		if len(s.cfg.Secrets) > 0 {
			mechs = "AUTH CRAM-MD5 PLAIN LOGIN"
		}
		lines = append(lines, mechs, "ATRN")
	}
	if s.cfg.TLS != nil && !s.tls {
		lines = append(lines, "STARTTLS")
	}
	lines = append(lines, "ENHANCEDSTATUSCODES", "HELP")
	return s.replyLines(250, lines...)
}

func (s *session) startTLS(arg string) error {
	switch {
	case s.cfg.TLS == nil:
		return s.reply(502, "5.5.1 STARTTLS not available")
	case s.tls:
		return s.reply(503, "5.5.1 TLS already active")
	case arg != "":
		return s.reply(501, "5.5.4 Syntax: STARTTLS")
	case s.helo == "":
		return s.reply(503, "5.5.1 Send EHLO first")
	}
	if err := s.reply(220, "2.0.0 Ready to start TLS"); err != nil {
		return err
	}
	if s.br.Buffered() > 0 {
		// Commands sent before the handshake would be taken as if they
		// had come over TLS (the CVE-2011-0411 class): end the session.
		s.log.Warnf("event=tls client=%s status=error error=%s", s.clientStr, logging.Quote("sent data after STARTTLS before the TLS handshake; closing"))
		return errors.New("data before the TLS handshake")
	}
	if err := s.handshake(); err != nil {
		return err
	}
	// RFC 3207 4.2: forget everything learnt before the handshake.
	s.helo, s.user = "", ""
	return nil
}

// handshake does the server side of a TLS handshake on the raw
// connection, within the idle and session timeouts.
func (s *session) handshake() error {
	tc := tls.Server(s.raw, s.cfg.TLS)
	if err := s.raw.SetDeadline(s.ioDeadline()); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	if err := tc.Handshake(); err != nil {
		s.log.Warnf("event=tls client=%s status=error error=%s", s.clientStr, logging.Quote("TLS handshake failed: "+err.Error()))
		return fmt.Errorf("TLS handshake: %w", err)
	}
	s.setConn(tc)
	s.tls = true
	st := tc.ConnectionState()
	s.log.Infof("event=tls client=%s status=ok version=%s cipher=%s", s.clientStr, strings.ReplaceAll(tls.VersionName(st.Version), " ", ""), tls.CipherSuiteName(st.CipherSuite))
	return nil
}
