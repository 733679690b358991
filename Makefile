# etrnflush: build, test, check, install.
# `make test` is what CI runs (.ci/run installs Exim and unpacks Postfix's
# smtp-sink first, for the real-MTA tests; without them they skip with a
# one-line message).

PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR  = $(PREFIX)/sbin
MANDIR   = $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/etrnflush
# The binary reads /etc/etrnflush/etrnflush.toml whatever PREFIX is.
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
# The spool directory the tmpfiles.d rule creates, for the user Exim
# delivers as (Debian's name by default).
SPOOLDIR ?= /var/spool/etrnflush
EXIM_USER ?= Debian-exim
EXIM_GROUP ?= $(EXIM_USER)
GO      ?= go
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2
# From the nearest vX.Y.Z tag; see packaging/version.sh.
VERSION ?= $(shell ./packaging/version.sh)
# urfave_cli_no_docs drops urfave/cli's man page generator (unused: the
# pages are hand-written) from the binary.
GOFLAGS_BUILD = -trimpath -tags urfave_cli_no_docs -ldflags "-X main.version=$(VERSION)"

.PHONY: all build test unit check fuzz install uninstall deb demo clean

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
	@# Linux is what runs and is tested; the BSDs must at least build.
	GOOS=freebsd $(GO) build -o /dev/null ./...
	GOOS=openbsd $(GO) build -o /dev/null ./...

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

# The units and examples name the binary as /usr/local/sbin/etrnflush
# (the default PREFIX); installed copies name $(SBINDIR)/etrnflush.
UNITS = etrnflush.socket etrnflush@.service etrnflush-tls.socket etrnflush-tls@.service \
	etrnflush-all.service etrnflush-all.timer
SUBST = sed -e 's|/usr/local/sbin/etrnflush|$(SBINDIR)/etrnflush|g'

install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(SYSCONFDIR)/etrnflush $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0755 etrnflush $(DESTDIR)$(SBINDIR)/etrnflush
	install -m 0644 man/etrnflush.8 $(DESTDIR)$(MANDIR)/man8/etrnflush.8
	install -m 0644 man/etrnflush.toml.5 $(DESTDIR)$(MANDIR)/man5/etrnflush.toml.5
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	for f in examples/*; do \
		$(SUBST) "$$f" >$(DESTDIR)$(DOCDIR)/$$f.tmp && chmod 0644 $(DESTDIR)$(DOCDIR)/$$f.tmp && \
		mv $(DESTDIR)$(DOCDIR)/$$f.tmp $(DESTDIR)$(DOCDIR)/$$f || exit 1; \
	done
	for u in $(UNITS); do \
		$(SUBST) examples/$$u >$(DESTDIR)$(UNITDIR)/$$u.tmp && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	sed -e 's|@SPOOLDIR@|$(SPOOLDIR)|g' -e 's|@EXIM_USER@|$(EXIM_USER)|g' -e 's|@EXIM_GROUP@|$(EXIM_GROUP)|g' \
		packaging/etrnflush.tmpfiles.in >$(DESTDIR)$(TMPFILESDIR)/etrnflush.conf
	chmod 0644 $(DESTDIR)$(TMPFILESDIR)/etrnflush.conf
	install -m 0644 packaging/etrnflush.bash $(DESTDIR)$(BASHCOMPDIR)/etrnflush
	install -m 0644 packaging/_etrnflush $(DESTDIR)$(ZSHCOMPDIR)/_etrnflush
	@# Never over an admin's configuration.
	if [ -e $(DESTDIR)$(SYSCONFDIR)/etrnflush/etrnflush.toml ]; then \
		echo "make install: $(DESTDIR)$(SYSCONFDIR)/etrnflush/etrnflush.toml exists, left as it is"; \
	else \
		install -m 0644 examples/etrnflush.toml $(DESTDIR)$(SYSCONFDIR)/etrnflush/etrnflush.toml; \
	fi

# Everything install put there but the configuration.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/etrnflush \
		$(DESTDIR)$(MANDIR)/man8/etrnflush.8 \
		$(DESTDIR)$(MANDIR)/man5/etrnflush.toml.5 \
		$(DESTDIR)$(TMPFILESDIR)/etrnflush.conf \
		$(DESTDIR)$(BASHCOMPDIR)/etrnflush $(DESTDIR)$(ZSHCOMPDIR)/_etrnflush \
		$(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS))
	rm -rf $(DESTDIR)$(DOCDIR)

# A Debian package from a staged "make install" (PREFIX=/usr): a static
# binary (no libc dependency), gzipped man pages, the configuration as a
# conffile, a postinst that creates the spool directory from the
# tmpfiles.d rule. Built with dpkg-deb alone (no debhelper needed).
DEBARCH ?= $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
DEBVERSION = $(VERSION)
DEB ?= etrnflush_$(DEBVERSION)_$(DEBARCH).deb
DEBSTAGE ?= deb-stage

deb:
	rm -rf $(DEBSTAGE) && mkdir -p $(DEBSTAGE)/DEBIAN
	CGO_ENABLED=0 $(MAKE) install DESTDIR=$(abspath $(DEBSTAGE)) PREFIX=/usr \
		ZSHCOMPDIR=/usr/share/zsh/vendor-completions VERSION=$(VERSION)
	gzip -9n $(DEBSTAGE)/usr/share/man/man8/etrnflush.8 $(DEBSTAGE)/usr/share/man/man5/etrnflush.toml.5
	install -m 0644 packaging/deb/conffiles $(DEBSTAGE)/DEBIAN/conffiles
	for f in postinst postrm; do \
		sed -e 's|@SPOOLDIR@|$(SPOOLDIR)|g' -e 's|@EXIM_USER@|$(EXIM_USER)|g' -e 's|@EXIM_GROUP@|$(EXIM_GROUP)|g' \
			packaging/deb/$$f >$(DEBSTAGE)/DEBIAN/$$f && chmod 0755 $(DEBSTAGE)/DEBIAN/$$f || exit 1; \
	done
	sed -e 's|@VERSION@|$(DEBVERSION)|' -e 's|@ARCH@|$(DEBARCH)|' \
		-e "s|@SIZE@|$$(du -sk --exclude=DEBIAN $(DEBSTAGE) | cut -f1)|" \
		packaging/deb/control.in >$(DEBSTAGE)/DEBIAN/control
	dpkg-deb --root-owner-group --build $(DEBSTAGE) $(DEB)
	rm -rf $(DEBSTAGE)
	@echo "built $(DEB)"

demo:
	GO=$(GO) ./demo/run.sh

# The measuring harness (bench/): round trips through a delaying proxy,
# loopback throughput, peak RSS, all of the freshly built binary in one
# run. BENCHFLAGS passes options to it (e.g. -only rt -rtt 50ms).
.PHONY: bench
bench: build
	$(GO) run ./bench -bin ./etrnflush $(BENCHFLAGS)

clean:
	rm -f etrnflush etrnflush_*.deb
	rm -rf deb-stage
