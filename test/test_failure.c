/*
 * A write fault that cannot be served (here: a failed page copy, injected
 * with UCOW_FAILPOINT_FILL, or a failed mapping, UCOW_FAILPOINT_MAP) never
 * continues with wrong memory: the program's handler is called, or ucow says
 * why and aborts.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "helpers.h"

#define PAGES 4

static void log_path(char *buf, size_t len, pid_t parent)
{
	snprintf(buf, len, "/tmp/ucow-test-failure-%ld.log", (long)parent);
}

/* Sends this process's stderr to a file the parent reads afterwards. */
static void stderr_to_log(void)
{
	char path[64];
	log_path(path, sizeof path, getppid());
	CHECK(freopen(path, "w", stderr) != NULL);
	setvbuf(stderr, NULL, _IONBF, 0);
}

static ucow_region *clone_of_filled(ucow_region **src)
{
	*src = make_filled(PAGES, PAGES, 61);
	CHECK(*src != NULL);
	ucow_region *clone = ucow_clone(*src);
	CHECK(clone != NULL);
	return clone;
}

static int copy_failure_aborts_by_default(void)
{
	CHECK(setenv("UCOW_FAILPOINT_FILL", "1", 1) == 0);
	stderr_to_log();
	ucow_region *src, *clone = clone_of_filled(&src);
	page_of(clone, 2)[5] = 1; /* the copy fails: abort here */
	return 3;
}

/* Atomics: under uffd the handler runs on ucow's handler thread. */
static void *seen_addr;
static int seen_error, seen_calls;

static void record_error(void *addr, int error, void *arg)
{
	__atomic_store_n(&seen_addr, addr, __ATOMIC_RELAXED);
	__atomic_store_n(&seen_error, error, __ATOMIC_RELAXED);
	__atomic_add_fetch(&seen_calls, *(int *)arg, __ATOMIC_RELEASE);
}

static int copy_failure_calls_the_handler(void)
{
	CHECK(setenv("UCOW_FAILPOINT_FILL", "1", 1) == 0);
	static int one = 1;
	ucow_on_fault_error(record_error, &one);
	ucow_region *src, *clone = clone_of_filled(&src);
	char *target = page_of(clone, 2) + 5;
	*target = 42; /* fails once, the handler returns, the retry works */
	CHECK(__atomic_load_n(&seen_calls, __ATOMIC_ACQUIRE) == 1);
	CHECK(__atomic_load_n(&seen_error, __ATOMIC_RELAXED) == -ENOMEM);
	char *addr = __atomic_load_n(&seen_addr, __ATOMIC_RELAXED);
	CHECK(addr >= page_of(clone, 2) && addr < page_of(clone, 3));
	CHECK(*target == 42);
	CHECK(pages_match(ucow_base(src), 0, PAGES, 61));
	CHECK(stats_of(clone).cow_copies == 1);
	return 0;
}

/*
 * The same when the writer keeps its frame and the snapshot is to take the
 * copy: after the failure the snapshot still shares the page and reads its
 * old bytes; the retry gives it the copy.
 */
static int keep_failure_calls_the_handler(void)
{
	CHECK(setenv("UCOW_FAILPOINT_FILL", "1", 1) == 0);
	static int one = 1;
	ucow_on_fault_error(record_error, &one);
	ucow_region *src = make_filled(PAGES, PAGES, 61);
	CHECK(src != NULL);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	char *target = page_of(src, 2) + 5;
	*target = 42;
	CHECK(__atomic_load_n(&seen_calls, __ATOMIC_ACQUIRE) == 1);
	CHECK(__atomic_load_n(&seen_error, __ATOMIC_RELAXED) == -ENOMEM);
	CHECK(*target == 42 && page_of(snap, 2)[5] != 42);
	CHECK(pages_match(ucow_base(snap), 0, PAGES, 61));
	CHECK(stats_of(src).cow_kept == 1 && stats_of(src).cow_copies == 0);
	CHECK(stats_of(snap).shared_pages == PAGES - 1);
	CHECK(global_stats().frames == PAGES + 1);
	return 0;
}

static sigjmp_buf leave_fault;

static void leave_the_fault(void *addr, int error, void *arg)
{
	(void)addr;
	(void)error;
	__atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
	siglongjmp(leave_fault, 1);
}

