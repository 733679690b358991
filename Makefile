# etrnflush: build, test, check, install.
# `make test` is what CI runs (.ci/run installs Exim and unpacks Postfix's
# smtp-sink first, for the real-MTA tests; without them they skip with a
# one-line message).

PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR  = $(PREFIX)/sbin
MANDIR   = $(PREFIX)/share/man
GO      ?= go
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# urfave_cli_no_docs drops urfave/cli's man page generator (unused: the
# pages are hand-written) from the binary.
GOFLAGS_BUILD = -trimpath -tags urfave_cli_no_docs -ldflags "-X main.version=$(VERSION)"

.PHONY: all build test unit check fuzz install uninstall demo clean

all: build

build:
	$(GO) build $(GOFLAGS_BUILD) -o etrnflush .

# `make test` runs everything, the end-to-end suite in e2e/ included (it is
# behind the e2e build tag); `make unit` only the packages' own tests, the
# quick loop while editing. The e2e package runs its tests one after the
# other (about 4 minutes on an idle 2-core machine, far more when it is
# loaded): go test's default 10-minute limit per package is too tight.
test:
	$(GO) vet -tags e2e ./...
	$(GO) test -race -count=1 -timeout 45m -tags e2e ./...

unit:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

check:
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet -tags e2e ./...
	$(GO) run $(STATICCHECK) -tags e2e ./...

# Every parser's fuzz target, FUZZTIME each; seeds live in */testdata/fuzz.
FUZZTIME ?= 30s
FUZZ = bsmtp:FuzzReader bsmtp:FuzzUnstuff sender:FuzzEncoder sender:FuzzReadReply \
	config:FuzzCheckHostName config:FuzzLoad spool:FuzzParseRecord spool:FuzzLoadJournal \
	spool:FuzzParseMailstoreEnv spool:FuzzMaildirEnvelope \
	serve:FuzzParseCommand serve:FuzzConversation
fuzz:
	@set -e; for t in $(FUZZ); do \
		echo "== $$t"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) ./$${t%%:*}; \
	done

install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 0755 etrnflush $(DESTDIR)$(SBINDIR)/etrnflush
	install -m 0644 man/etrnflush.8 $(DESTDIR)$(MANDIR)/man8/etrnflush.8
	install -m 0644 man/etrnflush.toml.5 $(DESTDIR)$(MANDIR)/man5/etrnflush.toml.5

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/etrnflush \
		$(DESTDIR)$(MANDIR)/man8/etrnflush.8 \
		$(DESTDIR)$(MANDIR)/man5/etrnflush.toml.5

demo:
	GO=$(GO) ./demo/run.sh

# The measuring harness (bench/): round trips through a delaying proxy,
# loopback throughput, peak RSS, all of the freshly built binary in one
# run. BENCHFLAGS passes options to it (e.g. -only rt -rtt 50ms).
.PHONY: bench
bench: build
	$(GO) run ./bench -bin ./etrnflush $(BENCHFLAGS)

clean:
	rm -f etrnflush
