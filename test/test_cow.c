/* Copy-on-write between a region and its clones. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

enum { PAGES = 8, WRITTEN = 5 };

static void test_clone_shares_written_pages(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	CU_ASSERT_EQUAL(stats_of(src).writable_pages, WRITTEN);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);

	CU_ASSERT_EQUAL(ucow_size(clone), ucow_size(src));
	CU_ASSERT_EQUAL(ucow_is_snapshot(clone), 0);
	CU_ASSERT(pages_match(ucow_base(clone), 0, WRITTEN, 1));
	CU_ASSERT(is_zero(page_of(clone, WRITTEN), (PAGES - WRITTEN) * page_size()));
	const ucow_region *both[] = { src, clone };
	for (int i = 0; i < 2; i++) {
		struct ucow_stats s = stats_of(both[i]);
		CU_ASSERT_EQUAL(s.pages, PAGES);
		CU_ASSERT_EQUAL(s.shared_pages, WRITTEN);
		CU_ASSERT_EQUAL(s.private_pages, 0);
		CU_ASSERT_EQUAL(s.zero_pages, PAGES - WRITTEN);
		CU_ASSERT_EQUAL(s.writable_pages, 0);
	}
	ucow_destroy(clone);
	ucow_destroy(src);
}

static void test_clone_write_copies_one_page(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 2);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	struct ucow_stats src_before = stats_of(src);
	uint64_t faults = global_stats().faults;

	fill_pages(ucow_base(clone), 0, 1, 3);

	struct ucow_stats c = stats_of(clone), s = stats_of(src);
	CU_ASSERT_EQUAL(c.cow_copies, 1);
	CU_ASSERT_EQUAL(c.cow_reuses, 0);
	CU_ASSERT_EQUAL(c.zero_fills, 0);
	CU_ASSERT_EQUAL(c.shared_pages, WRITTEN - 1);
	CU_ASSERT_EQUAL(c.private_pages, 1);
	CU_ASSERT_EQUAL(c.writable_pages, 1);
	CU_ASSERT_EQUAL(global_stats().faults, faults + 1);
	/* src's old frame is its own now, but src has not written it. */
	CU_ASSERT_EQUAL(s.shared_pages, WRITTEN - 1);
	CU_ASSERT_EQUAL(s.private_pages, 1);
	CU_ASSERT_EQUAL(s.cow_copies, src_before.cow_copies);
	CU_ASSERT(pages_match(ucow_base(clone), 0, 1, 3));
	CU_ASSERT(pages_match(ucow_base(clone), 1, WRITTEN - 1, 2));
	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 2));
	ucow_destroy(clone);
	ucow_destroy(src);
}

static void test_source_write_after_clone_copies_for_source(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 4);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	uint64_t copies = stats_of(src).cow_copies;

	fill_pages(ucow_base(src), 1, 1, 5);

	CU_ASSERT_EQUAL(stats_of(src).cow_copies, copies + 1);
	CU_ASSERT_EQUAL(stats_of(clone).cow_copies, 0);
	CU_ASSERT(pages_match(ucow_base(src), 1, 1, 5));
	CU_ASSERT(pages_match(ucow_base(clone), 0, WRITTEN, 4));
	ucow_destroy(clone);
	ucow_destroy(src);
}

static void test_second_write_to_copied_page_is_no_fault(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 6);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	fill_pages(ucow_base(clone), 2, 1, 7);
	struct ucow_stats before = stats_of(clone);
	uint64_t faults = global_stats().faults;

	fill_pages(ucow_base(clone), 2, 1, 8);

	struct ucow_stats after = stats_of(clone);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT_EQUAL(global_stats().faults, faults);
	CU_ASSERT(pages_match(ucow_base(clone), 2, 1, 8));
	ucow_destroy(clone);
	ucow_destroy(src);
}

static void test_writing_a_zero_page_is_a_zero_fill(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 9);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);

	fill_pages(ucow_base(clone), WRITTEN, 1, 10);

	struct ucow_stats c = stats_of(clone);
	CU_ASSERT_EQUAL(c.zero_fills, 1);
	CU_ASSERT_EQUAL(c.cow_copies, 0);
	CU_ASSERT_EQUAL(c.zero_pages, PAGES - WRITTEN - 1);
	CU_ASSERT_EQUAL(c.private_pages, 1);
	CU_ASSERT(pages_match(ucow_base(clone), WRITTEN, 1, 10));
	CU_ASSERT(is_zero(page_of(src, WRITTEN), page_size()));
	CU_ASSERT_EQUAL(stats_of(src).zero_pages, PAGES - WRITTEN);
	ucow_destroy(clone);
	ucow_destroy(src);
}

