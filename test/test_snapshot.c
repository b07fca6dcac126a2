/* Read-only snapshots, and reverting a region to another copy. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

enum { PAGES = 8, WRITTEN = 6 };
/*
 * A region under 2 MiB whose pages lie in one mapping: that mapping and the
 * zeros past its end to the end of its 2 MiB chunk (its last page maps a
 * frame, and the zeros are a mapping of their own).
 */
enum { PAGES_AND_TAIL = 2 };

static void write_to_snapshot(void *unused)
{
	(void)unused;
	ucow_region *src = make_filled(PAGES, WRITTEN, 1);
	CHECK(src != NULL);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	*(volatile char *)page_of(snap, 1) = 'x';
	/* Reached only if the write was let through. */
	CHECK(!"the write to a snapshot did not fault");
}

static void write_to_snapshot_zero_page(void *unused)
{
	(void)unused;
	ucow_region *src = make_filled(PAGES, WRITTEN, 1);
	CHECK(src != NULL);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	*(volatile char *)page_of(snap, PAGES - 1) = 'x';
	CHECK(!"the write to a snapshot's zero page did not fault");
}

static void test_write_to_snapshot_is_sigsegv(void)
{
	CU_ASSERT(CHILD_SIGNALED(run_in_child(write_to_snapshot, NULL), SIGSEGV));
}

static void test_write_to_snapshot_zero_page_is_sigsegv(void)
{
	CU_ASSERT(CHILD_SIGNALED(run_in_child(write_to_snapshot_zero_page, NULL),
				 SIGSEGV));
}

static void test_snapshot_keeps_content_of_its_moment(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	CU_ASSERT_EQUAL(ucow_is_snapshot(snap), 1);
	CU_ASSERT_EQUAL(ucow_is_snapshot(src), 0);

	fill_pages(ucow_base(src), 0, PAGES, 3);

	CU_ASSERT(pages_match(ucow_base(src), 0, PAGES, 3));
	CU_ASSERT(pages_match(ucow_base(snap), 0, WRITTEN, 2));
	CU_ASSERT(is_zero(page_of(snap, WRITTEN), (PAGES - WRITTEN) * page_size()));
	struct ucow_stats s = stats_of(src);
	CU_ASSERT_EQUAL(s.cow_kept, WRITTEN);
	CU_ASSERT_EQUAL(s.cow_copies, 0);
	CU_ASSERT_EQUAL(s.zero_fills, PAGES);
	CU_ASSERT_EQUAL(stats_of(snap).shared_pages, 0);
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_snapshot_of_a_snapshot(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 4);
	ucow_region *s1 = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s1);
	fill_pages(ucow_base(src), 0, 1, 5);
	ucow_region *s2 = ucow_snapshot(s1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s2);

	CU_ASSERT_EQUAL(ucow_is_snapshot(s2), 1);
	CU_ASSERT(pages_match(ucow_base(s2), 0, WRITTEN, 4));
	ucow_destroy(s1);
	CU_ASSERT(pages_match(ucow_base(s2), 0, WRITTEN, 4));
	CU_ASSERT(pages_match(ucow_base(src), 0, 1, 5));
	CU_ASSERT(pages_match(ucow_base(src), 1, WRITTEN - 1, 4));
	ucow_destroy(s2);
	ucow_destroy(src);
}

static void test_clone_of_a_snapshot_is_writable_and_independent(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 6);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	ucow_region *clone = ucow_clone(snap);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	CU_ASSERT_EQUAL(ucow_is_snapshot(clone), 0);

	fill_pages(ucow_base(clone), 0, PAGES, 7);

	CU_ASSERT(pages_match(ucow_base(clone), 0, PAGES, 7));
	CU_ASSERT(pages_match(ucow_base(snap), 0, WRITTEN, 6));
	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 6));
	CU_ASSERT_EQUAL(stats_of(clone).cow_copies, WRITTEN);
	ucow_destroy(snap);
	ucow_destroy(src);
	CU_ASSERT(pages_match(ucow_base(clone), 0, PAGES, 7));
	ucow_destroy(clone);
}