/*
 * A keep that fails to map one snapshot's copy. Two snapshots share the
 * pages of src; page 9 (kept first) stops the fault-around of the write to
 * page 4, which would keep pages 4 to 8 in one fault: the third mapping of
 * 5 pages or more is the newest snapshot's copy (each snapshot mapped the
 * region with one call before), the fourth the older one's. The failpoint
 * leaves the pages unmapped, as a failed mmap(MAP_FIXED) may. The handler
 * leaves the fault (signal backend), so the state after the failure is
 * what the program sees: every page of both snapshots reads its old bytes,
 * the mapping estimate is true, and frames_after frames are in use. Then
 * the write is made again, and the pages are kept.
 */
static void keep_map_fails(const char *nth, size_t frames_after,
			   ucow_region **src, ucow_region **old,
			   ucow_region **new)
{
	enum { P = 16 };
	CHECK(setenv("UCOW_FAILPOINT_MAP", nth, 1) == 0);
	CHECK(ucow_set_backend("sigsegv") == 0);
	static int calls;
	ucow_on_fault_error(leave_the_fault, &calls);
	*src = make_filled(P, P, 61); /* descending: no fault-around */
	CHECK(*src != NULL);
	*old = ucow_snapshot(*src);
	*new = ucow_snapshot(*src);
	CHECK(*old != NULL && *new != NULL);
	page_of(*src, 9)[0] = 9;
	page_of(*src, 3)[0] = 3;
	if (sigsetjmp(leave_fault, 1) == 0)
		page_of(*src, 4)[0] = 4;
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 1);
	CHECK(pages_match(ucow_base(*old), 0, P, 61));
	CHECK(pages_match(ucow_base(*new), 0, P, 61));
	CHECK(pages_match(ucow_base(*src), 4, 5, 61));
	CHECK(stats_of(*src).cow_kept == 2 && stats_of(*src).writable_pages == 2);
	CHECK(global_stats().frames == frames_after);
	size_t mappings = (size_t)(mappings_in(ucow_base(*src), P * page_size()) +
				   mappings_in(ucow_base(*old), P * page_size()) +
				   mappings_in(ucow_base(*new), P * page_size()));
	CHECK(global_stats().mappings == mappings);

	for (size_t p = 4; p <= 8; p++)
		page_of(*src, p)[0] = (char)p; /* one fault keeps them */
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 1);
	CHECK(pages_match(ucow_base(*old), 0, P, 61));
	CHECK(pages_match(ucow_base(*new), 0, P, 61));
	for (size_t p = 0; p < P; p++)
		CHECK(p >= 3 && p <= 9 ? page_of(*src, p)[0] == (char)p
				       : pages_match(ucow_base(*src), p, 1, 61));
	struct ucow_stats s = stats_of(*src);
	CHECK(s.cow_kept == 3 && s.cow_copies == 0 && s.fault_around == 4);
	mappings = (size_t)(mappings_in(ucow_base(*src), P * page_size()) +
			    mappings_in(ucow_base(*old), P * page_size()) +
			    mappings_in(ucow_base(*new), P * page_size()));
	CHECK(global_stats().mappings == mappings);
}

/*
 * The same for a copy: the clone's write to page 4 would copy pages 4 to 8
 * in one fault (page 9 is its own already), and the second mapping of 5
 * pages or more (the first mapped the clone) fails and leaves them
 * unmapped: afterwards the clone still reads src's bytes there.
 */
static int copy_map_failure_leaves_the_pages_mapped(void)
{
	enum { P = 16 };
	CHECK(setenv("UCOW_FAILPOINT_MAP", "5,2", 1) == 0);
	CHECK(ucow_set_backend("sigsegv") == 0);
	static int calls;
	ucow_on_fault_error(leave_the_fault, &calls);
	ucow_region *src = make_filled(P, P, 61);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	page_of(clone, 9)[0] = 9;
	page_of(clone, 3)[0] = 3;
	if (sigsetjmp(leave_fault, 1) == 0)
		page_of(clone, 4)[0] = 4;
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 1);
	CHECK(pages_match(ucow_base(clone), 4, 5, 61));
	CHECK(global_stats().frames == P + 2);
	CHECK(global_stats().mappings ==
	      (size_t)(mappings_in(ucow_base(src), P * page_size()) +
		       mappings_in(ucow_base(clone), P * page_size())));
	page_of(clone, 4)[0] = 4;
	CHECK(stats_of(clone).cow_copies == 3 && stats_of(clone).fault_around == 4);
	CHECK(page_of(clone, 4)[0] == 4 && pages_match(ucow_base(src), 0, P, 61));
	ucow_destroy(clone);
	ucow_destroy(src);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
	return 0;
}

