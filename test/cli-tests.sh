#!/bin/sh
# The command-line tool's answers to bad options: a clear line on stderr and
# exit status 2, before any work is done.
#   cli-tests.sh UCOW   (the tool, e.g. tools/ucow)
set -u
[ $# -eq 1 ] || { echo "usage: $0 UCOW" >&2; exit 2; }
ucow=$1
out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT
failed=0

# expect STATUS TEXT ARGS...: exit status STATUS, TEXT in the output, and no
# benchmark started (its header never printed).
expect() {
	want=$1 text=$2
	shift 2
	"$ucow" "$@" >"$out" 2>&1
	rc=$?
	if [ "$rc" != "$want" ] || ! grep -qF -- "$text" "$out" ||
	   grep -q '^ucow bench [0-9]' "$out"; then
		echo "FAIL: ucow $* -> exit $rc (want $want, '$text'):"
		sed 's/^/    /' "$out"
		failed=1
	else
		echo "ok: ucow $* -> exit $rc"
	fi
}

expect 2 "unknown subcommand" nosuch
expect 2 "an empty size" bench --sizes 64M,,1G
expect 2 "an empty size" bench --sizes 64M,
expect 2 "less than a page" bench --sizes 1
expect 2 "at least 1" bench --rounds 0
expect 2 "No such file or directory" bench --quick --figures 2 --plot /nonexistent/dir/plot.svg
expect 2 "neither is asked for" bench --quick --figures 1 --plot plot-never-written.svg
[ ! -e plot-never-written.svg ] || { echo "FAIL: --plot left a file behind"; failed=1; }
expect 2 "give figure numbers 1 to 5" bench --figures 15 --quick --rounds 1 --fault-size 16K
expect 2 "give figure numbers 1 to 5" bench --figures 0 --quick --rounds 1 --fault-size 16K
expect 2 "an empty figure number" bench --figures 1,,2 --quick --rounds 1 --fault-size 16K
expect 2 "an empty figure number" bench --figures 1, --quick --rounds 1 --fault-size 16K
expect 2 "an empty figure number" bench --figures , --quick --rounds 1 --fault-size 16K
expect 2 "an empty figure number" bench --figures "" --quick --rounds 1 --fault-size 16K
expect 0 "ucow " version
exit $failed