static void test_write_after_source_destroyed_is_a_reuse(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 11);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	ucow_destroy(src);

	struct ucow_stats before = stats_of(clone);
	CU_ASSERT_EQUAL(before.shared_pages, 0);
	CU_ASSERT_EQUAL(before.private_pages, WRITTEN);
	fill_pages(ucow_base(clone), 0, 1, 12);

	struct ucow_stats after = stats_of(clone);
	CU_ASSERT_EQUAL(after.cow_reuses, before.cow_reuses + 1);
	CU_ASSERT_EQUAL(after.cow_copies, before.cow_copies);
	CU_ASSERT(pages_match(ucow_base(clone), 0, 1, 12));
	CU_ASSERT(pages_match(ucow_base(clone), 1, WRITTEN - 1, 11));
	ucow_destroy(clone);
}

static void test_write_after_clone_destroyed_is_a_reuse(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 13);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	ucow_destroy(clone);

	struct ucow_stats before = stats_of(src);
	CU_ASSERT_EQUAL(before.shared_pages, 0);
	fill_pages(ucow_base(src), 3, 1, 14);

	struct ucow_stats after = stats_of(src);
	CU_ASSERT_EQUAL(after.cow_reuses, before.cow_reuses + 1);
	CU_ASSERT_EQUAL(after.cow_copies, before.cow_copies);
	CU_ASSERT(pages_match(ucow_base(src), 3, 1, 14));
	ucow_destroy(src);
}

/*
 * The write returns only once its fault is complete: pte and counters are
 * updated before the writer goes on. Under uffd the handler thread serves
 * the fault, and waking the writer early (clearing the protection wakes it)
 * left this visible within a few rounds.
 */
static void test_write_returns_after_its_fault_is_counted(void)
{
	enum { ROUNDS = 1000 };
	ucow_region *src = make_filled(1, 1, 40);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	int late = 0;
	for (int k = 0; k < ROUNDS; k++) {
		ucow_destroy(ucow_clone(src));
		struct ucow_stats before = stats_of(src);
		*(volatile char *)ucow_base(src) = (char)k;
		struct ucow_stats after = stats_of(src);
		late += after.cow_reuses != before.cow_reuses + 1 ||
			after.writable_pages != 1;
	}
	CU_ASSERT_EQUAL(late, 0);
	ucow_destroy(src);
}

static void test_destroying_source_first_keeps_clone_content(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 15);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	fill_pages(ucow_base(clone), 0, 1, 16);
	ucow_destroy(src);
	CU_ASSERT(pages_match(ucow_base(clone), 0, 1, 16));
	CU_ASSERT(pages_match(ucow_base(clone), 1, WRITTEN - 1, 15));
	CU_ASSERT(is_zero(page_of(clone, WRITTEN), (PAGES - WRITTEN) * page_size()));
	ucow_destroy(clone);
}

static void test_destroying_clone_first_keeps_source_content(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 17);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	fill_pages(ucow_base(src), 0, 1, 18);
	ucow_destroy(clone);
	CU_ASSERT(pages_match(ucow_base(src), 0, 1, 18));
	CU_ASSERT(pages_match(ucow_base(src), 1, WRITTEN - 1, 17));
	ucow_destroy(src);
}

static void test_clone_of_a_clone(void)
{
	ucow_region *a = make_filled(PAGES, WRITTEN, 19);
	ucow_region *b = ucow_clone(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	fill_pages(ucow_base(b), 0, 1, 20);
	ucow_region *c = ucow_clone(b);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);

	CU_ASSERT(pages_match(ucow_base(c), 0, 1, 20));
	CU_ASSERT(pages_match(ucow_base(c), 1, WRITTEN - 1, 19));
	CU_ASSERT_EQUAL(stats_of(c).shared_pages, WRITTEN);

	fill_pages(ucow_base(c), 1, 1, 21);
	CU_ASSERT_EQUAL(stats_of(c).cow_copies, 1);
	CU_ASSERT(pages_match(ucow_base(a), 0, WRITTEN, 19));
	CU_ASSERT(pages_match(ucow_base(b), 1, WRITTEN - 1, 19));

	ucow_destroy(b);
	CU_ASSERT(pages_match(ucow_base(a), 0, WRITTEN, 19));
	CU_ASSERT(pages_match(ucow_base(c), 0, 1, 20));
	CU_ASSERT(pages_match(ucow_base(c), 1, 1, 21));
	CU_ASSERT(pages_match(ucow_base(c), 2, WRITTEN - 2, 19));
	ucow_destroy(c);
	ucow_destroy(a);
}

