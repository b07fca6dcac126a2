/* Every public call, with good and bad input. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

/* Both revert calls take the same arguments and refuse the same input. */
static int (*const reverts[])(ucow_region *, const ucow_region *) = {
	ucow_revert,
	ucow_revert_in_place,
};
enum { REVERTS = sizeof reverts / sizeof *reverts };

static void test_create_zero_size_fails(void)
{
	errno = 0;
	CU_ASSERT_PTR_NULL(ucow_create(0));
	CU_ASSERT_EQUAL(errno, EINVAL);
}

static void test_create_huge_size_fails(void)
{
	errno = 0;
	CU_ASSERT_PTR_NULL(ucow_create(SIZE_MAX));
	CU_ASSERT(errno == EINVAL || errno == ENOMEM);

	/* Rounding this one up to a page would wrap around to 0. */
	errno = 0;
	CU_ASSERT_PTR_NULL(ucow_create(SIZE_MAX - page_size() + 2));
	CU_ASSERT(errno == EINVAL || errno == ENOMEM);
}

static void test_size_is_rounded_up_to_pages(void)
{
	size_t ps = page_size();
	ucow_region *one = ucow_create(1);
	ucow_region *exact = ucow_create(ps);
	ucow_region *more = ucow_create(ps + 1);
	CU_ASSERT_EQUAL(ucow_size(one), ps);
	CU_ASSERT_EQUAL(ucow_size(exact), ps);
	CU_ASSERT_EQUAL(ucow_size(more), 2 * ps);
	CU_ASSERT_EQUAL((uintptr_t)ucow_base(more) % ps, 0);
	CU_ASSERT_EQUAL(stats_of(more).pages, 2);
	ucow_destroy(one);
	ucow_destroy(exact);
	ucow_destroy(more);
}

static void test_fresh_region_reads_zeros(void)
{
	ucow_region *r = ucow_create(4 * page_size());
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT(is_zero(ucow_base(r), ucow_size(r)));
	struct ucow_stats s = stats_of(r);
	CU_ASSERT_EQUAL(s.pages, 4);
	CU_ASSERT_EQUAL(s.zero_pages, 4);
	CU_ASSERT_EQUAL(s.shared_pages, 0);
	CU_ASSERT_EQUAL(s.private_pages, 0);
	CU_ASSERT_EQUAL(s.cow_copies + s.cow_reuses + s.zero_fills, 0);
	ucow_destroy(r);
}

static void test_fresh_region_is_writable(void)
{
	ucow_region *r = ucow_create(4 * page_size());
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	fill_pages(ucow_base(r), 0, 3, 1);
	CU_ASSERT(pages_match(ucow_base(r), 0, 3, 1));
	CU_ASSERT(is_zero(page_of(r, 3), page_size()));
	struct ucow_stats s = stats_of(r);
	CU_ASSERT_EQUAL(s.zero_fills, 3);
	CU_ASSERT_EQUAL(s.cow_copies, 0);
	CU_ASSERT_EQUAL(s.private_pages, 3);
	CU_ASSERT_EQUAL(s.zero_pages, 1);
	CU_ASSERT_EQUAL(s.writable_pages, 3);
	CU_ASSERT_EQUAL(ucow_is_snapshot(r), 0);
	ucow_destroy(r);
}

static void test_null_handle(void)
{
	CU_ASSERT_PTR_NULL(ucow_base(NULL));
	CU_ASSERT_EQUAL(ucow_size(NULL), 0);
	CU_ASSERT(ucow_is_snapshot(NULL) < 0);
	errno = 0;
	CU_ASSERT_PTR_NULL(ucow_clone(NULL));
	CU_ASSERT_EQUAL(errno, EINVAL);
	errno = 0;
	CU_ASSERT_PTR_NULL(ucow_snapshot(NULL));
	CU_ASSERT_EQUAL(errno, EINVAL);
}

static void test_destroy_null_is_noop(void)
{
	size_t regions = global_stats().regions;
	ucow_destroy(NULL);
	CU_ASSERT_EQUAL(global_stats().regions, regions);
}

