package serve

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // CRAM-MD5 (RFC 2195) is HMAC-MD5 by definition; RFC 2645 requires it
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// cramMD5 is the SASL name of RFC 2195's mechanism. go-sasl has no
// server side for it, so it is here: one challenge, one response, an
// HMAC-MD5 keyed with the clear-text secret.
const cramMD5 = "CRAM-MD5"

// cramChallenge makes a fresh challenge in RFC 2195's shape, a message id
// <random.timestamp@hostname>. The random part keeps two challenges from
// ever being equal, so a digest seen once cannot be replayed.
func cramChallenge(hostname string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	return fmt.Sprintf("<%s.%d@%s>", hex.EncodeToString(b), time.Now().Unix(), hostname)
}

// cramServer is the server side of CRAM-MD5.
type cramServer struct {
	challenge string
	check     func(user, challenge string, digest []byte) error
	step      int
}

var errCRAMSyntax = errors.New("CRAM-MD5 response is not \"user digest\"")

func (c *cramServer) Next(resp []byte) ([]byte, bool, error) {
	switch c.step {
	case 0:
		c.step = 1
		if len(resp) > 0 {
			// The client speaks second: an initial response makes no
			// sense in this mechanism.
			return nil, false, sasl.ErrUnexpectedClientResponse
		}
		return []byte(c.challenge), false, nil
	case 1:
		c.step = 2
		// RFC 2195: the user name, a space, then the digest as 32
		// lower-case hex digits. The name may itself hold spaces: the
		// last one separates.
		i := strings.LastIndexByte(string(resp), ' ')
		if i <= 0 {
			return nil, false, errCRAMSyntax
		}
		user, hexDigest := string(resp[:i]), string(resp[i+1:])
		digest, err := hex.DecodeString(hexDigest)
		if err != nil || len(digest) != md5.Size {
			return nil, false, errCRAMSyntax
		}
		return nil, true, c.check(user, c.challenge, digest)
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}

// checkCRAM checks a CRAM-MD5 digest against the user's secret. A user
// without one, or an unknown name, is checked against a random key, so
// that the work (and the time) is the same and the answer is "invalid".
func (s *session) checkCRAM(user, challenge string, digest []byte) error {
	secret, has := s.cfg.Secrets[user]
	key := []byte(secret)
	if !has {
		key = decoySecret
	}
	m := hmac.New(md5.New, key)
	m.Write([]byte(challenge))
	good := hmac.Equal(m.Sum(nil), digest) // constant time
	if !good || !has {
		return errBadCredentials
	}
	return nil
}