static void test_revert_to_older_snapshot_restores_every_byte(void)
{
	size_t frames = global_stats().frames;
	ucow_region *src = make_filled(PAGES, WRITTEN, 8);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	fill_pages(ucow_base(src), 0, PAGES, 9);

	CU_ASSERT_EQUAL(ucow_revert(src, snap), 0);

	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 8));
	CU_ASSERT(is_zero(page_of(src, WRITTEN), (PAGES - WRITTEN) * page_size()));
	CU_ASSERT_EQUAL(ucow_is_snapshot(src), 0);
	/* src's own copies went back to the system. */
	CU_ASSERT_EQUAL(global_stats().frames, frames + WRITTEN);
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_revert_shares_the_source_pages(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 10);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	fill_pages(ucow_base(src), 0, PAGES, 11);
	CU_ASSERT_EQUAL_FATAL(ucow_revert(src, snap), 0);

	struct ucow_stats s = stats_of(src);
	CU_ASSERT_EQUAL(s.pages, PAGES);
	CU_ASSERT_EQUAL(s.shared_pages, WRITTEN);
	CU_ASSERT_EQUAL(s.private_pages, 0);
	CU_ASSERT_EQUAL(s.zero_pages, PAGES - WRITTEN);
	CU_ASSERT_EQUAL(s.writable_pages, 0);
	CU_ASSERT_EQUAL(stats_of(snap).shared_pages, WRITTEN);

	/* Writing after the revert copies again, and the snapshot keeps its. */
	uint64_t copies = s.cow_copies;
	fill_pages(ucow_base(src), 0, 1, 12);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, copies + 1);
	CU_ASSERT(pages_match(ucow_base(snap), 0, WRITTEN, 10));
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_revert_to_a_clone(void)
{
	ucow_region *a = make_filled(PAGES, WRITTEN, 13);
	ucow_region *c = ucow_clone(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	fill_pages(ucow_base(c), 0, PAGES, 14);

	CU_ASSERT_EQUAL(ucow_revert(a, c), 0);

	CU_ASSERT(pages_match(ucow_base(a), 0, PAGES, 14));
	CU_ASSERT_EQUAL(stats_of(a).shared_pages, PAGES);
	fill_pages(ucow_base(a), 0, 1, 15);
	CU_ASSERT(pages_match(ucow_base(c), 0, PAGES, 14));
	fill_pages(ucow_base(c), 1, 1, 16);
	CU_ASSERT(pages_match(ucow_base(a), 1, PAGES - 1, 14));
	ucow_destroy(c);
	ucow_destroy(a);
}

static void test_revert_with_nothing_different_changes_nothing(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 17);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	struct ucow_stats before = stats_of(src);
	size_t frames = global_stats().frames;

	CU_ASSERT_EQUAL(ucow_revert(src, snap), 0);

	struct ucow_stats after = stats_of(src);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT_EQUAL(global_stats().frames, frames);
	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 17));
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_revert_in_place_restores_every_byte(void)
{
	size_t frames = global_stats().frames;
	ucow_region *src = make_filled(PAGES, WRITTEN, 30);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	fill_pages(ucow_base(src), 0, PAGES, 31);

	CU_ASSERT_EQUAL(ucow_revert_in_place(src, snap), 0);

	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 30));
	CU_ASSERT(is_zero(page_of(src, WRITTEN), (PAGES - WRITTEN) * page_size()));
	/* src kept the frames it owned: memory is what it was. */
	CU_ASSERT_EQUAL(global_stats().frames, frames + WRITTEN + PAGES);
	struct ucow_stats s = stats_of(src);
	CU_ASSERT_EQUAL(s.private_pages, PAGES);
	CU_ASSERT_EQUAL(s.writable_pages, PAGES);
	CU_ASSERT(pages_match(ucow_base(snap), 0, WRITTEN, 30));
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_revert_in_place_then_writing_costs_no_fault(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 32);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	fill_pages(ucow_base(src), 0, PAGES, 33);
	CU_ASSERT_EQUAL_FATAL(ucow_revert_in_place(src, snap), 0);
	struct ucow_stats before = stats_of(src);
	uint64_t faults = global_stats().faults;

	fill_pages(ucow_base(src), 0, PAGES, 34);

	struct ucow_stats after = stats_of(src);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT_EQUAL(global_stats().faults, faults);
	CU_ASSERT(pages_match(ucow_base(src), 0, PAGES, 34));
	CU_ASSERT(pages_match(ucow_base(snap), 0, WRITTEN, 32));
	ucow_destroy(snap);
	ucow_destroy(src);
}