/* A handler that lets the access retry once; a second call means the
 * retry failed too, and ends the child instead of looping. */
static void retry_once(void *addr, int error, void *arg)
{
	(void)addr;
	if (__atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED) > 1)
		_exit(5);
	__atomic_store_n(&seen_error, error, __ATOMIC_RELAXED);
}

/*
 * The same under either backend, with a handler that returns: the write is
 * retried and lands (under uffd, a page left unmapped would be a SIGSEGV
 * nobody handles; the handler thread serves the retry).
 */
static int copy_map_failure_is_retried(void)
{
	enum { P = 16 };
	CHECK(setenv("UCOW_FAILPOINT_MAP", "5,2", 1) == 0);
	static int calls;
	ucow_on_fault_error(retry_once, &calls);
	ucow_region *src = make_filled(P, P, 61);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	page_of(clone, 9)[0] = 9;
	for (size_t p = 3; p <= 8; p++)
		page_of(clone, p)[0] = (char)p; /* 4 fails, its retry copies 4-8 */
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 1);
	CHECK(__atomic_load_n(&seen_error, __ATOMIC_RELAXED) == -ENOMEM);
	for (size_t p = 0; p < P; p++)
		CHECK(p >= 3 && p <= 9 ? page_of(clone, p)[0] == (char)p
				       : pages_match(ucow_base(clone), p, 1, 61));
	CHECK(pages_match(ucow_base(src), 0, P, 61));
	CHECK(stats_of(clone).cow_copies == 3 && stats_of(clone).fault_around == 4);
	CHECK(global_stats().frames == P + 7);
	CHECK(global_stats().mappings ==
	      (size_t)(mappings_in(ucow_base(src), P * page_size()) +
		       mappings_in(ucow_base(clone), P * page_size())));
	ucow_destroy(clone);
	ucow_destroy(src);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
	return 0;
}

/*
 * A keep whose make_writable fails leaves a page that the table says is
 * writable and the kernel still protects; the handler leaves the fault. An
 * in-place revert then must not write it through its mapping (that write
 * would fault on the region the revert holds, for ever, with signals
 * blocked: only the parent's watchdog ends it): it restores the page, and
 * the write made again is served. Signal backend.
 */
static int revert_in_place_after_a_failed_make_writable(void)
{
	enum { P = 8 };
	CHECK(setenv("UCOW_FAILPOINT_WRITABLE", "1", 1) == 0);
	CHECK(ucow_set_backend("sigsegv") == 0);
	static int calls;
	ucow_on_fault_error(leave_the_fault, &calls);
	ucow_region *src = make_filled(P, P, 61);
	CHECK(src != NULL);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	if (sigsetjmp(leave_fault, 1) == 0)
		page_of(src, 3)[0] = 3;
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 1);
	CHECK(stats_of(src).cow_kept == 1);
	CHECK(ucow_revert_in_place(src, snap) == 0);
	CHECK(pages_match(ucow_base(src), 0, P, 61));
	page_of(src, 3)[0] = 3;
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 1);
	CHECK(page_of(src, 3)[0] == 3 && pages_match(ucow_base(snap), 0, P, 61));
	ucow_destroy(snap);
	ucow_destroy(src);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
	return 0;
}

/* VmData of /proc/self/status in bytes: what RLIMIT_DATA is checked against. */
static size_t vm_data_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	CHECK(f != NULL);
	while (kb < 0 && fgets(line, sizeof line, f))
		if (sscanf(line, "VmData: %ld kB", &kb) != 1)
			kb = -1;
	fclose(f);
	CHECK(kb > 0);
	return (size_t)kb << 10;
}

/* RLIMIT_DATA lets the process's data grow by `room` bytes from now. */
static void limit_data(const struct rlimit *old, size_t room)
{
	struct rlimit tight = *old;
	tight.rlim_cur = vm_data_bytes() + room;
	CHECK(setrlimit(RLIMIT_DATA, &tight) == 0);
}

/*
 * A home whose frame counts cannot be made accessible (RLIMIT_DATA refuses
 * the mprotect) fails the call and changes nothing; its frame numbers are
 * never handed out twice. Before, the failed home went back to the free list
 * and its caller retired it again, and two later regions shared frames.
 * In a fresh process, two regions of BIG pages leave the counts accessible
 * just past their homes: the next home of BIG pages needs a commit of about
 * 4 * BIG bytes, and the limit leaves room for a page table of BIG pages
 * (8 * BIG bytes) and 512 KiB more.
 */
