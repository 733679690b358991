package main

import (
	"reflect"
	"strings"
)

// tomlKeys lists the keys of a configuration table as config.Load decodes
// it: the toml tags of v's fields, without the nested tables (maps,
// structs). The docs tests check the man page and the examples against
// these, so a key added to the code and nowhere else fails them.
func tomlKeys(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if k := f.Type.Kind(); tag == "" || tag == "-" || k == reflect.Map || k == reflect.Struct {
			continue
		}
		out = append(out, tag)
	}
	return out
}