/* Page 0 is src's own, page 1 is shared with a later snapshot. */
static void test_revert_in_place_remaps_the_pages_it_shares(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 35);
	ucow_region *old = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(old);
	fill_pages(ucow_base(src), 0, 2, 36);
	ucow_region *later = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(later);
	fill_pages(ucow_base(src), 0, 1, 37);

	CU_ASSERT_EQUAL(ucow_revert_in_place(src, old), 0);

	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 35));
	struct ucow_stats s = stats_of(src);
	CU_ASSERT_EQUAL(s.private_pages, 1);
	CU_ASSERT_EQUAL(s.writable_pages, 1);
	CU_ASSERT_EQUAL(s.shared_pages, WRITTEN - 1);
	CU_ASSERT(pages_match(ucow_base(later), 0, 2, 36));
	CU_ASSERT(pages_match(ucow_base(later), 2, WRITTEN - 2, 35));
	ucow_destroy(later);
	ucow_destroy(old);
	ucow_destroy(src);
}

/* A page src owns alone but read-only (its clone is gone) takes the bytes
 * through the frame store and stays read-only: its next write reuses it. */
static void test_revert_in_place_into_an_owned_read_only_page(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 38);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	fill_pages(ucow_base(src), 0, 1, 39);
	ucow_destroy(ucow_clone(src));
	CU_ASSERT_EQUAL(stats_of(src).private_pages, 1);
	CU_ASSERT_EQUAL(stats_of(src).writable_pages, 0);

	CU_ASSERT_EQUAL(ucow_revert_in_place(src, snap), 0);

	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 38));
	struct ucow_stats s = stats_of(src);
	CU_ASSERT_EQUAL(s.private_pages, 1);
	CU_ASSERT_EQUAL(s.writable_pages, 0);
	fill_pages(ucow_base(src), 0, 1, 40);
	CU_ASSERT_EQUAL(stats_of(src).cow_reuses, s.cow_reuses + 1);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, s.cow_copies);
	CU_ASSERT(pages_match(ucow_base(snap), 0, WRITTEN, 38));
	ucow_destroy(snap);
	ucow_destroy(src);
}

static void test_destroy_snapshot_before_source(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 18);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	ucow_destroy(snap);
	CU_ASSERT(pages_match(ucow_base(src), 0, WRITTEN, 18));
	CU_ASSERT_EQUAL(stats_of(src).shared_pages, 0);
	fill_pages(ucow_base(src), 0, 1, 19);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 0);
	CU_ASSERT(pages_match(ucow_base(src), 0, 1, 19));
	ucow_destroy(src);
}

static void test_destroy_source_before_snapshot(void)
{
	ucow_region *src = make_filled(PAGES, WRITTEN, 20);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	ucow_destroy(src);
	CU_ASSERT(pages_match(ucow_base(snap), 0, WRITTEN, 20));
	CU_ASSERT_EQUAL(stats_of(snap).shared_pages, 0);
	CU_ASSERT_EQUAL(stats_of(snap).private_pages, WRITTEN);
	ucow_destroy(snap);
}

/* Page p of r holds fill_pages(seed), or zeros (seed 0), mapped as such. */
static bool page_is(const ucow_region *r, size_t p, unsigned seed)
{
	long inode = mapping_inode(page_of(r, p));
	if (!seed)
		return inode == 0 && is_zero(page_of(r, p), page_size());
	return inode > 0 && pages_match(ucow_base(r), p, 1, seed);
}

/*
 * A copy maps the span of the pages that share one home with one call and
 * maps over it the pages that differ and the zero pages. Every page must
 * read right; a zero page must stay anonymous memory (a memfd hole would
 * cost a page when read and show a frame written later); the kernel's
 * mappings must match ucow's estimate.
 */
