/* ucow_diff: where two regions differ, from their page tables. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "helpers.h"

struct ranges {
	size_t n;
	size_t off[16], len[16];
	int stop_after; /* return 7 after this many calls; 0: never */
};

static int record(size_t offset, size_t length, void *arg)
{
	struct ranges *r = arg;
	if (r->n < 16) {
		r->off[r->n] = offset;
		r->len[r->n] = length;
	}
	r->n++;
	return r->stop_after && (int)r->n >= r->stop_after ? 7 : 0;
}

static void test_fresh_clone_has_no_difference(void)
{
	ucow_region *a = make_filled(32, 32, 1);
	ucow_region *b = ucow_clone(a);
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(a, b, record, &got), 0);
	CU_ASSERT_EQUAL(got.n, 0);
	ucow_destroy(b);
	ucow_destroy(a);
}

static void test_written_pages_are_reported_as_runs(void)
{
	size_t ps = page_size();
	ucow_region *a = make_filled(32, 16, 2);
	ucow_region *b = ucow_clone(a);
	for (size_t p = 5; p >= 3; p--) /* descending: no fault-around */
		page_of(b, p)[0] ^= 1;
	page_of(b, 10)[0] ^= 1;
	page_of(b, 20)[0] = 1; /* a zero page of a written in b */
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(a, b, record, &got), 0);
	CU_ASSERT_EQUAL_FATAL(got.n, 3);
	CU_ASSERT_EQUAL(got.off[0], 3 * ps);
	CU_ASSERT_EQUAL(got.len[0], 3 * ps);
	CU_ASSERT_EQUAL(got.off[1], 10 * ps);
	CU_ASSERT_EQUAL(got.len[1], ps);
	CU_ASSERT_EQUAL(got.off[2], 20 * ps);
	CU_ASSERT_EQUAL(got.len[2], ps);
	ucow_destroy(b);
	ucow_destroy(a);
}

static void test_no_difference_after_revert(void)
{
	ucow_region *a = make_filled(16, 16, 3);
	ucow_region *s = ucow_snapshot(a);
	fill_pages(ucow_base(a), 2, 5, 99);
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(a, s, record, &got), 0);
	CU_ASSERT_EQUAL(got.n, 1);
	CU_ASSERT_EQUAL(ucow_revert(a, s), 0);
	got.n = 0;
	CU_ASSERT_EQUAL(ucow_diff(a, s, record, &got), 0);
	CU_ASSERT_EQUAL(got.n, 0);
	ucow_destroy(s);
	ucow_destroy(a);
}

/* The pages copied back in place keep their own frames: diff compares them. */
static void test_no_difference_after_revert_in_place(void)
{
	ucow_region *a = make_filled(16, 16, 3);
	ucow_region *s = ucow_snapshot(a);
	fill_pages(ucow_base(a), 2, 5, 99);
	page_of(a, 12)[0] ^= 1;
	CU_ASSERT_EQUAL(ucow_revert_in_place(a, s), 0);
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(a, s, record, &got), 0);
	CU_ASSERT_EQUAL(got.n, 0);
	CU_ASSERT_EQUAL(ucow_diff(s, a, record, &got), 0);
	CU_ASSERT_EQUAL(got.n, 0);
	ucow_destroy(s);
	ucow_destroy(a);
}

/* ...and reports the ones written again, as runs. */
static void test_pages_written_after_revert_in_place_differ(void)
{
	size_t ps = page_size();
	ucow_region *a = make_filled(16, 16, 3);
	ucow_region *s = ucow_snapshot(a);
	fill_pages(ucow_base(a), 2, 5, 99);
	CU_ASSERT_EQUAL(ucow_revert_in_place(a, s), 0);
	page_of(a, 3)[ps - 1] ^= 1;
	page_of(a, 4)[0] ^= 1;
	page_of(a, 6)[7] ^= 1;
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(a, s, record, &got), 0);
	CU_ASSERT_EQUAL_FATAL(got.n, 2);
	CU_ASSERT_EQUAL(got.off[0], 3 * ps);
	CU_ASSERT_EQUAL(got.len[0], 2 * ps);
	CU_ASSERT_EQUAL(got.off[1], 6 * ps);
	CU_ASSERT_EQUAL(got.len[1], ps);
	ucow_destroy(s);
	ucow_destroy(a);
}

static void test_callback_value_stops_the_walk(void)
{
	ucow_region *a = make_filled(16, 16, 4);
	ucow_region *b = ucow_clone(a);
	page_of(b, 1)[0] ^= 1;
	page_of(b, 5)[0] ^= 1;
	page_of(b, 9)[0] ^= 1;
	struct ranges got = {.stop_after = 2};
	CU_ASSERT_EQUAL(ucow_diff(a, b, record, &got), 7);
	CU_ASSERT_EQUAL(got.n, 2);
	ucow_destroy(b);
	ucow_destroy(a);
}

