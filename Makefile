# twinblock — see README.md. `make test` is what CI runs (.ci/run).
SHELL     := /bin/bash
GO        ?= go
BIN       := bin/twinblock
PKGS      := ./...
# Execution counts, not durations: a duration -fuzztime races its own
# deadline in go1.26 and fails with "context deadline exceeded" on a busy
# machine (golang/go#75804, fixed in go1.27).
FUZZTIME  ?= 300000x
# Packages whose fuzz targets `make fuzz` runs, as PKG:TARGET.
FUZZ_TARGETS := ./nbd:FuzzDecodeRequestHeader ./nbd:FuzzTransmission ./nbd:FuzzHandshake ./bitmap:FuzzDecodeRLE \
	./pkg/meta:FuzzDecodeSuperblock ./pkg/meta:FuzzDecodeALTx ./pkg/config:FuzzParse \
	./replication:FuzzDecode ./pkg/quorum:FuzzUnmarshal

.PHONY: all build test unit integration race lint fuzz fuzz-short demo bench torture torture-inprocess torture-real torture-short clean install

all: build

build:
	$(GO) build -o $(BIN) ./cmd/twinblock

# The whole suite: unit tests with the race detector, the fuzz targets run
# briefly on top of their checked-in corpus, and the integration tests
# against real clients (nbdinfo, qemu-io, nbdcopy, fio, nbdfuse + ext4, the
# kernel's nbd-client in a qemu VM).
test: deps lint unit torture-short fuzz-short integration

# The Debian packages the tests need (scripts/deps.sh, shared with .ci/run):
# installed when run as root with apt-get, otherwise listed if missing (their
# tests skip). A failed install does not stop the tests here; .ci/run stops.
.PHONY: deps
deps:
	@bash scripts/deps.sh || echo "deps: installing the test packages failed; the tests that need them skip (or fail under TWINBLOCK_REQUIRE_TOOLS=1)" >&2

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)
	$(GO) test -p 1 -count=1 -run 'DoesNotAllocate' ./nbd ./replication ./pkg/meta ./pkg/node   # allocation counts need the non-race build; -p 1: a loaded machine runs fewer iterations and the setup's allocations weigh more

integration:
	$(GO) test -count=1 -timeout 30m -v ./integration
	$(GO) test -count=1 -timeout 15m -v ./integration/torture -args -torture.duration=60s   # the real-process torture suite, short

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) mod tidy -diff

fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
	echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

fuzz-short:
	$(MAKE) fuzz FUZZTIME=20000x

# The in-process, model-based torture test (pkg/node TestTorture): two
# nodes on crashable disks, the in-memory network and a fake clock, under
# random faults. DURATION bounds the run; a failure prints the seed that
# replays it (docs/torture.md). make test runs TORTURE_EPISODES of them,
# failing on a lost, divergent or dishonest one (a pair that does not heal
# in time is logged: docs/torture.md lists those still open).
DURATION ?= 60s
TORTURE_EPISODES ?= 100
# make test's episodes with a quorum group (-torture.quorum): slower, a
# takeover waits for a fence-peer that cannot commit (5 s).
TORTURE_QUORUM_EPISODES ?= 30
# Episodes run at once: they wait on goroutines as much as they compute,
# so 4 keep 2 cores busy (about 3x the episodes per minute of 1).
TORTURE_PARALLEL ?= 4
# make torture runs both suites, each for DURATION.
torture: torture-inprocess torture-real

torture-inprocess:
	$(GO) test -count=1 -timeout 0 -run '^TestTorture$$' -v ./pkg/node -args -torture.duration=$(DURATION) -torture.parallel=$(TORTURE_PARALLEL) $(TORTURE_ARGS)

# The real-process torture suite (integration/torture TestRealTorture): two
# daemons, a ledger writer over NBD, SIGKILL/SIGSTOP, a faulty peer link and
# failing disks; prints episodes by fault, lost, divergent (docs/torture.md).
torture-real:
	$(GO) test -count=1 -timeout 0 -run '^TestRealTorture$$' -v ./integration/torture -args -torture.duration=$(DURATION)