static void test_copy_after_scattered_writes_maps_every_page_right(void)
{
	enum { N = 2048 };
	static const size_t holes[] = {0, 100, 101, 700};
	/* 511 and 512: a run across leaves (512 copies a few pages ahead). */
	static const size_t writes[] = {3, 101, 257, 511, 512, 1700, 1800, 2046};
	size_t ps = page_size();
	unsigned want[N];
	size_t est0 = global_stats().mappings;
	ucow_region *src = ucow_create(N * ps);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	for (size_t p = 0; p < N; p++)
		want[p] = p / 512 == 2 ? 0 : 1; /* the third leaf never written */
	for (size_t k = 0; k < sizeof holes / sizeof *holes; k++)
		want[holes[k]] = 0;
	for (size_t p = N; p-- > 0;) /* downwards: no fault-around */
		if (want[p])
			fill_pages(ucow_base(src), p, 1, want[p]);
	/* A clone: with a snapshot the source would keep its frames. */
	ucow_region *old = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(old);
	for (size_t k = 0; k < sizeof writes / sizeof *writes; k++) {
		fill_pages(ucow_base(src), writes[k], 1, 2);
		want[writes[k]] = 2;
	}
	ucow_region *snap = ucow_snapshot(src), *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	size_t wrong = 0;
	for (size_t p = 0; p < N; p++)
		wrong += !page_is(snap, p, want[p]) + !page_is(clone, p, want[p]);
	CU_ASSERT_EQUAL(wrong, 0);
	const ucow_region *all[] = {src, old, snap, clone};
	for (size_t k = 0; k < 4; k++)
		CU_ASSERT_EQUAL(stats_of(all[k]).mappings,
				mappings_in(ucow_base(all[k]), N * ps));
	CU_ASSERT(stats_of(snap).mappings > 20);

	/* The source's scattered writable pages were all write-protected. */
	for (size_t k = 0; k < sizeof writes / sizeof *writes; k++)
		fill_pages(ucow_base(src), writes[k], 1, 4);
	for (size_t k = 0; k < sizeof writes / sizeof *writes; k++)
		wrong += !page_is(snap, writes[k], 2) + !page_is(clone, writes[k], 2);
	CU_ASSERT_EQUAL(wrong, 0);
	/* The clone's zero pages under its backdrop fault, and get frames. */
	uint64_t fills = stats_of(clone).zero_fills;
	fill_pages(ucow_base(clone), 100, 1, 3);
	fill_pages(ucow_base(clone), 1024, 1, 3);
	fill_pages(ucow_base(clone), 5, 1, 3);
	CU_ASSERT_EQUAL(stats_of(clone).zero_fills, fills + 2);
	CU_ASSERT(page_is(clone, 100, 3) && page_is(clone, 1024, 3));
	CU_ASSERT(page_is(src, 100, 0) && page_is(snap, 1024, 0));
	CU_ASSERT(page_is(src, 5, 1) && page_is(snap, 5, 1) && page_is(old, 5, 1));
	ucow_destroy(clone);
	ucow_destroy(snap);
	ucow_destroy(old);
	ucow_destroy(src);
	CU_ASSERT_EQUAL(global_stats().mappings, est0);
}

/*
 * A write after a snapshot keeps the source's frame: its page stays at the
 * memfd offset it was first written at, and the snapshot's page moves to a
 * copy. So the source stays one mapping, and the next snapshot maps it with
 * one call.
 */