static void test_destroyed_handle_reads_as_empty(void)
{
	ucow_region *r = make_filled(2, 2, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	ucow_destroy(r);
	CU_ASSERT_EQUAL(ucow_size(r), 0);
	CU_ASSERT_PTR_NULL(ucow_base(r));
	CU_ASSERT_EQUAL(ucow_is_snapshot(r), -EBADF);
}

static void test_destroyed_handle_calls_fail_with_ebadf(void)
{
	ucow_region *live = make_filled(2, 2, 2);
	ucow_region *r = make_filled(2, 2, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(live);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	ucow_destroy(r);
	size_t regions = global_stats().regions;

	struct ucow_stats s;
	CU_ASSERT_EQUAL(ucow_stats(r, &s), -EBADF);
	errno = 0;
	CU_ASSERT_PTR_NULL(ucow_clone(r));
	CU_ASSERT_EQUAL(errno, EBADF);
	errno = 0;
	CU_ASSERT_PTR_NULL(ucow_snapshot(r));
	CU_ASSERT_EQUAL(errno, EBADF);
	for (unsigned k = 0; k < REVERTS; k++) {
		CU_ASSERT_EQUAL(reverts[k](r, live), -EBADF);
		CU_ASSERT_EQUAL(reverts[k](live, r), -EBADF);
	}
	CU_ASSERT(pages_match(ucow_base(live), 0, 2, 2));
	CU_ASSERT_EQUAL(global_stats().regions, regions);
	ucow_destroy(live);
}

static void test_double_destroy_is_harmless(void)
{
	ucow_region *keep = make_filled(2, 2, 3);
	ucow_region *r = make_filled(2, 2, 4);
	CU_ASSERT_PTR_NOT_NULL_FATAL(keep);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	size_t regions = global_stats().regions;
	ucow_destroy(r);
	ucow_destroy(r);
	CU_ASSERT_EQUAL(global_stats().regions, regions - 1);
	CU_ASSERT(pages_match(ucow_base(keep), 0, 2, 3));
	CU_ASSERT_EQUAL(stats_of(keep).pages, 2);
	ucow_destroy(keep);
}

/* Every call that takes a handle must refuse `bogus` without touching `live`. */
static void check_foreign_handle_refused(ucow_region *bogus, ucow_region *live)
{
	struct ucow_stats s;
	size_t regions = global_stats().regions;
	CHECK(ucow_stats(bogus, &s) == -EBADF);
	errno = 0;
	CHECK(ucow_clone(bogus) == NULL && errno == EBADF);
	errno = 0;
	CHECK(ucow_snapshot(bogus) == NULL && errno == EBADF);
	for (unsigned k = 0; k < REVERTS; k++) {
		CHECK(reverts[k](bogus, live) == -EBADF);
		CHECK(reverts[k](live, bogus) == -EBADF);
	}
	CHECK(ucow_is_snapshot(bogus) == -EBADF);
	CHECK(ucow_size(bogus) == 0);
	CHECK(ucow_base(bogus) == NULL);
	ucow_destroy(bogus);
	CHECK(global_stats().regions == regions);
	CHECK(pages_match(ucow_base(live), 0, 2, 5));
}

static void foreign_stack_handle(void *unused)
{
	(void)unused;
	ucow_region *live = make_filled(2, 2, 5);
	CHECK(live != NULL);
	union {
		char bytes[256];
		void *ptrs[32];
	} junk;
	memset(&junk, 0xa5, sizeof(junk));
	check_foreign_handle_refused((ucow_region *)&junk, live);
	memset(&junk, 0, sizeof(junk));
	check_foreign_handle_refused((ucow_region *)&junk, live);
}

static void foreign_heap_handle(void *unused)
{
	(void)unused;
	ucow_region *live = make_filled(2, 2, 5);
	CHECK(live != NULL);
	void *block = malloc(256);
	CHECK(block != NULL);
	memset(block, 0x5a, 256);
	check_foreign_handle_refused(block, live);
	free(block);
}

static void foreign_unmapped_handle(void *unused)
{
	(void)unused;
	ucow_region *live = make_filled(2, 2, 5);
	CHECK(live != NULL);
	void *hole = mmap(NULL, page_size(), PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(hole != MAP_FAILED);
	check_foreign_handle_refused(hole, live);
}

/*
 * Handles are slots of one reserved table, accessible only as far as slots
 * have been used: a handle of the right shape past them must be refused,
 * not read.
 */
static void handle_past_the_slots_in_use(void *unused)
{
	(void)unused;
	/* Regions made one after another take neighbouring slots: their
	 * distance is the size of a slot. */
	ucow_region *live = make_filled(2, 2, 5);
	ucow_region *b = make_filled(1, 1, 1), *c = make_filled(1, 1, 1);
	CHECK(live && b && c);
	uintptr_t slot = (uintptr_t)c - (uintptr_t)b;
	CHECK((uintptr_t)b - (uintptr_t)live == slot && slot < 4096);
	for (uintptr_t n = 100000; n < 1000000; n += 299999)
		check_foreign_handle_refused(
			(ucow_region *)((uintptr_t)live + n * slot), live);
}

/* A foreign pointer could crash a careless library: try it in a child. */
static void test_foreign_stack_pointer_is_ebadf(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(foreign_stack_handle, NULL), 0));
}

static void test_foreign_heap_pointer_is_ebadf(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(foreign_heap_handle, NULL), 0));
}