torture-short:
	$(GO) test -count=1 -timeout 20m -run '^TestTorture$$' -v ./pkg/node -args -torture.episodes=$(TORTURE_EPISODES) -torture.parallel=$(TORTURE_PARALLEL) -torture.strict=false
	$(GO) test -count=1 -timeout 20m -run '^TestTorture$$' -v ./pkg/node -args -torture.quorum -torture.episodes=$(TORTURE_QUORUM_EPISODES) -torture.parallel=$(TORTURE_PARALLEL) -torture.strict=false   # with a quorum group (docs/torture.md)

demo: build
	./$(BIN) demo

bench: build
	BENCH_EXTRA="integration/bench/replicated.sh integration/bench/variants.sh integration/bench/qemu.sh $$BENCH_EXTRA" bash integration/bench/bench.sh $(BIN)
	bash integration/bench/resync.sh $(BIN)
	$(GO) run ./integration/bench/mdscale -twinblock $(BIN)
	bash integration/bench/memory.sh $(BIN)
	bash integration/bench/profile.sh $(BIN)

clean:
	rm -rf bin integration.log

# make install [PREFIX=/usr/local] [DESTDIR=stage]: the binary in SBINDIR
# (as drbdadm), its man pages (section 8: twinblock(8) and one page per
# verb, from the cobra command tree by internal/tools/gendocs), shell
# completion for bash, zsh and fish (resource names from --config), the
# systemd units (twinblock.service, twinblock@RES.service,
# twinblock-configured.target; none is enabled), the cluster scripts when
# they are in the tree (the OCF agent ocf:twinblock:twinblock, the
# Heartbeat script twinblockdisk) and an example configuration beside
# twinblock.conf (which it never writes). DESTDIR stages the tree for a
# package; the paths written into the units leave it out.
PREFIX         ?= /usr/local
DESTDIR        ?=
SBINDIR        ?= $(PREFIX)/sbin
MANDIR         ?= $(PREFIX)/share/man
BASHCOMPDIR    ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR     ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR    ?= $(PREFIX)/share/fish/vendor_completions.d
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR     ?= /etc
OCFDIR         ?= /usr/lib/ocf/resource.d
HEARTBEATDIR   ?= $(SYSCONFDIR)/ha.d/resource.d
INSTALL        ?= install

# Where the generated man pages wait to be installed (clean removes them).
MANBUILD       := $(dir $(BIN))man

install: build
	rm -rf $(MANBUILD)
	$(GO) run ./internal/tools/gendocs -man $(MANBUILD)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) \
		$(DESTDIR)$(FISHCOMPDIR) $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSCONFDIR)/twinblock
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/twinblock
	$(INSTALL) -m 0644 $(MANBUILD)/*.8 $(DESTDIR)$(MANDIR)/man8/
	$(BIN) completion bash > $(DESTDIR)$(BASHCOMPDIR)/twinblock
	$(BIN) completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_twinblock
	$(BIN) completion fish > $(DESTDIR)$(FISHCOMPDIR)/twinblock.fish
	chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/twinblock $(DESTDIR)$(ZSHCOMPDIR)/_twinblock $(DESTDIR)$(FISHCOMPDIR)/twinblock.fish
	for u in scripts/systemd/*.in; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' $$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$$(basename $$u .in) || exit 1; \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$(basename $$u .in) || exit 1; \
	done
	$(INSTALL) -m 0644 scripts/systemd/*.target $(DESTDIR)$(SYSTEMDUNITDIR)/
	if [ -f scripts/ocf/twinblock ]; then \
		$(INSTALL) -D -m 0755 scripts/ocf/twinblock $(DESTDIR)$(OCFDIR)/twinblock/twinblock; fi
	if [ -f scripts/heartbeat/twinblockdisk ]; then \
		$(INSTALL) -D -m 0755 scripts/heartbeat/twinblockdisk $(DESTDIR)$(HEARTBEATDIR)/twinblockdisk; fi
	$(INSTALL) -m 0644 internal/tools/gendocs/twinblock.conf.example $(DESTDIR)$(SYSCONFDIR)/twinblock/twinblock.conf.example