static void test_write_after_snapshot_keeps_the_frame(void)
{
	enum { N = 256, NW = 5 };
	static const size_t writes[NW] = {255, 130, 51, 50, 1}; /* descending */
	size_t ps = page_size();
	long long off[NW];
	ucow_region *src = make_filled(N, N, 5);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	for (size_t k = 0; k < NW; k++) {
		off[k] = mapping_offset(page_of(src, writes[k]));
		fill_pages(ucow_base(src), writes[k], 1, 6);
	}
	size_t moved = 0, kept = 0;
	for (size_t k = 0; k < NW; k++) {
		kept += mapping_offset(page_of(src, writes[k])) == off[k];
		moved += mapping_offset(page_of(snap, writes[k])) != off[k];
		CU_ASSERT(pages_match(ucow_base(src), writes[k], 1, 6));
	}
	CU_ASSERT_EQUAL(kept, NW);
	CU_ASSERT_EQUAL(moved, NW);
	CU_ASSERT(pages_match(ucow_base(snap), 0, N, 5));
	struct ucow_stats s = stats_of(src);
	CU_ASSERT_EQUAL(s.cow_kept, NW);
	CU_ASSERT_EQUAL(s.cow_copies, 0);
	CU_ASSERT_EQUAL(stats_of(snap).private_pages, NW);
	CU_ASSERT_EQUAL(global_stats().frames, N + NW);

	ucow_destroy(snap);
	CU_ASSERT_EQUAL(global_stats().frames, N);
	snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	CU_ASSERT_EQUAL(mappings_in(ucow_base(snap), N * ps), PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(mappings_in(ucow_base(src), N * ps), PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(stats_of(snap).mappings, PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(stats_of(src).mappings, PAGES_AND_TAIL);
	for (size_t k = 0; k < NW; k++)
		CU_ASSERT(pages_match(ucow_base(snap), writes[k], 1, 6));
	ucow_destroy(snap);
	ucow_destroy(src);
}

/*
 * Snapshots kept alive together all take one copy: the writer keeps its
 * frame while the page is shared with its snapshots alone (up to four of
 * them), and copies when a clone shares it, or a fifth snapshot.
 */
static void test_write_shared_with_snapshots_keeps_one_copy_for_all(void)
{
	ucow_region *src = make_filled(PAGES, PAGES, 7), *s[5];
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	long long off = mapping_offset(page_of(src, 3));
	for (size_t k = 0; k < 2; k++)
		CU_ASSERT_PTR_NOT_NULL_FATAL(s[k] = ucow_snapshot(src));
	fill_pages(ucow_base(src), 3, 1, 8);
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 1);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 0);
	CU_ASSERT_EQUAL(mapping_offset(page_of(src, 3)), off);
	CU_ASSERT(mapping_offset(page_of(s[0], 3)) != off);
	CU_ASSERT_EQUAL(mapping_offset(page_of(s[0], 3)),
			mapping_offset(page_of(s[1], 3)));
	CU_ASSERT_EQUAL(global_stats().frames, PAGES + 1);
	CU_ASSERT(pages_match(ucow_base(s[0]), 0, PAGES, 7));
	CU_ASSERT(pages_match(ucow_base(s[1]), 0, PAGES, 7));

	/* ucow_unshare takes the same path, one page at a time. */
	CU_ASSERT_EQUAL(ucow_unshare(page_of(src, 5), page_size()), 0);
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 2);
	CU_ASSERT(pages_match(ucow_base(src), 5, 1, 7));

	ucow_region *clone = ucow_clone(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(clone);
	fill_pages(ucow_base(src), 1, 1, 8);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 1);
	ucow_destroy(clone);
	for (size_t k = 2; k < 4; k++)
		CU_ASSERT_PTR_NOT_NULL_FATAL(s[k] = ucow_snapshot(src));
	fill_pages(ucow_base(src), 4, 1, 8); /* four snapshots share it */
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 3);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s[4] = ucow_snapshot(src));
	fill_pages(ucow_base(src), 6, 1, 8); /* five snapshots share it */
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 2);
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 3);
	for (size_t k = 0; k < 5; k++) {
		CU_ASSERT(pages_match(ucow_base(s[k]), 6, 1, 7));
		CU_ASSERT(pages_match(ucow_base(s[k]), 4, 1, k < 4 ? 7 : 8));
		CU_ASSERT(pages_match(ucow_base(s[k]), 3, 1, k < 2 ? 7 : 8));
		ucow_destroy(s[k]);
	}
	CU_ASSERT(pages_match(ucow_base(src), 6, 1, 8));
	ucow_destroy(src);
	CU_ASSERT_EQUAL(global_stats().frames, 0);
}

/*
 * Destroying a snapshot unlinks it from its source's chain: the snapshots
 * older than it stay in reach, whether it was the newest or one in the
 * middle, and a write shared with them keeps the frame. Snapshots that
 * outlive their source change no other region's chain when destroyed, even
 * that of a region in their source's slot.
 */