static void test_many_independent_regions(void)
{
	enum { N = 200 };
	static ucow_region *r[N];
	size_t regions = global_stats().regions;
	for (unsigned i = 0; i < N; i++) {
		r[i] = make_filled(1 + i % 3, 1 + i % 3, 100 + i);
		CU_ASSERT_PTR_NOT_NULL_FATAL(r[i]);
	}
	CU_ASSERT_EQUAL(global_stats().regions, regions + N);
	unsigned good = 0;
	for (unsigned i = 0; i < N; i++)
		good += pages_match(ucow_base(r[i]), 0, 1 + i % 3, 100 + i);
	CU_ASSERT_EQUAL(good, N);
	for (unsigned i = 0; i < N; i++)
		ucow_destroy(r[i]);
	CU_ASSERT_EQUAL(global_stats().regions, regions);
}

/* Puts `len` bytes of `byte` in a new pipe and returns its read end. */
static int pipe_with(size_t len, unsigned char byte)
{
	int fd[2];
	if (pipe(fd) != 0)
		return -1;
	unsigned char buf[256];
	memset(buf, byte, sizeof(buf));
	if (len > sizeof(buf) || write(fd[1], buf, len) != (ssize_t)len) {
		close(fd[0]);
		close(fd[1]);
		return -1;
	}
	close(fd[1]);
	return fd[0];
}

static void test_read_into_unshared_page_succeeds(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 22);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	int fd = pipe_with(100, 0xee);
	CU_ASSERT_FATAL(fd >= 0);

	CU_ASSERT_EQUAL(ucow_unshare(page_of(clone, 1), 100), 0);
	CU_ASSERT_EQUAL(read(fd, page_of(clone, 1), 100), 100);

	unsigned char want[100];
	memset(want, 0xee, sizeof(want));
	CU_ASSERT(memcmp(page_of(clone, 1), want, 100) == 0);
	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 22));
	close(fd);
	ucow_destroy(clone);
	ucow_destroy(src);
}

/*
 * The kernel writes user memory without raising SIGSEGV, so the signal
 * backend cannot copy a shared page for read(2): the call fails instead.
 * userfaultfd serves the kernel's own faults, so there it must succeed.
 */
static void test_read_into_shared_page_without_unshare(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 23);
	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	int fd = pipe_with(100, 0xee);
	CU_ASSERT_FATAL(fd >= 0);

	errno = 0;
	ssize_t n = read(fd, page_of(clone, 1), 100);
	if (backend_is("uffd")) {
		CU_ASSERT_EQUAL(n, 100);
		CU_ASSERT_EQUAL((unsigned char)page_of(clone, 1)[99], 0xee);
	} else {
		CU_ASSERT_EQUAL(n, -1);
		CU_ASSERT_EQUAL(errno, EFAULT);
		CU_ASSERT(pages_match(ucow_base(clone), 0, WRITTEN, 23));
	}
	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 23));
	close(fd);
	ucow_destroy(clone);
	ucow_destroy(src);
}

static void test_frames_are_given_back(void)
{
	size_t frames = global_stats().frames;
	ucow_region *src = make_filled(PAGES, WRITTEN, 24);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	CU_ASSERT_EQUAL(global_stats().frames, frames + WRITTEN);
	ucow_region *clone = ucow_clone(src);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	CU_ASSERT_EQUAL(global_stats().frames, frames + WRITTEN);
	fill_pages(ucow_base(clone), 0, 2, 25);     /* 2 copies */
	fill_pages(ucow_base(clone), PAGES - 1, 1, 25); /* 1 zero fill */
	CU_ASSERT_EQUAL(global_stats().frames, frames + WRITTEN + 3);

	ucow_destroy(src);
	CU_ASSERT_EQUAL(global_stats().frames, frames + WRITTEN + 3);
	ucow_destroy(snap);
	/* The clone's copies replaced 2 of the old frames. */
	CU_ASSERT_EQUAL(global_stats().frames, frames + WRITTEN + 1);
	ucow_destroy(clone);
	CU_ASSERT_EQUAL(global_stats().frames, frames);
}

