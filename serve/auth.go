package serve

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"etrnflush/logging"

	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"
)

// maxAuthFails ends a conversation after this many failed AUTHs, so one
// connection cannot be used to try passwords at the speed of the network.
const maxAuthFails = 3

var errBadCredentials = errors.New("invalid credentials")

func (s *session) auth(arg string) error {
	switch {
	case len(s.cfg.Conf.Users) == 0:
		return s.reply(502, "5.5.1 AUTH not available")
	case s.helo == "":
		return s.reply(503, "5.5.1 Send EHLO first")
	case s.user != "":
		return s.reply(503, "5.5.1 Already authenticated")
	case !s.tls && !s.cfg.Serve.AllowPlaintextAuth:
		return s.reply(538, "5.7.11 Encryption required for requested authentication mechanism")
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	var user string
	var srv sasl.Server
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		srv = sasl.NewPlainServer(func(identity, username, password string) error {
			user = username
			if identity != "" && identity != username {
				return errBadCredentials
			}
			return s.checkPassword(username, password)
		})
	case sasl.Login:
		srv = &loginServer{check: func(username, password string) error {
			user = username
			return s.checkPassword(username, password)
		}}
	case cramMD5:
		if len(s.cfg.Secrets) == 0 {
			return s.reply(504, "5.5.4 Unrecognized authentication type")
		}
		srv = &cramServer{
			challenge: cramChallenge(s.cfg.Hostname),
			check: func(username, challenge string, digest []byte) error {
				user = username
				return s.checkCRAM(username, challenge, digest)
			},
		}
	default:
		return s.reply(504, "5.5.4 Unrecognized authentication type")
	}
	var resp []byte
	if hasIR {
		ir = strings.TrimSpace(ir)
		if ir != "=" { // RFC 4954: "=" is an empty initial response
			b, err := base64.StdEncoding.DecodeString(ir)
			if err != nil {
				return s.reply(501, "5.5.2 Cannot decode the initial response")
			}
			resp = b
		} else {
			resp = []byte{}
		}
	}
	for round := 0; ; round++ {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			if errors.Is(err, errBadCredentials) {
				return s.authFailed(mech, user)
			}
			return s.reply(501, "5.5.2 Malformed authentication response")
		}
		if done {
			break
		}
		if round >= 4 {
			return s.reply(501, "5.5.2 Too many authentication rounds")
		}
		if err := s.reply(334, base64.StdEncoding.EncodeToString(challenge)); err != nil {
			return err
		}
		line, err := s.readLine(maxAuthLine)
		if err != nil {
			return s.readFailed(err)
		}
		// A continuation line is a line like any command: without
		// counting them, an AUTH that never ends would be a way round
		// max_commands.
		s.commands++
		if s.commands > s.cfg.Serve.MaxCommands {
			s.log.Warnf("event=limit client=%s reason=%s", s.clientStr, logging.Quote(fmt.Sprintf("too many commands (max_commands = %d, AUTH lines included)", s.cfg.Serve.MaxCommands)))
			_ = s.reply(421, "4.7.0 "+s.cfg.Hostname+" too many commands, closing")
			return errQuit
		}
		if line == nil {
			return s.reply(500, "5.5.2 Line too long")
		}
		if string(line) == "*" {
			return s.reply(501, "5.0.0 Authentication cancelled")
		}
		if resp, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(line))); err != nil {
			return s.reply(501, "5.5.2 Cannot decode the response")
		}
	}
	s.user = user
	s.log.Infof("event=auth client=%s auth=%s user=%s status=ok", s.clientStr, logging.Token(strings.ToUpper(mech)), logging.Quote(user))
	return s.reply(235, "2.7.0 Authentication successful")
}

func (s *session) authFailed(mech, user string) error {
	s.authFails++
	s.log.Warnf("event=auth client=%s auth=%s user=%s status=failed", s.clientStr, logging.Token(strings.ToUpper(mech)), logging.Quote(user))
	if s.authFails >= maxAuthFails {
		_ = s.reply(421, "4.7.0 "+s.cfg.Hostname+" too many failed authentications, closing")
		return errQuit
	}
	return s.reply(535, "5.7.8 Authentication credentials invalid")
}

// checkPassword checks a PLAIN or LOGIN password: against the user's
// password_hash when it has one, else against its secret_file.
func (s *session) checkPassword(user, password string) error {
	u, ok := s.cfg.Conf.Users[user]
	if ok && u.PasswordHash != "" {
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
			return errBadCredentials
		}
		return nil
	}
	// An unknown name, or a user with a secret only, costs what a wrong
	// password of the dearest hash does: one comparison against the
	// configured hash of the highest cost. Making a hash here would cost
	// twice that in a fresh process (every inetd connection is one), and
	// its own cost besides: either way the time would tell which users
	// exist.
	if d := s.decoyHash(); d != "" {
		_ = bcrypt.CompareHashAndPassword([]byte(d), []byte(password))
	}
	secret, hasSecret := s.cfg.Secrets[user]
	if !ok || !hasSecret {
		// Compare anyway, so that this path takes as long as the one
		// of a user with a secret.
		_ = subtle.ConstantTimeCompare(decoySecret, []byte(password))
		return errBadCredentials
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(password)) != 1 {
		return errBadCredentials
	}
	return nil
}

// decoySecret stands in for the secret of a user that has none.
var decoySecret = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	return b
}()

// decoyHash is the password hash of the highest bcrypt cost among the
// users (the first by name among equals), "" when no user has one.
func (s *session) decoyHash() string {
	best, bestCost, bestName := "", -1, ""
	for n, u := range s.cfg.Conf.Users {
		c, err := bcrypt.Cost([]byte(u.PasswordHash))
		if err != nil {
			continue
		}
		if c > bestCost || (c == bestCost && n < bestName) {
			best, bestCost, bestName = u.PasswordHash, c, n
		}
	}
	return best
}

// loginServer is the server side of the LOGIN mechanism (a de-facto
// standard, draft-murchison-sasl-login): two prompts, user name then
// password. go-sasl has only its client side.
type loginServer struct {
	check    func(user, password string) error
	user     string
	step     int
	finished bool
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	if l.finished {
		return nil, false, sasl.ErrUnexpectedClientResponse
	}
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough // an initial response is the user name
	case 1:
		l.user = string(resp)
		l.step = 2
		return []byte("Password:"), false, nil
	}
	l.finished = true
	return nil, true, l.check(l.user, string(resp))
}