/* Different frames are reported even when the bytes are equal. */
static void test_unrelated_regions_differ_where_written(void)
{
	ucow_region *a = make_filled(8, 4, 5);
	ucow_region *b = make_filled(8, 4, 5);
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(a, b, record, &got), 0);
	CU_ASSERT_EQUAL_FATAL(got.n, 1);
	CU_ASSERT_EQUAL(got.off[0], 0);
	CU_ASSERT_EQUAL(got.len[0], 4 * page_size());
	ucow_destroy(b);
	ucow_destroy(a);
}

static void test_huge_sparse_diff_reports_only_written_pages(void)
{
	size_t ps = page_size(), size = (size_t)16 << 30;
	ucow_region *a = ucow_create(size);
	CU_ASSERT_FATAL(a != NULL);
	ucow_region *b = ucow_clone(a);
	CU_ASSERT_FATAL(b != NULL);
	((char *)ucow_base(b))[size / 2] = 1;
	((char *)ucow_base(b))[size - 1] = 1;
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(a, b, record, &got), 0);
	CU_ASSERT_EQUAL_FATAL(got.n, 2);
	CU_ASSERT_EQUAL(got.off[0], size / 2);
	CU_ASSERT_EQUAL(got.off[1], size - ps);
	ucow_destroy(b);
	ucow_destroy(a);
}

/*
 * Two snapshots taken back to back hold the same bytes while their region
 * overwrites every page: the writer keeps its frames, and each fault moves
 * both snapshots to one copy, one after the other. A diff meanwhile must
 * never see them apart.
 */
enum { KEEP_PAGES = 2048, KEEP_ROUNDS = 20 };

struct keep_writer {
	ucow_region *r;
	int value;
	int done;
};

static void *write_every_page(void *arg)
{
	struct keep_writer *w = arg;
	fill_pages(ucow_base(w->r), 0, KEEP_PAGES, w->value);
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_snapshots_never_differ_while_their_region_keeps(void)
{
	ucow_region *r = make_filled(KEEP_PAGES, KEEP_PAGES, 1);
	CU_ASSERT_FATAL(r != NULL);
	size_t reported = 0, diffs = 0;
	/* valgrind runs one thread at a time: each round takes seconds. */
	int rounds = sanitizer_is("valgrind") ? 3 : KEEP_ROUNDS;
	for (int round = 0; round < rounds; round++) {
		ucow_region *s1 = ucow_snapshot(r), *s2 = ucow_snapshot(r);
		CU_ASSERT_FATAL(s1 != NULL && s2 != NULL);
		struct keep_writer w = {r, round + 2, 0};
		pthread_t t;
		CU_ASSERT_FATAL(pthread_create(&t, NULL, write_every_page, &w) == 0);
		while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) {
			struct ranges found = {0};
			CU_ASSERT_EQUAL(ucow_diff(s1, s2, record, &found), 0);
			reported += found.n;
			diffs++;
		}
		pthread_join(t, NULL);
		CU_ASSERT(pages_match(ucow_base(s1), 0, KEEP_PAGES, round + 1));
		CU_ASSERT(stats_of(r).cow_kept > 0);
		ucow_destroy(s1);
		ucow_destroy(s2);
	}
	CU_ASSERT_EQUAL(reported, 0);
	CU_ASSERT(diffs > 0);
	ucow_destroy(r);
}

static void test_diff_bad_input(void)
{
	ucow_region *a = make_filled(4, 4, 6);
	ucow_region *b = make_filled(8, 0, 0);
	ucow_region *dead = make_filled(4, 0, 0);
	ucow_destroy(dead);
	struct ranges got = {0};
	CU_ASSERT_EQUAL(ucow_diff(NULL, a, record, &got), -EINVAL);
	CU_ASSERT_EQUAL(ucow_diff(a, NULL, record, &got), -EINVAL);
	CU_ASSERT_EQUAL(ucow_diff(a, a, NULL, &got), -EINVAL);
	CU_ASSERT_EQUAL(ucow_diff(a, b, record, &got), -EINVAL);
	CU_ASSERT_EQUAL(ucow_diff(a, dead, record, &got), -EBADF);
	CU_ASSERT_EQUAL(ucow_diff(a, a, record, &got), 0);
	CU_ASSERT_EQUAL(got.n, 0);
	ucow_destroy(b);
	ucow_destroy(a);
}

void add_diff_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_fresh_clone_has_no_difference),
		TEST(test_written_pages_are_reported_as_runs),
		TEST(test_no_difference_after_revert),
		TEST(test_no_difference_after_revert_in_place),
		TEST(test_pages_written_after_revert_in_place_differ),
		TEST(test_callback_value_stops_the_walk),
		TEST(test_unrelated_regions_differ_where_written),
		TEST(test_huge_sparse_diff_reports_only_written_pages),
		TEST(test_snapshots_never_differ_while_their_region_keeps),
		TEST(test_diff_bad_input),
		{NULL, NULL},
	};
	add_suite("diff", tests);
}