static void test_foreign_unmapped_pointer_is_ebadf(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(foreign_unmapped_handle, NULL), 0));
}

static void test_handle_past_the_slots_in_use_is_ebadf(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(handle_past_the_slots_in_use, NULL),
			       0));
}

/* The rest of the region's 2 MiB chunk reads as zeros, and a write there is
 * the program's fault under every backend (under uffd it once waited for
 * ever: the tail was registered, and no one served it). */
static void write_past_the_end(void *unused)
{
	(void)unused;
	ucow_region *r = make_filled(1, 1, 13);
	CHECK(r != NULL);
	volatile char *end = page_of(r, 1);
	CHECK(end[0] == 0 && end[page_size() - 1] == 0);
	alarm(10); /* a write that waits dies of SIGALRM, and fails the test */
	end[0] = 'x';
	CHECK(!"the write past the region's end did not fault");
}

static void test_write_past_the_end_is_sigsegv(void)
{
	CU_ASSERT(CHILD_SIGNALED(run_in_child(write_past_the_end, NULL),
				 SIGSEGV));
}

static void test_stats_null_arguments(void)
{
	ucow_region *r = ucow_create(page_size());
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	struct ucow_stats s;
	CU_ASSERT_EQUAL(ucow_stats(NULL, &s), -EINVAL);
	CU_ASSERT_EQUAL(ucow_stats(r, NULL), -EINVAL);
	CU_ASSERT_EQUAL(ucow_stats(NULL, NULL), -EINVAL);
	ucow_destroy(r);
}

static void test_revert_null_arguments(void)
{
	ucow_region *r = make_filled(1, 1, 6);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	for (unsigned k = 0; k < REVERTS; k++) {
		CU_ASSERT_EQUAL(reverts[k](NULL, r), -EINVAL);
		CU_ASSERT_EQUAL(reverts[k](r, NULL), -EINVAL);
		CU_ASSERT_EQUAL(reverts[k](NULL, NULL), -EINVAL);
	}
	CU_ASSERT(pages_match(ucow_base(r), 0, 1, 6));
	ucow_destroy(r);
}

static void test_revert_size_mismatch_is_refused(void)
{
	ucow_region *small = make_filled(2, 2, 7);
	ucow_region *big = make_filled(3, 3, 8);
	CU_ASSERT_PTR_NOT_NULL_FATAL(small);
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	struct ucow_stats small_before = stats_of(small);
	struct ucow_stats big_before = stats_of(big);

	for (unsigned k = 0; k < REVERTS; k++) {
		CU_ASSERT_EQUAL(reverts[k](small, big), -EINVAL);
		CU_ASSERT_EQUAL(reverts[k](big, small), -EINVAL);
	}

	CU_ASSERT(pages_match(ucow_base(small), 0, 2, 7));
	CU_ASSERT(pages_match(ucow_base(big), 0, 3, 8));
	struct ucow_stats small_after = stats_of(small);
	struct ucow_stats big_after = stats_of(big);
	CU_ASSERT(stats_equal(&small_before, &small_after));
	CU_ASSERT(stats_equal(&big_before, &big_after));
	ucow_destroy(small);
	ucow_destroy(big);
}