static int table_commit_failure_keeps_homes_apart(void)
{
	enum { BIG = 3 << 17 };
	ucow_region *src = ucow_create(page_size() * BIG);
	ucow_region *dst = ucow_create(page_size() * BIG);
	CHECK(src && dst);
	fill_pages(ucow_base(src), 0, 1, 71);
	fill_pages(ucow_base(dst), 0, 1, 72);
	struct rlimit old;
	CHECK(getrlimit(RLIMIT_DATA, &old) == 0);
	/* Room for no new home: a revert's new home for src fails. */
	limit_data(&old, 512 << 10);
	int revert_err = ucow_revert(dst, src);
	/* Room for a page table, not for its home: a copy's fails. */
	limit_data(&old, 8 * BIG + (512 << 10));
	errno = 0;
	ucow_region *snap = ucow_snapshot(src);
	int snap_errno = errno;
	errno = 0;
	ucow_region *clone = ucow_clone(src);
	int clone_errno = errno;
	CHECK(setrlimit(RLIMIT_DATA, &old) == 0);
	CHECK(revert_err == -ENOMEM);
	CHECK(!snap && snap_errno == ENOMEM && !clone && clone_errno == ENOMEM);
	CHECK(pages_match(ucow_base(src), 0, 1, 71) &&
	      pages_match(ucow_base(dst), 0, 1, 72));
	ucow_region *fresh[3];
	for (unsigned k = 0; k < 3; k++) {
		CHECK((fresh[k] = ucow_create(page_size() * BIG)) != NULL);
		fill_pages(ucow_base(fresh[k]), 0, 1, 80 + k);
	}
	for (unsigned k = 0; k < 3; k++)
		CHECK(pages_match(ucow_base(fresh[k]), 0, 1, 80 + k));
	CHECK(global_stats().frames == 5);
	for (unsigned k = 0; k < 3; k++)
		ucow_destroy(fresh[k]);
	ucow_destroy(dst);
	ucow_destroy(src);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
	return 0;
}

/*
 * ucow_unshare after a make_writable failed on the same page: the table says
 * writable, the kernel still protects the page. Unshare must make it
 * writable, not skip it, or read(2) into it still fails with EFAULT.
 */
static int unshare_after_a_failed_make_writable(void)
{
	CHECK(setenv("UCOW_FAILPOINT_WRITABLE", "1", 1) == 0);
	ucow_region *src = make_filled(1, 1, 62);
	CHECK(src != NULL);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	char *p = ucow_base(src);
	CHECK(ucow_unshare(p, page_size()) == -ENOMEM);
	CHECK(ucow_unshare(p, page_size()) == 0);
	int fds[2];
	CHECK(pipe(fds) == 0);
	CHECK(write(fds[1], "zzzzzzzzzzzzzzzz", 16) == 16);
	CHECK(read(fds[0], p, 16) == 16 && p[0] == 'z' && p[15] == 'z');
	close(fds[0]);
	close(fds[1]);
	CHECK(pages_match(ucow_base(snap), 0, 1, 62));
	ucow_destroy(snap);
	ucow_destroy(src);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
	return 0;
}

static void destroy_three(ucow_region *a, ucow_region *b, ucow_region *c)
{
	ucow_destroy(a);
	ucow_destroy(b);
	ucow_destroy(c);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
}

/* The newest snapshot's map fails: nothing is kept, both snapshots keep
 * sharing src's frames, and the write made again gives them one copy. */
static int keep_map_failure_in_the_newest_snapshot(void)
{
	ucow_region *src, *old, *new;
	/* src's 16 and the copies of pages 9 and 3, which both snapshots map */
	keep_map_fails("5,3", 16 + 2, &src, &old, &new);
	CHECK(global_stats().frames == 16 + 2 + 5);
	for (size_t p = 3; p <= 9; p++)
		CHECK(mapping_offset(page_of(old, p)) ==
		      mapping_offset(page_of(new, p)));
	destroy_three(src, old, new);
	return 0;
}

/* The older snapshot's map fails: the newest keeps the copies it mapped,
 * the older one keeps sharing src's frames, and the write made again gives
 * it copies of its own. */