/* A writer moving in sequence gets the next shared pages copied with it. */
static void test_ascending_writes_copy_ahead(void)
{
	ucow_region *src = make_filled(64, 64, 21);
	ucow_region *c = ucow_clone(src);
	page_of(c, 0)[0] = 1;
	page_of(c, 1)[0] = 2;
	struct ucow_stats s = stats_of(c);
	CU_ASSERT_EQUAL(s.cow_copies, 2);
	CU_ASSERT_EQUAL(s.fault_around, 15);
	CU_ASSERT_EQUAL(s.private_pages, 17);
	CU_ASSERT_EQUAL(s.writable_pages, 17);
	CU_ASSERT(pages_match(ucow_base(src), 0, 64, 21));
	CU_ASSERT(pages_match(ucow_base(c), 2, 62, 21));
	CU_ASSERT_EQUAL(page_of(c, 1)[0], 2);
	ucow_destroy(c);
	ucow_destroy(src);
}

/* A writer that stays in sequence gets runs that double, up to 64 pages:
 * faults at pages 0, 1, 17, 49, 113 and 177 serve 1, 16, 32, 64, 64 and
 * the last 23 of 200 pages. */
static void test_long_ascending_writes_double_the_run(void)
{
	enum { N = 200 };
	ucow_region *src = make_filled(N, N, 25);
	ucow_region *c = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	for (size_t p = 0; p < N; p++)
		page_of(c, p)[0] = 1;
	struct ucow_stats s = stats_of(c);
	CU_ASSERT_EQUAL(s.cow_copies, 6);
	CU_ASSERT_EQUAL(s.fault_around, N - 6);
	CU_ASSERT_EQUAL(s.private_pages, N);
	CU_ASSERT(pages_match(ucow_base(src), 0, N, 25));
	ucow_destroy(c);
	ucow_destroy(src);
}

/* The run stops where the next page needs other work (a zero page here). */
static void test_fault_around_stops_at_other_kind(void)
{
	ucow_region *src = make_filled(64, 5, 22);
	ucow_region *c = ucow_clone(src);
	page_of(c, 0)[0] = 1;
	page_of(c, 1)[0] = 2;
	struct ucow_stats s = stats_of(c);
	CU_ASSERT_EQUAL(s.fault_around, 3);
	CU_ASSERT_EQUAL(s.private_pages, 5);
	CU_ASSERT_EQUAL(s.zero_pages, 59);
	ucow_destroy(c);
	ucow_destroy(src);
}

/* Writes in random or descending order copy only what they write. */
static void test_descending_writes_copy_only_what_they_write(void)
{
	ucow_region *src = make_filled(64, 64, 23);
	ucow_region *c = ucow_clone(src);
	for (size_t p = 40; p-- > 20;)
		page_of(c, p)[0] = 1;
	struct ucow_stats s = stats_of(c);
	CU_ASSERT_EQUAL(s.cow_copies, 20);
	CU_ASSERT_EQUAL(s.fault_around, 0);
	CU_ASSERT_EQUAL(s.private_pages, 20);
	ucow_destroy(c);
	ucow_destroy(src);
}

/* ucow_unshare breaks sharing of exactly the range it is given. */
static void test_unshare_copies_no_more_than_asked(void)
{
	ucow_region *src = make_filled(64, 64, 24);
	ucow_region *c = ucow_clone(src);
	CU_ASSERT_EQUAL(ucow_unshare(page_of(c, 0), 3 * page_size()), 0);
	struct ucow_stats s = stats_of(c);
	CU_ASSERT_EQUAL(s.private_pages, 3);
	CU_ASSERT_EQUAL(s.fault_around, 0);
	ucow_destroy(c);
	ucow_destroy(src);
}

void add_cow_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_clone_shares_written_pages),
		TEST(test_clone_write_copies_one_page),
		TEST(test_source_write_after_clone_copies_for_source),
		TEST(test_second_write_to_copied_page_is_no_fault),
		TEST(test_writing_a_zero_page_is_a_zero_fill),
		TEST(test_write_after_source_destroyed_is_a_reuse),
		TEST(test_write_after_clone_destroyed_is_a_reuse),
		TEST(test_write_returns_after_its_fault_is_counted),
		TEST(test_destroying_source_first_keeps_clone_content),
		TEST(test_destroying_clone_first_keeps_source_content),
		TEST(test_clone_of_a_clone),
		TEST(test_many_independent_regions),
		TEST(test_read_into_unshared_page_succeeds),
		TEST(test_read_into_shared_page_without_unshare),
		TEST(test_frames_are_given_back),
		TEST(test_ascending_writes_copy_ahead),
		TEST(test_long_ascending_writes_double_the_run),
		TEST(test_fault_around_stops_at_other_kind),
		TEST(test_descending_writes_copy_only_what_they_write),
		TEST(test_unshare_copies_no_more_than_asked),
		{ NULL, NULL },
	};
	add_suite("cow", tests);
}
