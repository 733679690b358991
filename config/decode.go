package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Errors is every problem found in one file, in file order, so that an
// admin fixes them in one pass instead of one run per error.
type Errors []*Error

func (e Errors) Error() string {
	if len(e) == 1 {
		return e[0].Error()
	}
	return fmt.Sprintf("%s (and %d more; etrnflush check-config lists them all)", e[0].Error(), len(e)-1)
}

// Unwrap lets errors.As find the first *Error (exit 78).
func (e Errors) Unwrap() []error {
	out := make([]error, len(e))
	for i, x := range e {
		out[i] = x
	}
	return out
}

// errorList collects the errors of one file.
type errorList struct {
	file string
	data []byte
	errs []*Error
}

func (l *errorList) add(err error) {
	if err == nil {
		return
	}
	if e, ok := err.(*Error); ok {
		l.errs = append(l.errs, e)
		return
	}
	l.errs = append(l.errs, &Error{File: l.file, Msg: oneLine(err.Error())})
}

// result gives nil, the one error, or all of them in file order (errors
// without a line last, in the order found).
func (l *errorList) result() error {
	switch len(l.errs) {
	case 0:
		return nil
	case 1:
		return l.errs[0]
	}
	errs := append(Errors{}, l.errs...)
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Line, errs[j].Line
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		return a < b
	})
	return errs
}

// decodeAll decodes the file one key at a time into c, so that every
// value of the wrong type and every unknown key is reported, not only
// the first (the TOML decoder stops at the first). A key that fails
// keeps its default.
//
// It reports false after a syntax error, after which nothing can be read.
func decodeAll(l *errorList, data []byte, c *Config) bool {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			l.add(&Error{File: l.file, Line: pe.Position.Line, Key: pe.LastKey, Msg: oneLine(pe.Message)})
		} else {
			l.add(decodeError(l.file, data, err))
		}
		return false
	}
	d := &decoder{l: l, md: &md, data: data}
	d.table(top, reflect.ValueOf(c).Elem(), nil)
	return true
}

type decoder struct {
	l    *errorList
	md   *toml.MetaData
	data []byte
}

// tomlFields maps a struct's toml tags to its field indexes.
func tomlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("toml")
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	return m
}

func (d *decoder) table(prims map[string]toml.Primitive, dst reflect.Value, path toml.Key) {
	fields := tomlFields(dst.Type())
	keys := make([]string, 0, len(prims))
	for k := range prims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := prims[k]
		key := append(append(toml.Key{}, path...), k)
		fi, ok := fields[k]
		if !ok {
			d.unknown(key, fields)
			continue
		}
		fv := dst.Field(fi)
		switch {
		case fv.Kind() == reflect.Map && fv.Type().Elem().Kind() == reflect.Struct:
			if !d.isTable(key) {
				continue
			}
			var sub map[string]toml.Primitive
			if err := d.md.PrimitiveDecode(p, &sub); err != nil {
				d.l.add(decodeError(d.l.file, d.data, err))
				continue
			}
			m := reflect.MakeMap(fv.Type())
			for name, sp := range sub {
				if !d.isTable(append(append(toml.Key{}, key...), name)) {
					continue
				}
				var inner map[string]toml.Primitive
				if err := d.md.PrimitiveDecode(sp, &inner); err != nil {
					d.l.add(decodeError(d.l.file, d.data, err))
					continue
				}
				ev := reflect.New(fv.Type().Elem()).Elem()
				d.table(inner, ev, append(append(toml.Key{}, key...), name))
				m.SetMapIndex(reflect.ValueOf(name), ev)
			}
			fv.Set(m)
		case fv.Kind() == reflect.Struct:
			if !d.isTable(key) {
				continue
			}
			var sub map[string]toml.Primitive
			if err := d.md.PrimitiveDecode(p, &sub); err != nil {
				d.l.add(decodeError(d.l.file, d.data, err))
				continue
			}
			d.table(sub, fv, key)
		default:
			v := reflect.New(fv.Type())
			if err := d.md.PrimitiveDecode(p, v.Interface()); err != nil {
				d.l.add(decodeError(d.l.file, d.data, err))
				continue
			}
			fv.Set(v.Elem())
		}
	}
}

// isTable reports whether key holds a table, and adds an error when it
// does not: decoding a string or a number into a map of primitives does
// not fail, so `host."x" = "mx.x"` would otherwise become host x with
// every default (and its mail would go to the MX hosts).
func (d *decoder) isTable(key toml.Key) bool {
	// A table made implicitly by a dotted key (host."x".route = ...) has
	// no type of its own in MetaData: "".
	if t := d.md.Type(key...); t != "Hash" && t != "" {
		d.l.add(&Error{File: d.l.file, Line: keyLine(d.data, key), Key: key.String(),
			Msg: fmt.Sprintf("must be a table ([%s]), not a %s", key.String(), tomlValueName(t))})
		return false
	}
	return true
}