static int keep_map_failure_in_an_older_snapshot(void)
{
	ucow_region *src, *old, *new;
	keep_map_fails("5,4", 16 + 2 + 5, &src, &old, &new);
	CHECK(global_stats().frames == 16 + 2 + 5 + 5);
	for (size_t p = 3; p <= 9; p++)
		CHECK((p >= 4 && p <= 8) == (mapping_offset(page_of(old, p)) !=
					     mapping_offset(page_of(new, p))));
	destroy_three(src, old, new);
	return 0;
}

/* Writes every other page of a new region until one more split would pass
 * ucow's limit (seven eighths of its budget): the next fault coalesces. */
static ucow_region *fill_mapping_budget(void)
{
	struct ucow_global_stats g = global_stats();
	size_t limit = g.mapping_budget - g.mapping_budget / 8;
	size_t pages = 2 * limit + 64;
	ucow_region *r = ucow_create(pages * page_size());
	CHECK(r != NULL);
	char *base = ucow_base(r);
	for (size_t p = 0; global_stats().mappings + 2 <= limit; p += 2) {
		CHECK(p < pages);
		base[p * page_size()] = 1;
	}
	return r;
}

/*
 * The window of region *a near the mapping budget (UCOW_MAP_BUDGET=256
 * reaches it in a few hundred faults on any machine): page 0 a zero page,
 * page 1 written and reused (writable, outside a's home), page 2 read-only.
 * A write to page 3 coalesces the window, and the failpoint `name` makes
 * that fail. Signal backend: the handler leaves the fault with siglongjmp,
 * so the failed state is what the program sees next. Checks what any failed
 * coalesce must leave: the handler called once, page 1 read-only in the
 * table (or its next write would fault for ever), every frame taken given
 * back. *b holds the budget.
 */
static void coalesce_that_fails(const char *name, const char *value,
				ucow_region **a, ucow_region **b)
{
	CHECK(setenv(name, value, 1) == 0);
	CHECK(setenv("UCOW_MAP_BUDGET", "256", 1) == 0);
	CHECK(ucow_set_backend("sigsegv") == 0);
	CHECK(global_stats().mapping_budget == 256);
	*a = ucow_create(64 * page_size());
	CHECK(*a != NULL);
	page_of(*a, 2)[0] = 12;
	page_of(*a, 1)[0] = 11;
	ucow_destroy(ucow_snapshot(*a)); /* new home: pages 1, 2 leave it */
	page_of(*a, 1)[0] = 21;          /* a reuse: writable, outside the home */
	CHECK(stats_of(*a).writable_pages == 1 && stats_of(*a).cow_copies == 0);
	*b = fill_mapping_budget();
	size_t frames = global_stats().frames;

	static int calls;
	ucow_on_fault_error(leave_the_fault, &calls);
	if (sigsetjmp(leave_fault, 1) == 0)
		page_of(*a, 3)[0] = 30;
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 1);
	CHECK(stats_of(*a).writable_pages == 0 && stats_of(*a).coalesced == 0);
	CHECK(global_stats().frames == frames);
}

static void destroy_both(ucow_region *a, ucow_region *b)
{
	ucow_destroy(b);
	ucow_destroy(a);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
}

/*
 * Page 1's copy fails, half-way through the window: page 1 had been
 * write-protected and page 0 had taken a frame. No page copy (frame_fill)
 * may run before: the failpoint fails the first one, and zero fills and
 * reuses copy nothing.
 */
static int coalesce_failure_leaves_the_table_true(void)
{
	ucow_region *a, *b;
	coalesce_that_fails("UCOW_FAILPOINT_FILL", "1", &a, &b);
	page_of(a, 1)[1] = 22; /* faults once more and is served */
	CHECK(page_of(a, 1)[0] == 21 && page_of(a, 1)[1] == 22);
	CHECK(page_of(a, 2)[0] == 12 && page_of(a, 0)[0] == 0);
	destroy_both(a, b);
	return 0;
}

/*
 * The one mapping of the window fails, after every page took its frame in
 * the home (zero pages with no copy, pages 1 and 2 copied there). The next
 * write coalesces again, and maps.
 */
static int coalesce_map_failure_gives_the_frames_back(void)
{
	ucow_region *a, *b;
	coalesce_that_fails("UCOW_FAILPOINT_MAP", "64", &a, &b);
	page_of(a, 3)[0] = 30;
	CHECK(stats_of(a).coalesced > 0);
	CHECK(page_of(a, 1)[0] == 21 && page_of(a, 2)[0] == 12);
	CHECK(page_of(a, 3)[0] == 30 && page_of(a, 0)[0] == 0);
	destroy_both(a, b);
	return 0;
}