static void test_revert_into_snapshot_is_refused(void)
{
	ucow_region *src = make_filled(2, 2, 9);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	ucow_region *snap = ucow_snapshot(src);
	ucow_region *other = make_filled(2, 2, 10);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	CU_ASSERT_PTR_NOT_NULL_FATAL(other);
	struct ucow_stats before = stats_of(snap);

	for (unsigned k = 0; k < REVERTS; k++)
		CU_ASSERT_EQUAL(reverts[k](snap, other), -EPERM);

	CU_ASSERT(pages_match(ucow_base(snap), 0, 2, 9));
	struct ucow_stats after = stats_of(snap);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT_EQUAL(ucow_is_snapshot(snap), 1);
	ucow_destroy(other);
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_revert_to_itself_is_noop(void)
{
	ucow_region *r = make_filled(3, 2, 11);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	struct ucow_stats before = stats_of(r);
	for (unsigned k = 0; k < REVERTS; k++)
		CU_ASSERT_EQUAL(reverts[k](r, r), 0);
	struct ucow_stats after = stats_of(r);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT(pages_match(ucow_base(r), 0, 2, 11));
	CU_ASSERT(is_zero(page_of(r, 2), page_size()));
	ucow_destroy(r);
}

/* A source and a clone sharing all of their 4 pages. */
struct shared_pair {
	ucow_region *src, *clone;
};

static struct shared_pair make_shared_pair(unsigned seed)
{
	struct shared_pair p = { make_filled(4, 4, seed), NULL };
	if (p.src)
		p.clone = ucow_clone(p.src);
	return p;
}

static void destroy_pair(struct shared_pair p)
{
	ucow_destroy(p.clone);
	ucow_destroy(p.src);
}

static void test_unshare_zero_length_is_noop(void)
{
	struct shared_pair p = make_shared_pair(12);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p.clone);
	struct ucow_stats before = stats_of(p.clone);
	CU_ASSERT_EQUAL(ucow_unshare(ucow_base(p.clone), 0), 0);
	struct ucow_stats after = stats_of(p.clone);
	CU_ASSERT(stats_equal(&before, &after));
	destroy_pair(p);
}

static void test_unshare_outside_regions_is_efault(void)
{
	int local = 0;
	char *heap = malloc(64);
	CU_ASSERT_PTR_NOT_NULL_FATAL(heap);
	uint64_t faults = global_stats().faults;
	CU_ASSERT_EQUAL(ucow_unshare(&local, sizeof(local)), -EFAULT);
	CU_ASSERT_EQUAL(ucow_unshare(heap, 64), -EFAULT);
	CU_ASSERT_EQUAL(global_stats().faults, faults);
	free(heap);
}

static void test_unshare_snapshot_is_eperm(void)
{
	ucow_region *src = make_filled(2, 2, 13);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	struct ucow_stats before = stats_of(snap);
	CU_ASSERT_EQUAL(ucow_unshare(ucow_base(snap), page_size()), -EPERM);
	struct ucow_stats after = stats_of(snap);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT_EQUAL(stats_of(src).shared_pages, 2);
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_unshare_past_region_end_is_einval(void)
{
	struct shared_pair p = make_shared_pair(14);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p.clone);
	struct ucow_stats before = stats_of(p.clone);
	/* Starts in the last page, which alone would be fine. */
	CU_ASSERT_EQUAL(ucow_unshare(page_of(p.clone, 3), 2 * page_size()),
			-EINVAL);
	struct ucow_stats after = stats_of(p.clone);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT_EQUAL(after.shared_pages, 4);
	destroy_pair(p);
}

static void test_unshare_breaks_sharing_of_the_range(void)
{
	struct shared_pair p = make_shared_pair(15);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p.clone);
	CU_ASSERT_EQUAL(ucow_unshare(page_of(p.clone, 1), 2 * page_size()), 0);

	struct ucow_stats s = stats_of(p.clone);
	CU_ASSERT_EQUAL(s.shared_pages, 2);
	CU_ASSERT_EQUAL(s.private_pages, 2);
	CU_ASSERT_EQUAL(s.writable_pages, 2);
	CU_ASSERT(pages_match(ucow_base(p.clone), 0, 4, 15));
	CU_ASSERT(pages_match(ucow_base(p.src), 0, 4, 15));

	/* The unshared pages are writable now: writing them is no fault. */
	fill_pages(ucow_base(p.clone), 1, 2, 16);
	struct ucow_stats t = stats_of(p.clone);
	CU_ASSERT_EQUAL(t.cow_copies, s.cow_copies);
	CU_ASSERT_EQUAL(t.cow_reuses, s.cow_reuses);
	CU_ASSERT_EQUAL(t.zero_fills, s.zero_fills);
	CU_ASSERT(pages_match(ucow_base(p.src), 0, 4, 15));
	destroy_pair(p);
}

