// Package e2e holds the end-to-end tests: they build the etrnflush binary
// and run it as a child process against real programs (Exim as writer,
// receiver and ETRN server, Postfix's smtp-sink, fetchmail, xinetd), kill
// it with SIGKILL, fill real file systems and switch to a second user.
//
// They are behind the e2e build tag so that `go test ./...` stays fast;
// `make test` (what CI runs) passes -tags e2e. Without Exim and the other
// programs installed they skip with a one-line reason, unless CI=true.
package e2e
