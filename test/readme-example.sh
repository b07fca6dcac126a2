#!/bin/sh
# The README's complete example compiles against this build and prints what
# the README says it prints, under each fault backend.
#   readme-example.sh SRCDIR BUILDDIR   (BUILDDIR holds lib/.libs/libucow.so)
# Environment: CC (default cc), UCOW_TEST_BACKENDS (default sigsegv).
# Not under a sanitizer or valgrind (UCOW_TEST_SANITIZER set): the example
# is a plain program, and a sanitizer's runtime must come first in it; the
# plain `make check` runs it.
set -u
[ $# -eq 2 ] || { echo "usage: $0 SRCDIR BUILDDIR" >&2; exit 2; }
if [ -n "${UCOW_TEST_SANITIZER:-}" ]; then
	echo "skip: README example (a plain program; not under $UCOW_TEST_SANITIZER)"
	exit 0
fi
src=$1 build=$2
dir=$(mktemp -d) || exit 2
trap 'rm -rf "$dir"' EXIT

# The first C block after the heading, and the first plain block after it.
awk '/^## A complete example/ { on = 1 }
     on && /^```c$/ { grab = 1; next }
     grab && /^```$/ { exit }
     grab' "$src/README.md" >"$dir/example.c"
awk '/^## A complete example/ { on = 1 }
     on && /^```c$/ { code = 1; next }
     code && !done && /^```$/ { done = 1; next }
     done && /^```$/ { if (grab) exit; grab = 1; next }
     grab' "$src/README.md" >"$dir/expected"
if [ ! -s "$dir/example.c" ] || [ ! -s "$dir/expected" ]; then
	echo "FAIL: no example, or no printed output after it, in README.md"
	exit 1
fi
if ! ${CC:-cc} -Wall -Wextra -Werror -I"$src/include" "$dir/example.c" \
	-L"$build/lib/.libs" -lucow -Wl,-rpath,"$build/lib/.libs" -lpthread \
	-o "$dir/example"; then
	echo "FAIL: the README's example does not compile"
	exit 1
fi
failed=0
for backend in ${UCOW_TEST_BACKENDS:-sigsegv}; do
	if UCOW_BACKEND=$backend "$dir/example" >"$dir/out" 2>&1 &&
	   cmp -s "$dir/out" "$dir/expected"; then
		echo "ok: README example, UCOW_BACKEND=$backend"
	else
		echo "FAIL: README example, UCOW_BACKEND=$backend, printed:"
		sed 's/^/    /' "$dir/out"
		echo "  where the README says:"
		sed 's/^/    /' "$dir/expected"
		failed=1
	fi
done
exit $failed