static void test_unshare_unaligned_range_covers_its_pages(void)
{
	struct shared_pair p = make_shared_pair(17);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p.clone);
	/* 2 bytes straddling the boundary of pages 1 and 2. */
	CU_ASSERT_EQUAL(ucow_unshare(page_of(p.clone, 2) - 1, 2), 0);
	struct ucow_stats s = stats_of(p.clone);
	CU_ASSERT_EQUAL(s.shared_pages, 2);
	CU_ASSERT_EQUAL(s.writable_pages, 2);
	CU_ASSERT(pages_match(ucow_base(p.clone), 0, 4, 17));
	destroy_pair(p);
}

static void test_global_stats_null_is_einval(void)
{
	CU_ASSERT_EQUAL(ucow_global_stats(NULL), -EINVAL);
}

static void test_global_stats_count_regions(void)
{
	size_t regions = global_stats().regions;
	ucow_region *r = ucow_create(page_size());
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(global_stats().regions, regions + 1);
	ucow_region *snap = ucow_snapshot(r);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	CU_ASSERT_EQUAL(global_stats().regions, regions + 2);
	CU_ASSERT_EQUAL(global_stats().frame_bytes,
			global_stats().frames * page_size());
	ucow_destroy(r);
	ucow_destroy(snap);
	CU_ASSERT_EQUAL(global_stats().regions, regions);
}

static void test_backend_name(void)
{
	const char *want = getenv("UCOW_BACKEND");
	const char *got = ucow_backend();
	CU_ASSERT_PTR_NOT_NULL_FATAL(got);
	CU_ASSERT(strcmp(got, "sigsegv") == 0 || strcmp(got, "uffd") == 0);
	CU_ASSERT_STRING_EQUAL(got, want ? want : "sigsegv");
}

/* "" names no backend (only an empty UCOW_BACKEND means the default):
 * refused, the backend unchanged. */
static void test_set_backend_empty_name_is_einval(void)
{
	const char *before = ucow_backend();
	CU_ASSERT_PTR_NOT_NULL_FATAL(before);
	CU_ASSERT_EQUAL(ucow_set_backend(""), -EINVAL);
	CU_ASSERT_PTR_EQUAL(ucow_backend(), before);
}

static void test_page_size(void)
{
	CU_ASSERT_EQUAL(ucow_page_size(), (size_t)sysconf(_SC_PAGESIZE));
}

static void test_handle_fault_outside_regions_is_zero(void)
{
	int local = 0;
	CU_ASSERT_EQUAL(ucow_handle_fault(&local), 0);
	CU_ASSERT_EQUAL(ucow_handle_fault(NULL), 0);
	CU_ASSERT_EQUAL(local, 0);
}

void add_api_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_create_zero_size_fails),
		TEST(test_create_huge_size_fails),
		TEST(test_size_is_rounded_up_to_pages),
		TEST(test_fresh_region_reads_zeros),
		TEST(test_fresh_region_is_writable),
		TEST(test_null_handle),
		TEST(test_destroy_null_is_noop),
		TEST(test_destroyed_handle_reads_as_empty),
		TEST(test_destroyed_handle_calls_fail_with_ebadf),
		TEST(test_double_destroy_is_harmless),
		TEST(test_foreign_stack_pointer_is_ebadf),
		TEST(test_foreign_heap_pointer_is_ebadf),
		TEST(test_foreign_unmapped_pointer_is_ebadf),
		TEST(test_handle_past_the_slots_in_use_is_ebadf),
		TEST(test_write_past_the_end_is_sigsegv),
		TEST(test_stats_null_arguments),
		TEST(test_revert_null_arguments),
		TEST(test_revert_size_mismatch_is_refused),
		TEST(test_revert_into_snapshot_is_refused),
		TEST(test_revert_to_itself_is_noop),
		TEST(test_unshare_zero_length_is_noop),
		TEST(test_unshare_outside_regions_is_efault),
		TEST(test_unshare_snapshot_is_eperm),
		TEST(test_unshare_past_region_end_is_einval),
		TEST(test_unshare_breaks_sharing_of_the_range),
		TEST(test_unshare_unaligned_range_covers_its_pages),
		TEST(test_global_stats_null_is_einval),
		TEST(test_global_stats_count_regions),
		TEST(test_backend_name),
		TEST(test_set_backend_empty_name_is_einval),
		TEST(test_page_size),
		TEST(test_handle_fault_outside_regions_is_zero),
		{ NULL, NULL },
	};
	add_suite("api", tests);
}