/*
 * A snapshot whose backdrop (one mapping of 1,000 pages or more) cannot be
 * mapped fails with ENOMEM and gives back all it took: the source keeps its
 * content, frames and mappings, and its pages stay its own (a write to one
 * is a reuse). Holes keep the first snapshot's runs under 1,000 pages, so
 * the snapshot fails only if it maps a backdrop after scattered writes.
 */
static int snapshot_map_failure_changes_no_content(void)
{
	enum { N = 2048 };
	static const size_t holes[] = {500, 1000, 1500};
	CHECK(setenv("UCOW_FAILPOINT_MAP", "1000", 1) == 0);
	ucow_region *src = ucow_create(N * page_size());
	CHECK(src != NULL);
	for (size_t p = N; p-- > 0;) /* downwards: no fault-around */
		if (p != holes[0] && p != holes[1] && p != holes[2])
			fill_pages(ucow_base(src), p, 1, 1);
	ucow_region *old = ucow_clone(src); /* a snapshot: src keeps frames */
	CHECK(old != NULL);
	for (size_t p = 7; p < N; p += 211)
		fill_pages(ucow_base(src), p, 1, 2);
	struct ucow_global_stats before = global_stats();

	errno = 0;
	CHECK(ucow_snapshot(src) == NULL && errno == ENOMEM);
	struct ucow_global_stats after = global_stats();
	CHECK(after.frames == before.frames && after.regions == before.regions);
	CHECK(after.mappings == before.mappings);
	for (size_t p = 0; p < N; p++) {
		unsigned seed = p % 211 == 7 ? 2 : 1;
		if (p == holes[0] || p == holes[1] || p == holes[2])
			CHECK(is_zero(page_of(src, p), page_size()));
		else
			CHECK(pages_match(ucow_base(src), p, 1, seed));
	}
	struct ucow_stats s = stats_of(src);
	fill_pages(ucow_base(src), 7, 1, 3);
	CHECK(stats_of(src).cow_reuses == s.cow_reuses + 1);
	CHECK(global_stats().frames == before.frames);

	ucow_region *snap = ucow_snapshot(src); /* the failpoint fired once */
	CHECK(snap != NULL && pages_match(ucow_base(snap), 7, 1, 3));
	CHECK(pages_match(ucow_base(snap), 218, 1, 2));
	ucow_destroy(snap);
	ucow_destroy(old);
	ucow_destroy(src);
	CHECK(global_stats().frames == 0 && global_stats().mappings == 0);
	return 0;
}

/*
 * Keeping a frame costs two mapping splits (one under uffd, whose
 * write-protect splits none), a copy one: near the budget
 * (UCOW_MAP_BUDGET=256), keeping stops at 3/8 of it and writes copy, so
 * that scattered writes after a snapshot reach the coalescing point no
 * sooner than without keeping.
 */
static int keep_gives_way_near_the_budget(void)
{
	enum { N = 256, WRITES = 70 };
	CHECK(setenv("UCOW_MAP_BUDGET", "256", 1) == 0);
	ucow_region *src = make_filled(N, N, 3);
	CHECK(src != NULL);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	for (size_t k = WRITES; k-- > 0;) /* every other page, descending */
		fill_pages(ucow_base(src), 2 * k + 1, 1, 4);
	struct ucow_stats s = stats_of(src);
	CHECK(s.cow_kept > 0 && s.cow_copies > 0);
	CHECK(s.cow_kept + s.cow_copies == WRITES && s.coalesced == 0);
	size_t splits = backend_is("sigsegv") ? 4 : 2; /* see vma_keep_fits */
	CHECK(splits * (s.cow_kept - 1) <= global_stats().mapping_budget / 8 * 3);
	CHECK(global_stats().mappings ==
	      (size_t)(mappings_in(ucow_base(src), N * page_size()) +
		       mappings_in(ucow_base(snap), N * page_size())));
	CHECK(pages_match(ucow_base(snap), 0, N, 3));
	for (size_t k = 0; k < WRITES; k++)
		CHECK(pages_match(ucow_base(src), 2 * k + 1, 1, 4));
	ucow_destroy(snap);
	ucow_destroy(src);
	return 0;
}

/* A budget above half of vm.max_map_count is refused, said, and the
 * default kept. */
