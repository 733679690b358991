package sevenbit_test

import (
	"bytes"
	"errors"
	"testing"

	"etrnflush/sender/sevenbit"
)

// FuzzConvert: whatever the input, Scan either refuses it with one of
// the package's errors or the Writer makes 7-bit output that does not
// depend on how the input was split, equals the input when Scan found
// nothing to convert, and converts to itself. Without a plan the Writer
// may refuse, but never lets an 8-bit octet through.
func FuzzConvert(f *testing.F) {
	for _, tc := range convertCases {
		f.Add([]byte(tc.in), 1)
	}
	f.Add([]byte("Content-Type: message/rfc822\n\nnot a field\n\xe9"), 5)
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\n\n--b\r\n\r\n\xe9 \r\n--b--"), 9)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		if split < 0 {
			split = -split
		}
		split = split%97 + 1
		for _, plan := range []bool{true, false} {
			out, _, err := convert(in, plan, split)
			if err != nil {
				for _, e := range []error{sevenbit.ErrHeader8Bit, sevenbit.ErrUnconvertible, sevenbit.ErrUnlabeled8Bit, sevenbit.ErrNesting, sevenbit.ErrHeaderTooLong} {
					if errors.Is(err, e) {
						err = nil
					}
				}
				if err != nil {
					t.Fatalf("plan %v: unexpected error %v", plan, err)
				}
				if plan {
					return
				}
				continue
			}
			if i := bytes.IndexFunc(out, func(r rune) bool { return r >= 0x80 }); i >= 0 {
				t.Fatalf("plan %v: 8-bit octet at %d of %q", plan, i, out)
			}
			if plan {
				check(t, in)
			}
		}
	})
}
