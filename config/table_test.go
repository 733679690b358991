package config

import (
	"strings"
	"testing"
)

// TestPlainValueWhereTableBelongs: a string or number where a host, user
// or serve table belongs is an error naming the key, never a table with
// every default (host "cust1.example" would lose its route and its mail
// would go to the MX hosts).
func TestPlainValueWhereTableBelongs(t *testing.T) {
	for _, tc := range []struct{ text, key string }{
		{`host."cust1.example" = "mx.cust1.example"`, `cust1.example`},
		{"[host]\n\"a.example\" = 3", `a.example`},
		{`serve = "x"`, `serve`},
		{`host = "x"`, `host`},
		{`user.bob = "secret"`, `bob`},
	} {
		_, err := loadText(t, "\n"+tc.text+"\n")
		if err == nil || !strings.Contains(err.Error(), "must be a table") || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: %v, want a 'must be a table' error naming %s", tc.text, err, tc.key)
		}
	}
}
