# mailsplice: one build. BPF objects -> skeleton headers (bpftool) -> daemon -> tests.
#
#   make deps    install every dependency from Debian packages (root)
#   make         build/mailspliced, build/toml-decode
#   make test    unit + conformance + integration suites, one summary line
#   make vmtest  kernel-path tests under QEMU, per kernel in vmtest/kernels
#   make demo    legacy + new backends and mailspliced on loopback, in the foreground
#   make format  apply .clang-format
#   make install PREFIX=/usr DESTDIR=...   daemon, man pages, unit, examples
#   make deb     build/deb/mailsplice_*.deb (debhelper), lintian-checked
#   make asan    unit tests and the integration suite against an ASan+UBSan daemon
#   make soak SOAK_SECONDS=600   churn over every protocol with kicks, ASan daemon
#   make bench-stores  what a Redis / PostgreSQL mapping store adds to a login
#   make package-test  that .deb installed into a fresh debootstrap root

PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/mailsplice
SYSCONFDIR     ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR        ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
TMPFILESDIR    ?= $(PREFIX)/lib/tmpfiles.d
MODULESLOADDIR ?= $(PREFIX)/lib/modules-load.d
B       := build

CC      ?= cc
CLANG   ?= clang
BPFTOOL ?= bpftool
PKGS    := libevent libevent_openssl libevent_pthreads openssl libbpf jansson libpcre2-8 \
           libnl-3.0 libnl-idiag-3.0 libcap libsystemd hiredis libpq

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wno-unused-parameter -Wno-format-truncation \
           -fno-strict-aliasing \
           -Iinclude -I$(B) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