// tomlValueName is a TOML type (MetaData.Type) as the file's author knows it.
func tomlValueName(t string) string {
	switch t {
	case "String":
		return "string"
	case "Integer", "Float":
		return "number"
	case "Bool":
		return "boolean"
	case "Array":
		return "list"
	case "ArrayHash":
		return "list of tables"
	case "Datetime", "DatetimeLocal", "DateLocal", "TimeLocal":
		return "date"
	}
	return "value of type " + strings.ToLower(t)
}

// unknown reports a key that is not one of its table's, with the likeliest
// fix: an unquoted dotted host name, a key of another table, a typo.
func (d *decoder) unknown(key toml.Key, fields map[string]int) {
	msg := "unknown key"
	last := key[len(key)-1]
	isTable := d.md.Type(key...) == "Hash"
	switch {
	case len(key) == 3 && (key[0] == "host" || key[0] == "user") && isTable:
		// [host.cust1.example] is host "cust1" with a table "example".
		name := key[1] + "." + key[2]
		msg = fmt.Sprintf("unknown key: [%s.%s.%s] is read as %s %q with a table %q; a name with dots must be quoted: [%s.%q]",
			key[0], key[1], key[2], key[0], key[1], key[2], key[0], name)
	case len(key) == 1 && contains(scalarKeys(Host{}), last):
		msg = fmt.Sprintf("unknown key: %s is set per host, in a [host.\"NAME\"] table", last)
	case len(key) == 3 && key[0] == "host" && contains(scalarKeys(Config{}), last):
		msg = fmt.Sprintf("unknown key: %s is a global key; keys after a [table] header belong to that table, so move it above the first one", last)
	default:
		names := make([]string, 0, len(fields))
		for n := range fields {
			names = append(names, n)
		}
		if s := suggest(last, names); s != "" {
			msg = fmt.Sprintf("unknown key; did you mean %q?", s)
		}
	}
	d.l.add(&Error{File: d.l.file, Line: keyLine(d.data, key), Key: key.String(), Msg: msg})
}

// scalarKeys lists a table's own keys: the toml tags of v's fields, not
// the nested tables (maps, structs).
func scalarKeys(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if k := f.Type.Kind(); tag == "" || tag == "-" || k == reflect.Map || k == reflect.Struct {
			continue
		}
		out = append(out, tag)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest gives the known name closest to a misspelt one, if it is close
// enough to be a typo (two edits, one for short names).
func suggest(s string, known []string) string {
	sort.Strings(known)
	best, bestD := "", 3
	if len(s) <= 4 {
		bestD = 2
	}
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Damerau-Levenshtein distance (adjacent swaps count
// one edit) between two short ASCII strings.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// keyLine finds the line of key in the file, for error messages: the
// line that sets it inside its table, else the header of the nearest
// enclosing table, else 0. BurntSushi/toml keeps key positions to itself.
func keyLine(data []byte, key toml.Key) int {
	for n := len(key); n > 0; n-- {
		if l := findKey(data, key[:n]); l > 0 {
			return l
		}
	}
	return 0
}

func findKey(data []byte, key toml.Key) int {
	want := key.String()
	var table toml.Key
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			table = parseKey(strings.Trim(strings.TrimSpace(stripComment(t)), "[]"))
			if table.String() == want {
				return i + 1
			}
			continue
		}
		k, _, ok := strings.Cut(t, "=")
		if !ok || strings.HasPrefix(t, "#") {
			continue
		}
		full := append(append(toml.Key{}, table...), parseKey(strings.TrimSpace(k))...)
		if full.String() == want {
			return i + 1
		}
	}
	return 0
}

func stripComment(s string) string {
	if i := strings.LastIndex(s, "#"); i >= 0 && strings.Count(s[:i], `"`)%2 == 0 {
		return s[:i]
	}
	return s
}

// parseKey reads a dotted TOML key of bare and quoted parts, spaces
// around the dots allowed.
func parseKey(s string) toml.Key {
	var k toml.Key
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' || s[0] == '\'' {
			end := strings.IndexByte(s[1:], s[0])
			if end < 0 {
				return append(k, s)
			}
			k = append(k, s[1:end+1])
			s = strings.TrimPrefix(strings.TrimSpace(s[end+2:]), ".")
			continue
		}
		part, rest, _ := strings.Cut(s, ".")
		k = append(k, strings.TrimSpace(part))
		s = rest
	}
	return k
}
