# Front door of ucow (hand-written; autotools only generate build*/Makefile).
#   make                 build in build/ (installs missing Debian packages as root)
#   make check           build and run the test suite
#   make demo            run `ucow demo $(DEMO_ARGS)'
#   make bench           run `ucow bench $(BENCH_ARGS)' (e.g. BENCH_ARGS=--quick)
#   make install PREFIX=/dir
#   make check-asan | check-tsan | check-valgrind
#   make soak            random operations against a model for minutes
#   make fuzz            libFuzzer on the same model for a bounded time
#   make clean | distclean
PREFIX ?= /usr/local
CONFIGURE_FLAGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
SOAK_SECONDS ?= 300
SOAK_SEED ?=
SOAK_BACKENDS ?= sigsegv uffd
FUZZ_SECONDS ?= 120
FUZZ_BACKENDS ?= sigsegv uffd

DEPS_PKGS = libsigsegv-dev libcunit1-dev libhwloc-dev autoconf automake libtool pkg-config gcc make
ASAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
TSAN_FLAGS = -O1 -g -fsanitize=thread
FUZZ_FLAGS = -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_LDFLAGS = -fsanitize=address,undefined
# ucow owns SIGSEGV: see check-asan.
ASAN_ENV = ASAN_OPTIONS="handle_segv=0$${ASAN_OPTIONS:+:$$ASAN_OPTIONS}"
# gcc's ThreadSanitizer needs libtsan; fall back to clang if it cannot link.
TSAN_CC = $(shell echo 'int main(void){return 0;}' | $(CC) -fsanitize=thread -x c -o /dev/null - 2>/dev/null && echo '$(CC)' || echo clang)
# gcc 12's tsan cannot map its shadow with high ASLR entropy (vm.mmap_rnd_bits
# above 28): run without ASLR where the sandbox allows it.
NO_ASLR = $(shell setarch $$(uname -m) -R true 2>/dev/null && echo "setarch $$(uname -m) -R")
# allregs-at-mem-access: a store that faults is retried after ucow's handler
# remapped its page; by default valgrind keeps only SP, IP and BP exact at a
# memory access, and the retried store runs with stale registers.
# fair-sched: valgrind runs one thread at a time, and by default a thread
# that never blocks (diff's loop beside a writer that faults) keeps the
# lock; the diff suite took over 7 minutes instead of 14 s.
VALGRIND = valgrind -q --error-exitcode=1 --leak-check=full --trace-children=yes \
	--vex-iropt-register-updates=allregs-at-mem-access --fair-sched=yes \
	$(if $(wildcard test/valgrind.supp),--suppressions=$(CURDIR)/test/valgrind.supp)

all: build/config.status
	$(MAKE) -C build

check: all
	$(MAKE) -C build check

demo: all
	build/tools/ucow demo $(DEMO_ARGS)

bench: all
	build/tools/ucow bench $(BENCH_ARGS)

# PREFIX is fixed at configure time (libtool bakes libdir into the .la and the
# installed rpath), so a different PREFIX reconfigures, keeping the other
# options, and relinks from scratch.
install: build/config.status
	@configured=$$(sed -n 's/^prefix = //p' build/Makefile); \
	if [ "$$configured" != "$(abspath $(PREFIX))" ]; then \
	  echo "build/ was configured for prefix $$configured: reconfiguring for $(abspath $(PREFIX))"; \
	  (cd build && eval "../configure $$(./config.status --config) '--prefix=$(abspath $(PREFIX))'") && \
	  $(MAKE) -C build clean; \
	fi
	$(MAKE) -C build install

# ucow owns SIGSEGV: without handle_segv=0 the sanitizer's own handler is the
# "previous action" ucow forwards foreign faults to, and the tests that expect
# the default action (death by SIGSEGV) see a sanitizer report and exit 1.
check-asan: build-asan/config.status
	UCOW_TEST_SANITIZER=asan \
	$(ASAN_ENV) \
	UBSAN_OPTIONS="print_stacktrace=1$${UBSAN_OPTIONS:+:$$UBSAN_OPTIONS}" \
	  $(MAKE) -C build-asan check

check-tsan: DEPS_PKGS += libtsan2
# Under the uffd backend the process has a handler thread, and the tests'
# forked children start their own: die_after_fork=0 lets TSan follow them.
check-tsan: build-tsan/config.status
	UCOW_TEST_SANITIZER=tsan TSAN_OPTIONS="handle_segv=0:die_after_fork=0$${TSAN_OPTIONS:+:$$TSAN_OPTIONS}" \
	  $(MAKE) -C build-tsan check UCOW_TEST_WRAPPER='$(NO_ASLR)'

