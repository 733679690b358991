package serve

import (
	"errors"
	"fmt"
	"strings"

	"etrnflush/config"
)

// Line limits. RFC 5321 4.5.3.1.4 allows 512 octets for a command line
// (CRLF included); RFC 4954 4 raises that to 12288 for AUTH and its
// responses, which carry base64.
const (
	maxCommandLine = 512
	maxAuthLine    = 12288
)

var (
	errEmpty   = errors.New("empty command line")
	errBadByte = errors.New("command line holds a control or non-ASCII octet")
	errVerb    = errors.New("command verb is not a word of letters")
)

// parseCommand splits one command line (without its CRLF) into an upper
// case verb and the argument, with the spaces around it removed. Only
// printable ASCII and the tab are allowed: a NUL, a bare CR or an 8-bit
// octet in a command is refused, never passed on.
func parseCommand(line []byte) (verb, arg string, err error) {
	for _, c := range line {
		if (c < 0x20 && c != '\t') || c >= 0x7f {
			return "", "", errBadByte
		}
	}
	s := strings.Trim(string(line), " \t")
	if s == "" {
		return "", "", errEmpty
	}
	v, a, _ := strings.Cut(s, " ")
	if len(v) > 16 {
		return "", "", errVerb
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return "", "", errVerb
		}
	}
	return strings.ToUpper(v), strings.Trim(a, " \t"), nil
}

// etrnKind is what an ETRN argument names (RFC 1985 section 4).
type etrnKind byte

const (
	etrnHost   etrnKind = 'h' // a node: exactly that host
	etrnDomain etrnKind = '@' // @domain: the domain and its subdomains
	etrnQueue  etrnKind = '#' // #queue: a spool by its name
)

// parseETRN validates an ETRN argument: an optional '@' or '#', then a
// host name (letters, digits, hyphens, dots), folded to lower case.
// Nothing else gets through: the name becomes part of a file name and an
// argument of a child process.
func parseETRN(arg string) (etrnKind, string, error) {
	if arg == "" {
		return 0, "", errors.New("ETRN needs a node name")
	}
	kind := etrnHost
	switch arg[0] {
	case '@':
		kind = etrnDomain
	case '#':
		kind = etrnQueue
	}
	name, err := config.CheckHostName(arg)
	if err != nil {
		return 0, "", err
	}
	return kind, name, nil
}

// maxATRNHosts bounds the list of one ATRN command.
const maxATRNHosts = 64

// parseATRN splits "a.example,b.example" (RFC 2645: a comma-separated
// list of domains, possibly empty) into validated lower-case names, each
// once.
func parseATRN(arg string) ([]string, error) {
	if arg == "" {
		return nil, nil
	}
	parts := strings.Split(arg, ",")
	if len(parts) > maxATRNHosts {
		return nil, fmt.Errorf("more than %d domains", maxATRNHosts)
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range parts {
		p = strings.Trim(p, " \t")
		if p != "" && (p[0] == '@' || p[0] == '#') {
			return nil, fmt.Errorf("%q: a domain, without @ or #", p)
		}
		n, err := config.CheckHostName(p)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", p, err)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}