# daemon/ is grouped by concern: core/ (startup, sessions, config, logs),
# proto/ (mail protocol dialogues), http/ (HTTP routing), parse/ (pure wire
# parsers, each with a fuzz target), route/ (accounts, mapping stores, the
# fleet bus), admin/ (the admin API), net/ (legs, TLS, the kernel data path).
# Everything except core/main.c goes into one archive shared by the daemon,
# the tools, the unit tests and the fuzz targets.
DAEMON_SRCS := $(sort $(wildcard daemon/*/*.c))
LIB_SRCS  := $(filter-out daemon/core/main.c,$(DAEMON_SRCS))
LIB_OBJS  := $(LIB_SRCS:%.c=$(B)/%.o)
LIB       := $(B)/libmailsplice.a
HDRS      := $(wildcard include/*.h)

BPF_SRCS  := $(sort $(wildcard bpf/*.bpf.c))
BPF_OBJS  := $(BPF_SRCS:bpf/%.bpf.c=$(B)/%.bpf.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(B)/%.skel.h)

UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
TOOL_SRCS  := $(sort $(wildcard tools/*.c))
TOOL_BINS  := $(TOOL_SRCS:tools/%.c=$(B)/%)
# C helpers of the kernel-path tests (tests/kernel): the byte-exact stream checker and
# the standalone sockmap reproducer (C + BPF, no daemon)
KTEST_BINS := $(B)/tests/streamcheck $(B)/tests/sockmap_repro
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(B)/bench/%)

.PHONY: all deps test unit check-format format vmtest clean install deb package-test bench bench-peers bench-stores demo fuzz fuzz-long asan soak
.DELETE_ON_ERROR:

all: $(BPF_SKELS) $(B)/mailspliced $(TOOL_BINS) $(BPF_OBJS)

deps:
	sh tools/deps.sh

# --- BPF: vmlinux.h from the running kernel's BTF, CO-RE objects, skeletons ---
$(B)/vmlinux.h:
	@mkdir -p $(@D)
	@if [ -r /sys/kernel/btf/vmlinux ]; then \
		$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@; \
	else \
		echo "NOTE: no /sys/kernel/btf/vmlinux on this build host;" \
		     "using the checked-in bpf/vmlinux-min.h" >&2; \
		cp bpf/vmlinux-min.h $@; \
	fi

$(B)/%.bpf.o: bpf/%.bpf.c $(B)/vmlinux.h $(wildcard include/*_bpf.h)
	@mkdir -p $(@D)
	$(CLANG) -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_x86 \
		-I$(B) -Iinclude -c $< -o $@
	llvm-strip -g $@ 2>/dev/null || true

$(B)/%.skel.h: $(B)/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@

# --- daemon ---
$(B)/daemon/%.o: daemon/%.c $(HDRS) $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

# whole archive: protocol modules are referenced weakly by the session core
# (a module not built in is refused politely), and a weak reference alone
# would not pull an object out of an archive
$(B)/mailspliced: $(B)/daemon/core/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(B)/daemon/core/main.o -Wl,--whole-archive $(LIB) -Wl,--no-whole-archive $(LDLIBS)

$(B)/%: tools/%.c $(LIB) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(B)/bench/%: bench/%.c $(LIB) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# --- tests ---
$(B)/tests/streamcheck: tests/kernel/streamcheck.c tests/kernel/stream.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lssl -lcrypto

$(B)/sockmap_repro.bpf.o: tests/kernel/sockmap_repro.bpf.c $(B)/vmlinux.h
	$(CLANG) -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -I$(B) -c $< -o $@
	llvm-strip -g $@ 2>/dev/null || true

$(B)/tests/sockmap_repro: tests/kernel/sockmap_repro.c tests/kernel/stream.h $(B)/sockmap_repro.skel.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lbpf -lpthread

$(B)/tests/%: tests/unit/%.c $(LIB) $(HDRS) tests/unit/unit.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcmocka

unit: all $(UNIT_BINS)

test: all $(UNIT_BINS) $(KTEST_BINS)
	@tests/run-all

vmtest: all $(UNIT_BINS) $(KTEST_BINS)
	@vmtest/run-matrix

# --- fuzzing: libFuzzer + ASan + UBSan (clang from Debian) ---
#   make fuzz FUZZ_SECONDS=60   each target for that long, seeds from tests/fuzz/corpus,
#                               new inputs in build/fuzz/corpus-*, crashes in tests/fuzz/findings
FUZZ_SECONDS ?= 60
FUZZ_SRCS  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=$(B)/fuzz/%)
# FUZZ_ONLY="fuzz_toml fuzz_sasl" limits make fuzz / fuzz-long to those targets
FUZZ_RUN_BINS := $(if $(FUZZ_ONLY),$(FUZZ_ONLY:%=$(B)/fuzz/%),$(FUZZ_BINS))
FUZZ_FLAGS := -g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer \
              -Iinclude -I$(B) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_OBJS  := $(LIB_SRCS:daemon/%.c=$(B)/fuzz/obj/%.o)

$(B)/fuzz/obj/%.o: daemon/%.c $(HDRS) $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

$(B)/fuzz/libfuzz.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/fuzz/%: tests/fuzz/%.c $(B)/fuzz/libfuzz.a
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(B)/fuzz/libfuzz.a $(LDLIBS)

# --- sanitizers: the daemon built with ASan + UBSan (any UB aborts), then the
# integration suite against it; a leak or error at exit fails the test that
# stopped it (Proxy.stop() expects status 0). The unit tests are built the same
# way and run first.
ASAN_FLAGS := -g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer \
              -fsanitize=address,undefined -fno-sanitize-recover=all \
              -Iinclude -I$(B) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ASAN_OBJS  := $(LIB_SRCS:daemon/%.c=$(B)/asan/obj/%.o)
ASAN_UNIT  := $(UNIT_SRCS:tests/unit/%.c=$(B)/asan/tests/%)

$(B)/asan/obj/%.o: daemon/%.c $(HDRS) $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CLANG) $(ASAN_FLAGS) -c $< -o $@

$(B)/asan/libasan.a: $(ASAN_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/asan/mailspliced: daemon/core/main.c $(B)/asan/libasan.a
	$(CLANG) $(ASAN_FLAGS) -o $@ $< -Wl,--whole-archive $(B)/asan/libasan.a \
		-Wl,--no-whole-archive $(LDLIBS)

$(B)/asan/tests/%: tests/unit/%.c $(B)/asan/libasan.a tests/unit/unit.h
	@mkdir -p $(@D)
	$(CLANG) $(ASAN_FLAGS) -Itests/unit -o $@ $< $(B)/asan/libasan.a $(LDLIBS) -lcmocka

asan: all $(B)/asan/mailspliced $(ASAN_UNIT)
	@for t in $(ASAN_UNIT); do $$t >/dev/null 2>$(B)/asan/$$(basename $$t).log || \
		{ cat $(B)/asan/$$(basename $$t).log; echo "asan: $$t failed"; exit 1; }; done
	@echo "asan: $(words $(ASAN_UNIT)) unit test binaries clean"
	MS_DAEMON=$(CURDIR)/$(B)/asan/mailspliced \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		tests/run-all integration

# soak: minutes of churn over every protocol with remaps and kicks, against the
# ASan build; prints numbers (not part of make test)
SOAK_SECONDS ?= 600
soak: all $(B)/asan/mailspliced
	@/usr/bin/python3 bench/soak.py --seconds $(SOAK_SECONDS) --daemon $(B)/asan/mailspliced

fuzz: $(FUZZ_RUN_BINS)
	@mkdir -p tests/fuzz/findings
	@for f in $(FUZZ_RUN_BINS); do n=$$(basename $$f); mkdir -p $(B)/fuzz/corpus-$$n; \
		echo "== $$n ($(FUZZ_SECONDS)s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=tests/fuzz/findings/$$n- \
			$(B)/fuzz/corpus-$$n tests/fuzz/corpus/$$n > $(B)/fuzz/$$n.log 2>&1; \
		rc=$$?; grep -E "^(stat::number_of_executed_units|stat::peak_rss)|cov: .*DONE|ERROR|SUMMARY" \
			$(B)/fuzz/$$n.log; \
		test $$rc -eq 0 || { echo "$$n: crash, see $(B)/fuzz/$$n.log"; exit 1; }; done

# fuzz-long: each target until it has executed FUZZ_RUNS inputs (issue 9 asks for
# ten million each); one line per target with executions, coverage and seconds
FUZZ_RUNS ?= 10000000
fuzz-long: $(FUZZ_RUN_BINS)
	@mkdir -p tests/fuzz/findings
	@for f in $(FUZZ_RUN_BINS); do n=$$(basename $$f); mkdir -p $(B)/fuzz/corpus-$$n; \
		t0=$$(date +%s); \
		$$f -runs=$(FUZZ_RUNS) -print_final_stats=1 \
			-artifact_prefix=tests/fuzz/findings/$$n- \
			$(B)/fuzz/corpus-$$n tests/fuzz/corpus/$$n > $(B)/fuzz/$$n-long.log 2>&1; \
		rc=$$?; t1=$$(date +%s); \
		echo "$$n: rc=$$rc $$(grep -E '^stat::number_of_executed_units' $(B)/fuzz/$$n-long.log | \
			sed 's/.*: *//') runs, $$(grep -oE 'cov: [0-9]+ ft: [0-9]+' $(B)/fuzz/$$n-long.log | \
			tail -1), $$((t1 - t0)) s"; \
		test $$rc -eq 0 || { grep -E "ERROR|SUMMARY" $(B)/fuzz/$$n-long.log; \
			echo "$$n: crash, see $(B)/fuzz/$$n-long.log"; exit 1; }; done

# the whole migration scenario on loopback, in the foreground (Ctrl-C stops it)
demo: all
	@/usr/bin/python3 tools/demo.py

bench: all $(BENCH_BINS)
	@bench/run

# mailsplice against the proxies an operator would pick instead (nginx mail, HAProxy,
# Dovecot proxy) and a direct connection; tables and charts in bench/results/.
# BENCH_ARGS="--quick" for a short pass, "--peers direct,haproxy --workloads fetch" to narrow.
bench-peers: all
	@/usr/bin/python3 bench/peers.py $(BENCH_ARGS)

# what a Redis or PostgreSQL mapping store adds to a login, against the file store
bench-stores: all $(B)/bench/store_lookup
	@/usr/bin/python3 bench/stores.py $(BENCH_ARGS)

format:
	clang-format -i $(wildcard daemon/*/*.c include/*.h tools/*.c tests/unit/*.[ch] bpf/*.c tests/fuzz/*.c tests/kernel/*.[ch])

check-format:
	@clang-format --dry-run -Werror $(wildcard daemon/*/*.c include/*.h tools/*.c tests/unit/*.[ch] bpf/*.c tests/fuzz/*.c tests/kernel/*.[ch])

# The BPF program is compiled into the daemon (bpftool skeleton): no object
# file to install. systemd's unit, tmpfiles and modules-load directories are
# /lib and /usr/lib (Debian 12) for PREFIX=/usr, else below PREFIX.
install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(UNITDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(MODULESLOADDIR) $(DESTDIR)$(SYSCONFDIR)/mailsplice
	install -m 0755 $(B)/mailspliced $(DESTDIR)$(SBINDIR)/mailspliced
	install -m 0644 man/mailspliced.8 $(DESTDIR)$(MANDIR)/man8/mailspliced.8
	install -m 0644 man/mailsplice.toml.5 $(DESTDIR)$(MANDIR)/man5/mailsplice.toml.5
	install -m 0644 conf/dovecot-postfix-to-stalwart.toml conf/stalwart-to-stalwart.toml \
		conf/mappings.tsv conf/dovecot-postfix-trust.conf conf/fleet-node1.toml \
		conf/fleet-node2.toml conf/mailsplice-postgres.sql $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 docs/configuration.md docs/admin-api.md docs/datapath.md docs/cutover.md \
		docs/upgrade.md $(DESTDIR)$(DOCDIR)/
	sed -e 's|/usr/sbin/mailspliced|$(SBINDIR)/mailspliced|g' \
	    -e 's|/etc/mailsplice/|$(SYSCONFDIR)/mailsplice/|g' conf/mailsplice.service \
		> $(DESTDIR)$(UNITDIR)/mailsplice.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/mailsplice.service
	install -m 0644 conf/mailsplice.tmpfiles $(DESTDIR)$(TMPFILESDIR)/mailsplice.conf
	install -m 0644 conf/mailsplice-modules.conf $(DESTDIR)$(MODULESLOADDIR)/mailsplice.conf

# A Debian package built by dpkg-buildpackage/debhelper from a copy of the
# tracked tree (the checkout stays clean), then checked by lintian.
deb:
	sh tools/build-deb.sh $(B)/deb

# the package installed into a fresh debootstrap root: --check, unit, purge
package-test:
	sh tools/test-deb.sh

clean:
	rm -rf $(B)