# libtool --mode=execute runs the real binary behind test/ucow_test's wrapper
# script. The signal backend only: valgrind runs one thread at a time, and a
# thread stopped in a userfaultfd fault keeps the others, the handler thread
# included, from ever running.
check-valgrind: DEPS_PKGS += valgrind
check-valgrind: all
	UCOW_TEST_SANITIZER=valgrind $(MAKE) -C build check UCOW_TEST_BACKENDS=sigsegv \
	  UCOW_TEST_WRAPPER='$$(LIBTOOL) --mode=execute $(VALGRIND)'

# The model of test/model.h under ASan+UBSan, so that a memory error shows
# as well as a wrong byte. Each backend gets SOAK_SECONDS; a failure prints
# the seed that reproduces it (SOAK_SEED=N).
soak: build-asan/config.status
	$(MAKE) -C build-asan test/ucow_soak
	for b in $(SOAK_BACKENDS); do \
	  $(ASAN_ENV) UCOW_BACKEND=$$b \
	    build-asan/test/ucow_soak --seconds $(SOAK_SECONDS) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) || exit 1; \
	done

# libFuzzer (clang) drives the same model from its input, FUZZ_SECONDS per
# backend, starting from test/fuzz/corpus. A crash input is saved into
# test/fuzz/regressions/, which make check replays: it stays a test.
# ucow owns SIGSEGV, so neither libFuzzer nor ASan may take it.
fuzz: DEPS_PKGS += clang libclang-rt-dev
fuzz: build-fuzz/config.status
	$(MAKE) -C build-fuzz test/fuzz/ucow_fuzz UCOW_FUZZ_LDFLAGS=-fsanitize=fuzzer
	mkdir -p build-fuzz/corpus
	for b in $(FUZZ_BACKENDS); do \
	  echo "=== make fuzz: UCOW_BACKEND=$$b for $(FUZZ_SECONDS) s"; \
	  $(ASAN_ENV) UCOW_BACKEND=$$b \
	    build-fuzz/test/fuzz/ucow_fuzz -handle_segv=0 -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 -artifact_prefix=$(CURDIR)/test/fuzz/regressions/ \
	    build-fuzz/corpus test/fuzz/corpus || exit 1; \
	done

clean:
	for d in build build-asan build-tsan build-fuzz; do \
	  if [ -f $$d/Makefile ]; then $(MAKE) -C $$d clean || exit 1; fi; \
	done

distclean:
	rm -rf build build-asan build-tsan build-fuzz

# Installs what is missing as root, otherwise says what to run.
deps:
	@missing=; \
	for p in $(DEPS_PKGS); do \
	  case "$$(dpkg-query -W -f='$${Status}' $$p 2>/dev/null)" in \
	    *" installed") ;; \
	    *) missing="$$missing $$p" ;; \
	  esac; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v dpkg-query >/dev/null; then \
	  echo "deps: no dpkg-query, not a Debian system: install the equivalents of:$$missing"; exit 0; \
	fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "deps: installing$$missing"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	else \
	  echo "deps: missing Debian packages:$$missing"; \
	  echo "deps: run: sudo apt-get install -y$$missing"; \
	  exit 1; \
	fi

configure: configure.ac Makefile.am | deps
	autoreconf -fi
	touch configure

# CONFIGURE_FLAGS apply when a build dir is first configured; a newer
# configure is rerun with the options the dir already has.
reconfigure = mkdir -p $(1) && cd $(1) && \
	if [ -f config.status ]; then ./config.status --recheck && ./config.status; \
	else ../configure $(2); fi

build/config.status: configure | deps
	$(call reconfigure,build,--prefix=$(abspath $(PREFIX)) $(CONFIGURE_FLAGS))

build-asan/config.status: configure | deps
	$(call reconfigure,build-asan,$(CONFIGURE_FLAGS) CFLAGS='$(ASAN_FLAGS)' LDFLAGS='$(ASAN_FLAGS)')

build-fuzz/config.status: configure | deps
	$(call reconfigure,build-fuzz,$(CONFIGURE_FLAGS) CC=clang CFLAGS='$(FUZZ_FLAGS)' LDFLAGS='$(FUZZ_LDFLAGS)')

build-tsan/config.status: configure | deps
	$(call reconfigure,build-tsan,$(CONFIGURE_FLAGS) CC='$(TSAN_CC)' CFLAGS='$(TSAN_FLAGS)' LDFLAGS='$(TSAN_FLAGS)')

.PHONY: all check demo bench install check-asan check-tsan check-valgrind soak fuzz clean distclean deps