static int map_budget_out_of_range_is_ignored(void)
{
	long limit = read_long("/proc/sys/vm/max_map_count");
	CHECK(limit > 0);
	char value[32];
	snprintf(value, sizeof value, "%ld", limit / 2 + 1);
	CHECK(setenv("UCOW_MAP_BUDGET", value, 1) == 0);
	struct stderr_capture capture;
	char said[512];
	stderr_capture_begin(&capture);
	ucow_region *r = ucow_create(page_size()); /* ucow starts here */
	stderr_capture_end(&capture, said, sizeof said);
	CHECK(r != NULL);
	size_t budget = global_stats().mapping_budget;
	ucow_destroy(r);
	CHECK(strstr(said, "UCOW_MAP_BUDGET ignored") != NULL);
	CHECK(budget == (size_t)(limit / 2));
	return 0;
}

/*
 * A copy maps what its source maps, and has no lever to map less: copies
 * may take ucow past its mapping budget, but one that would pass twice the
 * budget less an eighth (there, faults would soon find no mapping left)
 * fails with ENOMEM and changes nothing; so does a revert that would. With
 * UCOW_MAP_BUDGET=256 the limit is 480: a clone with 60 scattered private
 * pages holds about 120 mappings, and its third snapshot does not fit.
 */
enum { COPY_LIMIT = 2 * 256 - 256 / 8 };

static int copies_stay_within_the_limit(void)
{
	enum { N = 256, WRITES = 60, MAX_SNAPS = 8 };
	CHECK(setenv("UCOW_MAP_BUDGET", "256", 1) == 0);
	ucow_region *src = make_filled(N, N, 5);
	CHECK(src != NULL);
	ucow_region *c = ucow_clone(src);
	CHECK(c != NULL);
	for (size_t k = 0; k < WRITES; k++)
		fill_pages(ucow_base(c), 4 * k + 1, 1, 6);
	ucow_region *snaps[MAX_SNAPS];
	int n = 0;
	while (n < MAX_SNAPS && (snaps[n] = ucow_snapshot(c)) != NULL)
		n++;
	CHECK(n > 1 && n < MAX_SNAPS && errno == ENOMEM);
	size_t before = global_stats().mappings, frames = global_stats().frames;
	CHECK(before > 256 && before <= COPY_LIMIT &&
	      before + stats_of(c).mappings > COPY_LIMIT);

	errno = 0;
	CHECK(ucow_clone(snaps[0]) == NULL && errno == ENOMEM);
	CHECK(ucow_revert(src, snaps[0]) == -ENOMEM);
	CHECK(global_stats().mappings == before && global_stats().frames == frames);
	CHECK(pages_match(ucow_base(src), 0, N, 5));
	for (size_t k = 0; k < WRITES; k++)
		CHECK(pages_match(ucow_base(snaps[0]), 4 * k + 1, 1, 6) &&
		      pages_match(ucow_base(snaps[0]), 4 * k, 1, 5));
	long kernel = mappings_in(ucow_base(src), N * page_size()) +
		      mappings_in(ucow_base(c), N * page_size());
	for (int k = 0; k < n; k++)
		kernel += mappings_in(ucow_base(snaps[k]), N * page_size());
	CHECK(global_stats().mappings == (size_t)kernel);

	for (int k = 1; k < n; k++)
		ucow_destroy(snaps[k]);
	CHECK(ucow_revert(src, snaps[0]) == 0); /* room again */
	CHECK(pages_match(ucow_base(src), 4 * (WRITES - 1) + 1, 1, 6));
	ucow_destroy(snaps[0]);
	ucow_destroy(c);
	ucow_destroy(src);
	CHECK(global_stats().mappings == 0);
	return 0;
}

const struct child_scenario failure_scenarios[] = {
	{"copy-failure-aborts-by-default", copy_failure_aborts_by_default},
	{"copy-failure-calls-the-handler", copy_failure_calls_the_handler},
	{"keep-failure-calls-the-handler", keep_failure_calls_the_handler},
	{"copy-map-failure-leaves-the-pages-mapped",
	 copy_map_failure_leaves_the_pages_mapped},
	{"copy-map-failure-is-retried", copy_map_failure_is_retried},
	{"revert-in-place-after-a-failed-make-writable",
	 revert_in_place_after_a_failed_make_writable},
	{"keep-map-failure-in-the-newest-snapshot",
	 keep_map_failure_in_the_newest_snapshot},
	{"keep-map-failure-in-an-older-snapshot",
	 keep_map_failure_in_an_older_snapshot},
	{"coalesce-failure-leaves-the-table-true",
	 coalesce_failure_leaves_the_table_true},
	{"coalesce-map-failure-gives-the-frames-back",
	 coalesce_map_failure_gives_the_frames_back},
	{"snapshot-map-failure-changes-no-content",
	 snapshot_map_failure_changes_no_content},
	{"map-budget-out-of-range-is-ignored", map_budget_out_of_range_is_ignored},
	{"keep-gives-way-near-the-budget", keep_gives_way_near_the_budget},
	{"copies-stay-within-the-limit", copies_stay_within_the_limit},
	{"table-commit-failure-keeps-homes-apart",
	 table_commit_failure_keeps_homes_apart},
	{"unshare-after-a-failed-make-writable",
	 unshare_after_a_failed_make_writable},
	{NULL, NULL},
};