static void test_destroying_a_snapshot_keeps_the_older_ones_in_reach(void)
{
	ucow_region *src = make_filled(PAGES, PAGES, 7), *s[3];
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	for (size_t k = 0; k < 3; k++)
		CU_ASSERT_PTR_NOT_NULL_FATAL(s[k] = ucow_snapshot(src));
	ucow_destroy(s[2]); /* the newest */
	fill_pages(ucow_base(src), 3, 1, 8);
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 1);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 0);
	CU_ASSERT_EQUAL(mapping_offset(page_of(s[0], 3)),
			mapping_offset(page_of(s[1], 3)));
	CU_ASSERT_EQUAL(global_stats().frames, PAGES + 1);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s[2] = ucow_snapshot(src));
	ucow_destroy(s[1]); /* the middle one */
	fill_pages(ucow_base(src), 5, 1, 8); /* not 4: no fault-around */
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 2);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 0);
	CU_ASSERT_EQUAL(mapping_offset(page_of(s[0], 5)),
			mapping_offset(page_of(s[2], 5)));
	CU_ASSERT_EQUAL(global_stats().frames, PAGES + 2);
	CU_ASSERT(pages_match(ucow_base(s[0]), 0, PAGES, 7));
	CU_ASSERT(pages_match(ucow_base(s[2]), 0, 3, 7));
	CU_ASSERT(pages_match(ucow_base(s[2]), 3, 1, 8));
	CU_ASSERT(pages_match(ucow_base(s[2]), 4, PAGES - 4, 7));

	/* The next region in src's slot (slots are handed out in turn). */
	uintptr_t slot = (uintptr_t)src;
	ucow_destroy(src);
	ucow_region *other = NULL;
	for (int n = 0; n < 100000; n++) {
		other = ucow_create(PAGES * page_size());
		CU_ASSERT_PTR_NOT_NULL_FATAL(other);
		if ((uintptr_t)other == slot)
			break;
		ucow_destroy(other);
		other = NULL;
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(other);
	fill_pages(ucow_base(other), 0, PAGES, 9);
	ucow_region *t = ucow_snapshot(other);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	ucow_destroy(s[2]);
	ucow_destroy(s[0]);
	fill_pages(ucow_base(other), 2, 1, 10);
	CU_ASSERT_EQUAL(stats_of(other).cow_kept, 1);
	CU_ASSERT(pages_match(ucow_base(t), 0, PAGES, 9));
	ucow_destroy(t);
	ucow_destroy(other);
	CU_ASSERT_EQUAL(global_stats().frames, 0);
}

/*
 * A revert to the latest snapshot heals what keeping did: the source's
 * frames take the snapshot's bytes where they are, the snapshot maps them
 * again and its copies are freed, so both are one mapping, as before the
 * writes. The source's writes copy from then on (a base keeps its layout).
 */
static void test_revert_to_snapshot_heals_kept_pages(void)
{
	enum { N = 64 };
	static const size_t writes[] = {40, 21, 3}; /* descending */
	size_t ps = page_size();
	ucow_region *src = make_filled(N, N, 9);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	long long off = mapping_offset(page_of(src, 0));
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	for (size_t k = 0; k < 3; k++)
		fill_pages(ucow_base(src), writes[k], 1, 10);
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 3);
	CU_ASSERT_EQUAL(global_stats().frames, N + 3);
	CU_ASSERT_EQUAL(ucow_revert(src, snap), 0);
	CU_ASSERT(pages_match(ucow_base(src), 0, N, 9));
	CU_ASSERT(pages_match(ucow_base(snap), 0, N, 9));
	CU_ASSERT_EQUAL(global_stats().frames, N);
	size_t moved = 0;
	for (size_t p = 0; p < N; p++)
		moved += mapping_offset(page_of(src, p)) != off + (long long)(p * ps) ||
			 mapping_offset(page_of(snap, p)) != off + (long long)(p * ps);
	CU_ASSERT_EQUAL(moved, 0);
	CU_ASSERT_EQUAL(mappings_in(ucow_base(src), N * ps), PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(mappings_in(ucow_base(snap), N * ps), PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(stats_of(src).mappings, PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(stats_of(snap).mappings, PAGES_AND_TAIL);

	fill_pages(ucow_base(src), 21, 1, 11);
	fill_pages(ucow_base(src), 0, 1, 11);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 2);
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 3);
	CU_ASSERT(pages_match(ucow_base(snap), 0, N, 9));
	ucow_destroy(snap);
	ucow_destroy(src);
}

/*
 * A page the source shares with its latest snapshot's own copy (here
 * through a revert to a clone of the snapshot) cannot be kept: the copy
 * would go where the snapshot's page is. The source copies, and the
 * snapshot's page stays where it is.
 */
