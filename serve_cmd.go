package main

// The serve and passwd commands: flags and config in, the conversation
// itself is package serve's.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"etrnflush/config"
	"etrnflush/logging"
	"etrnflush/plan"
	"etrnflush/serve"
)

func serveCommand(onUsage cli.OnUsageErrorFunc) *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "answer ETRN and ATRN on standard input (inetd, xinetd, systemd Accept=yes)",
		ArgsUsage: " ",
		Flags: commandFlags(
			&cli.BoolFlag{
				Name:  "tls-on-connect",
				Usage: "do the TLS handshake before the greeting (implicit TLS, as on the odmrs port 366), with [serve] tls_cert and tls_key",
			},
		),
		Action:          serveAction,
		OnUsageError:    onUsage,
		HideHelpCommand: true,
	}
}

func passwdCommand(onUsage cli.OnUsageErrorFunc) *cli.Command {
	return &cli.Command{
		Name:            "passwd",
		Usage:           "print a bcrypt hash of a password read from the terminal or standard input, for [user.NAME] password_hash",
		ArgsUsage:       " ",
		Flags:           commandFlags(),
		Action:          passwdAction,
		OnUsageError:    onUsage,
		HideHelpCommand: true,
	}
}

// stdinConn takes the connection inetd, xinetd or systemd (Accept=yes)
// put on standard input, and points descriptors 0 and 1 (and 2, when it
// is the connection too) at /dev/null: from here on only the returned
// net.Conn reaches the client, so no stray write can corrupt the SMTP
// stream, and closing it really closes the connection.
func stdinConn() (net.Conn, error) {
	conn, err := net.FileConn(os.Stdin)
	if err != nil {
		return nil, fmt.Errorf("standard input is not a socket (run serve from inetd, xinetd or a systemd socket with Accept=yes): %w", err)
	}
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = conn.Close() // the open error is what matters
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	fds := []int{0, 1}
	if isSocket(2) {
		fds = append(fds, 2)
	}
	for _, fd := range fds {
		if err := unix.Dup2(null, fd); err != nil {
			_ = conn.Close()
			_ = unix.Close(null)
			return nil, fmt.Errorf("dup2 /dev/null: %w", err)
		}
	}
	if err := unix.Close(null); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("close /dev/null: %w", err)
	}
	return conn, nil
}

func isSocket(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK
}

func serveAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr("serve takes no arguments (it talks SMTP on standard input)")
	}
	unix.Umask(0o077)
	conn, err := stdinConn()
	if err != nil {
		return usageErr("serve: %v", err)
	}
	unavailable := func(err error) error {
		// Tell the client why nothing will happen, then report.
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "421 4.3.0 Service not available, closing\r\n")
		_ = conn.Close()
		return err
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return unavailable(err)
	}
	ss := cfg.ServeSettings()
	tconf, secrets, prepErr := serveSecrets(cfg, ss)
	// Before any file is created (the log, state_dir) or a flush started:
	// started as root by inetd, act as the spool directory's owner, as a
	// flush does, so that what serve and its flushes leave belongs to the
	// user Exim's own flushes run as.
	sw, err := becomeOwner(cfg.SpoolDir)
	if err != nil {
		return unavailable(err)
	}
	logDest := flagString(c, "log")
	if logDest == "" {
		logDest = cfg.Log
	}
	if logDest == "" {
		logDest = "syslog" // never the connection
	} else if err := config.CheckLog(logDest); err != nil {
		return unavailable(usageErr("--log: %v", err))
	}
	logDest, why := rootLogDest(logDest, cfg.SpoolDir)
	// As for a flush, a log file that cannot be opened is no reason to
	// turn the client away: its lines go to syslog, with a warning.
	log := openLogFallback(logDest, flagCtx(c, "verbose").Bool("verbose"), false, c.App.ErrWriter)
	defer func() {
		if cerr := log.Close(); cerr != nil {
			fmt.Fprintf(c.App.ErrWriter, "etrnflush: warning: close log: %v\n", cerr)
		}
	}()
	if why != "" {
		log.Warnf("event=log-fallback log=syslog reason=%s", logging.Quote(why))
	}
	if sw.Changed {
		log.Infof("event=owner-switch %s dir=%s", sw, logging.Quote(sw.Dir))
	}
	if prepErr != nil {
		log.Errorf("event=serve-error error=%s", logging.Quote(oneLine(prepErr.Error())))
		return unavailable(prepErr)
	}
	// A state_dir the spool's user turned into a link must stop serve
	// before a client is answered, not fail one ETRN after another.
	if err := serve.CheckStateDir(ss.StateDir); err != nil {
		log.Errorf("event=serve-error error=%s", logging.Quote(err.Error()))
		return unavailable(&exitError{exNoPerm, err})
	}
	implicit := c.Bool("tls-on-connect")
	if implicit && tconf == nil {
		err := &exitError{exConfig, errors.New("serve --tls-on-connect needs [serve] tls_cert and tls_key")}
		log.Errorf("event=serve-error error=%s", logging.Quote(err.Error()))
		return unavailable(err)
	}
	hostname := cfg.Helo
	if hostname == "" {
		if hostname, err = plan.FQDN(); err != nil {
			log.Errorf("event=serve-error error=%s", logging.Quote(err.Error()))
			return unavailable(&exitError{exConfig, err})
		}
	}
	if len(cfg.Users) > 0 && tconf == nil && !ss.AllowPlaintextAuth {
		log.Warnf("event=serve-warning reason=%s", logging.Quote("[user] tables exist, but AUTH (and so ATRN) is offered only over TLS: set [serve] tls_cert and tls_key"))
	}
	exe, err := os.Executable()
	if err != nil {
		log.Errorf("event=serve-error error=%s", logging.Quote("cannot find my own binary: "+err.Error()))
		return unavailable(&exitError{exConfig, err})
	}
	sp := &serve.Spawner{Exe: exe, Config: cfg.File, Verbose: flagCtx(c, "verbose").Bool("verbose")}
	if logDest != "stderr" {
		sp.Log = logDest
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	// The conversation's own trouble (a client that vanished, a failed
	// handshake) is logged by Serve and is no reason for inetd to care.
	_ = serve.Serve(ctx, conn, &serve.Config{
		Conf:        cfg,
		Serve:       ss,
		Hostname:    hostname,
		TLS:         tconf,
		ImplicitTLS: implicit,
		Secrets:     secrets,
		Log:         log,
		Spawn:       sp.Spawn,
	})
	return nil
}