static void test_copy_failure_aborts_with_a_clear_line(void)
{
	char path[64], line[256] = "";
	log_path(path, sizeof path, getpid());
	CU_ASSERT(CHILD_SIGNALED(run_scenario("copy-failure-aborts-by-default"),
				 SIGABRT));
	FILE *f = fopen(path, "r");
	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT(fgets(line, sizeof line, f) != NULL);
	fclose(f);
	unlink(path);
	CU_ASSERT(strstr(line, "cannot serve a copy-on-write fault") != NULL);
	CU_ASSERT(strstr(line, "ENOMEM") != NULL);
	CU_ASSERT(strstr(line, " at 0x") != NULL);
}

static void test_copy_failure_calls_the_program_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("copy-failure-calls-the-handler"), 0));
}

static void test_keep_failure_calls_the_program_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("keep-failure-calls-the-handler"), 0));
}

static void test_copy_map_failure_leaves_the_pages_mapped(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("copy-map-failure-leaves-the-pages-mapped"), 0));
}

static void test_copy_map_failure_is_retried(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("copy-map-failure-is-retried"), 0));
}

static void test_revert_in_place_after_a_failed_make_writable(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("revert-in-place-after-a-failed-make-writable"), 0));
}

static void test_keep_map_failure_in_the_newest_snapshot(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("keep-map-failure-in-the-newest-snapshot"), 0));
}

static void test_keep_map_failure_in_an_older_snapshot(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("keep-map-failure-in-an-older-snapshot"), 0));
}

static void test_coalesce_failure_leaves_the_table_true(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("coalesce-failure-leaves-the-table-true"), 0));
}

static void test_coalesce_map_failure_gives_the_frames_back(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("coalesce-map-failure-gives-the-frames-back"), 0));
}

static void test_snapshot_map_failure_changes_no_content(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("snapshot-map-failure-changes-no-content"), 0));
}

static void test_table_commit_failure_keeps_homes_apart(void)
{
	SKIP_UNDER("valgrind", "valgrind keeps RLIMIT_DATA to itself: the "
			       "kernel never refuses the commit");
	CU_ASSERT(CHILD_EXITED(
		run_scenario("table-commit-failure-keeps-homes-apart"), 0));
}

static void test_unshare_after_a_failed_make_writable(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("unshare-after-a-failed-make-writable"), 0));
}

static void test_keep_gives_way_near_the_budget(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("keep-gives-way-near-the-budget"), 0));
}

static void test_copies_stay_within_the_limit(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("copies-stay-within-the-limit"), 0));
}

static void test_map_budget_out_of_range_is_ignored(void)
{
	CU_ASSERT(CHILD_EXITED(
		run_scenario("map-budget-out-of-range-is-ignored"), 0));
}

void add_failure_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_copy_failure_aborts_with_a_clear_line),
		TEST(test_copy_failure_calls_the_program_handler),
		TEST(test_keep_failure_calls_the_program_handler),
		TEST(test_copy_map_failure_leaves_the_pages_mapped),
		TEST(test_revert_in_place_after_a_failed_make_writable),
		TEST(test_copy_map_failure_is_retried),
		TEST(test_keep_map_failure_in_the_newest_snapshot),
		TEST(test_keep_map_failure_in_an_older_snapshot),
		TEST(test_coalesce_failure_leaves_the_table_true),
		TEST(test_coalesce_map_failure_gives_the_frames_back),
		TEST(test_snapshot_map_failure_changes_no_content),
		TEST(test_map_budget_out_of_range_is_ignored),
		TEST(test_keep_gives_way_near_the_budget),
		TEST(test_copies_stay_within_the_limit),
		TEST(test_table_commit_failure_keeps_homes_apart),
		TEST(test_unshare_after_a_failed_make_writable),
		{NULL, NULL},
	};
	add_suite("failure", tests);
}
