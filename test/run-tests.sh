#!/bin/sh
# Runs the CUnit suite once per fault backend and fails if any run fails.
#   run-tests.sh PROGRAM [ARGS...]
# Environment:
#   UCOW_TEST_BACKENDS  backends to run, space-separated (default: sigsegv)
#   UCOW_TEST_WRAPPER   command prefix for PROGRAM, e.g.
#                       "libtool --mode=execute valgrind --error-exitcode=1"
#   UCOW_TEST_SANITIZER passed through to the tests (asan, tsan, valgrind)
set -u
[ $# -ge 1 ] || { echo "usage: $0 PROGRAM [ARGS...]" >&2; exit 2; }

log=$(mktemp) || exit 2
trap 'rm -f "$log" "$log.rc"' EXIT
failed=
for backend in ${UCOW_TEST_BACKENDS:-sigsegv}; do
	echo "=== ucow tests: UCOW_BACKEND=$backend${UCOW_TEST_SANITIZER:+ under $UCOW_TEST_SANITIZER}"
	# Output streams to the terminal; the exit status survives the pipe via $log.rc.
	{ UCOW_BACKEND=$backend ${UCOW_TEST_WRAPPER:-} "$@" 2>&1; echo $? >"$log.rc"; } |
		tee "$log"
	rc=$(cat "$log.rc" 2>/dev/null); rm -f "$log.rc"
	# Backstop for a main() that returns 0 despite failures, or never ran the
	# suite: CUnit's Run Summary must be there with no Failed count above 0.
	if [ "$rc" = 0 ] && ! awk '
		/^Run Summary:/ { seen = 1 }
		seen && ($1 == "suites" || $1 == "tests" || $1 == "asserts") && $5 + 0 > 0 { bad = 1 }
		END { exit !(seen && !bad) }' "$log"; then
		echo "ucow tests: no CUnit Run Summary, or failures reported despite exit status 0"
		rc=1
	fi
	if [ "$rc" = 0 ]; then
		echo "=== PASS: UCOW_BACKEND=$backend"
	else
		echo "=== FAIL: UCOW_BACKEND=$backend (exit status $rc)"
		failed="$failed $backend"
	fi
done

if [ -n "$failed" ]; then
	echo "ucow tests FAILED for backend(s):$failed"
	exit 1
fi
echo "ucow tests passed for backend(s): ${UCOW_TEST_BACKENDS:-sigsegv}"