static void test_write_to_the_snapshots_copy_copies(void)
{
	ucow_region *src = make_filled(PAGES, PAGES, 9);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	ucow_region *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	fill_pages(ucow_base(src), 2, 1, 10);
	ucow_region *base = ucow_clone(snap);
	CU_ASSERT_PTR_NOT_NULL_FATAL(base);
	CU_ASSERT_EQUAL(ucow_revert(src, base), 0);
	ucow_destroy(base);
	long long off = mapping_offset(page_of(snap, 2));
	CU_ASSERT_EQUAL(mapping_offset(page_of(src, 2)), off);
	fill_pages(ucow_base(src), 2, 1, 11);
	CU_ASSERT_EQUAL(stats_of(src).cow_kept, 1);
	CU_ASSERT_EQUAL(stats_of(src).cow_copies, 1);
	CU_ASSERT_EQUAL(mapping_offset(page_of(snap, 2)), off);
	CU_ASSERT(pages_match(ucow_base(snap), 0, PAGES, 9));
	CU_ASSERT(pages_match(ucow_base(src), 2, 1, 11));
	ucow_destroy(snap);
	ucow_destroy(src);
}

/*
 * A writer moving in sequence keeps runs of frames in one fault, and the
 * snapshots' copies, in the newest one's home, merge into one mapping in
 * each of them.
 */
static void test_sequential_writes_after_snapshot_keep_runs(void)
{
	enum { N = 200 };
	size_t ps = page_size();
	ucow_region *src = make_filled(N, N, 12);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	ucow_region *older = ucow_snapshot(src), *snap = ucow_snapshot(src);
	CU_ASSERT_PTR_NOT_NULL_FATAL(older);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	for (size_t p = 0; p < N; p++) /* ascending (fill_pages descends) */
		fill_pages(ucow_base(src), p, 1, 13);
	struct ucow_stats s = stats_of(src);
	CU_ASSERT_EQUAL(s.cow_kept + s.fault_around, N);
	CU_ASSERT(s.cow_kept < N / 8);
	CU_ASSERT_EQUAL(s.cow_copies, 0);
	CU_ASSERT(pages_match(ucow_base(src), 0, N, 13));
	CU_ASSERT(pages_match(ucow_base(snap), 0, N, 12));
	CU_ASSERT(pages_match(ucow_base(older), 0, N, 12));
	CU_ASSERT_EQUAL(mappings_in(ucow_base(snap), N * ps), PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(mappings_in(ucow_base(older), N * ps), PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(stats_of(snap).mappings, PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(stats_of(older).mappings, PAGES_AND_TAIL);
	CU_ASSERT_EQUAL(global_stats().frames, 2 * N);
	ucow_destroy(older);
	ucow_destroy(snap);
	ucow_destroy(src);
}

void add_snapshot_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_write_to_snapshot_is_sigsegv),
		TEST(test_write_to_snapshot_zero_page_is_sigsegv),
		TEST(test_snapshot_keeps_content_of_its_moment),
		TEST(test_write_after_snapshot_keeps_the_frame),
		TEST(test_write_shared_with_snapshots_keeps_one_copy_for_all),
		TEST(test_destroying_a_snapshot_keeps_the_older_ones_in_reach),
		TEST(test_revert_to_snapshot_heals_kept_pages),
		TEST(test_write_to_the_snapshots_copy_copies),
		TEST(test_sequential_writes_after_snapshot_keep_runs),
		TEST(test_snapshot_of_a_snapshot),
		TEST(test_clone_of_a_snapshot_is_writable_and_independent),
		TEST(test_revert_to_older_snapshot_restores_every_byte),
		TEST(test_revert_shares_the_source_pages),
		TEST(test_revert_to_a_clone),
		TEST(test_revert_with_nothing_different_changes_nothing),
		TEST(test_revert_in_place_restores_every_byte),
		TEST(test_revert_in_place_then_writing_costs_no_fault),
		TEST(test_revert_in_place_remaps_the_pages_it_shares),
		TEST(test_revert_in_place_into_an_owned_read_only_page),
		TEST(test_destroy_snapshot_before_source),
		TEST(test_destroy_source_before_snapshot),
		TEST(test_copy_after_scattered_writes_maps_every_page_right),
		{ NULL, NULL },
	};
	add_suite("snapshot", tests);
}
