package sevenbit_test

import (
	"fmt"
	"io"
	"os"
	"strings"

	"etrnflush/sender/sevenbit"
)

// A sender reads the content twice: Scan before MAIL FROM, so that a
// message that cannot be converted is set aside rather than half sent,
// then the Writer between the content and the dot-stuffing encoder.
func Example() {
	msg := "Subject: menu\nContent-Type: text/plain; charset=utf-8\n\nCaf\u00e9 cr\u00e8me = 2\u20ac \n"
	open := func() io.Reader { return strings.NewReader(msg) }

	plan, err := sevenbit.Scan(open())
	if err != nil {
		fmt.Println("refuse:", err)
		return
	}
	if !plan.Converts() {
		fmt.Println("send as it is")
		return
	}
	w := sevenbit.NewWriter(os.Stdout, plan)
	if _, err := io.Copy(w, open()); err != nil {
		fmt.Println("abort:", err)
		return
	}
	if err := w.Close(); err != nil {
		fmt.Println("abort:", err)
	}
	// Output:
	// Subject: menu
	// Content-Type: text/plain; charset=utf-8
	// MIME-Version: 1.0
	// Content-Transfer-Encoding: quoted-printable
	//
	// Caf=C3=A9 cr=C3=A8me =3D 2=E2=82=AC=20
}