// serveSecrets reads what may be root's alone, before serve becomes the
// spool's owner: the TLS key and the users' secret files.
func serveSecrets(cfg *config.Config, ss config.ServeSettings) (*tls.Config, map[string]string, error) {
	var tconf *tls.Config
	if ss.TLSCert != "" {
		if err := config.CheckPrivateFile(ss.TLSKey); err != nil && errors.Is(err, config.ErrNotPrivate) {
			return nil, nil, &exitError{exConfig, fmt.Errorf("serve tls_key: %w", err)}
		}
		cert, err := tls.LoadX509KeyPair(ss.TLSCert, ss.TLSKey)
		if err != nil {
			return nil, nil, &exitError{exConfig, fmt.Errorf("serve tls_cert/tls_key: %w", err)}
		}
		tconf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	secrets := map[string]string{}
	for name, u := range cfg.Users {
		if u.SecretFile == "" {
			continue
		}
		pw, err := config.ReadSecret(u.SecretFile)
		if err != nil {
			// A secret others can read is no secret: refuse to run
			// rather than serve that user (or everybody else) halfway.
			return nil, nil, &exitError{exConfig, fmt.Errorf("[user.%s] secret_file: %w", name, err)}
		}
		secrets[name] = pw
	}
	return tconf, secrets, nil
}

// maxPassword is what bcrypt uses of a password; more would be ignored
// silently, so it is refused.
const maxPassword = 72

func passwdAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr("passwd takes no arguments (the password is read from the terminal or standard input)")
	}
	var pw []byte
	var err error
	if isTerminal(os.Stdin) {
		pw, err = readPasswordTwice(os.Stdin, c.App.ErrWriter)
	} else {
		pw, err = readLine(os.Stdin)
	}
	if err != nil {
		return err
	}
	switch {
	case len(pw) == 0:
		return usageErr("empty password")
	case len(pw) > maxPassword:
		return usageErr("password longer than %d octets (bcrypt would ignore the rest)", maxPassword)
	}
	hash, err := bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost)
	if err != nil {
		return usageErr("hash password: %v", err)
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s\n", hash)
	return err
}

// readLine reads the first line of r (a pipe or file), without its line
// end.
func readLine(r io.Reader) ([]byte, error) {
	line, err := bufio.NewReaderSize(r, 1024).ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, usageErr("password line too long")
		}
		return nil, usageErr("read password: %v", err)
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// readPasswordTwice prompts on w and reads the password twice from the
// terminal f with echo off (golang.org/x/term, which knows each system's
// terminal calls).
func readPasswordTwice(f *os.File, w io.Writer) ([]byte, error) {
	fd := int(f.Fd())
	old, err := term.GetState(fd)
	if err != nil {
		return nil, usageErr("terminal: %v", err)
	}
	// Whatever happens, the terminal gets its echo back: ReadPassword
	// restores it when it returns, not when a signal ends the process.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			_ = term.Restore(fd, old)
			fmt.Fprintln(w)
			os.Exit(exUsage)
		case <-done:
		}
	}()
	defer func() {
		close(done)
		signal.Stop(sig)
		_ = term.Restore(fd, old)
	}()
	read := func(prompt string) ([]byte, error) {
		fmt.Fprint(w, prompt)
		line, err := term.ReadPassword(fd)
		fmt.Fprintln(w)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, usageErr("read password: %v", err)
		}
		return bytes.TrimRight(line, "\r\n"), nil
	}
	a, err := read("Password: ")
	if err != nil {
		return nil, err
	}
	b, err := read("Password again: ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(a, b) {
		return nil, usageErr("the passwords differ")
	}
	return a, nil
}
