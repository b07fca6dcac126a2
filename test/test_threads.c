/*
 * Real threads against the fault path. Each scenario is a fault storm, so it
 * runs in a child process; failures are reported by CHECK() there.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

enum { THREADS = 4 };

/* ---- N threads write one shared page of a clone at once ---------------- */

enum { SAME_PAGE_ROUNDS = 2000 };

struct same_page {
	pthread_barrier_t start, done;
	unsigned char *page; /* page 0 of the clone */
	unsigned round;
};

struct worker {
	struct same_page *sp;
	unsigned id;
};

static unsigned char same_page_byte(unsigned round, unsigned id)
{
	return (unsigned char)(1 + (round * THREADS + id) % 255);
}

static void *same_page_writer(void *arg)
{
	struct worker *w = arg;
	struct same_page *sp = w->sp;
	for (unsigned r = 0; r < SAME_PAGE_ROUNDS; r++) {
		pthread_barrier_wait(&sp->start);
		/* Thread id owns the bytes i with i % THREADS == id. */
		for (size_t i = w->id; i < page_size(); i += THREADS)
			((volatile unsigned char *)sp->page)[i] =
				same_page_byte(sp->round, w->id);
		pthread_barrier_wait(&sp->done);
	}
	return NULL;
}

/* The page holds round r's bytes (round -1: make_filled's, seed 1). */
static bool same_page_holds(const unsigned char *page, int round)
{
	if (round < 0)
		return pages_match(page, 0, 1, 1);
	for (size_t i = 0; i < page_size(); i++)
		if (page[i] != same_page_byte((unsigned)round, i % THREADS))
			return false;
	return true;
}

/*
 * THREADS threads write one shared page at once, round after round: the
 * page of a clone shared again by a revert (one copy a round), or with
 * `snaps` (1 or 2), the page of a region whose previous round's snapshots
 * were just replaced by new ones (one keep a round: the snapshots take one
 * copy while the others wait, and hold the bytes of the round before).
 */
static void same_page_scenario(void *snaps)
{
	unsigned keep = snaps ? *(const unsigned *)snaps : 0;
	ucow_region *src = make_filled(1, 1, 1);
	CHECK(src != NULL);
	ucow_region *clone = keep ? src : ucow_clone(src), *snap[2] = {0};
	CHECK(clone != NULL);
	struct same_page sp = { .page = ucow_base(clone) };
	CHECK(pthread_barrier_init(&sp.start, NULL, THREADS + 1) == 0);
	CHECK(pthread_barrier_init(&sp.done, NULL, THREADS + 1) == 0);
	pthread_t t[THREADS];
	struct worker w[THREADS];
	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ &sp, i };
		CHECK(pthread_create(&t[i], NULL, same_page_writer, &w[i]) == 0);
	}
	for (sp.round = 0; sp.round < SAME_PAGE_ROUNDS; sp.round++) {
		/* Share the page again so that this round's writes must copy it. */
		for (unsigned k = 0; k < keep; k++) {
			ucow_destroy(snap[k]);
			CHECK((snap[k] = ucow_snapshot(src)) != NULL);
		}
		if (!keep) {
			CHECK(ucow_revert(clone, src) == 0);
		}
		CHECK(stats_of(clone).shared_pages == 1);
		struct ucow_stats before = stats_of(clone);
		pthread_barrier_wait(&sp.start);
		pthread_barrier_wait(&sp.done);
		struct ucow_stats after = stats_of(clone);
		CHECK(after.cow_copies == before.cow_copies + !keep);
		CHECK(after.cow_kept == before.cow_kept + !!keep);
		CHECK(same_page_holds(sp.page, (int)sp.round));
		if (!keep)
			CHECK(same_page_holds(ucow_base(src), -1));
		for (unsigned k = 0; k < keep; k++)
			CHECK(same_page_holds(ucow_base(snap[k]), (int)sp.round - 1));
	}
	for (unsigned i = 0; i < THREADS; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
}

static void test_threads_writing_one_shared_page_make_one_copy(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(same_page_scenario, NULL), 0));
}

static void test_threads_writing_one_kept_page_make_one_keep(void)
{
	static const unsigned one = 1, two = 2;
	CU_ASSERT(CHILD_EXITED(run_in_child(same_page_scenario, (void *)&one), 0));
	CU_ASSERT(CHILD_EXITED(run_in_child(same_page_scenario, (void *)&two), 0));
}

/* ---- threads write different pages in parallel -------------------------- */

enum { PARALLEL_PAGES = 64 };

struct parallel {
	ucow_region *clone;
	unsigned id;
};

static void *parallel_writer(void *arg)
{
	struct parallel *p = arg;
	for (size_t pg = p->id; pg < PARALLEL_PAGES; pg += THREADS)
		fill_pages(ucow_base(p->clone), pg, 1, 100 + p->id);
	return NULL;
}

static void parallel_pages_scenario(void *unused)
{
	(void)unused;
	ucow_region *src = make_filled(PARALLEL_PAGES, PARALLEL_PAGES, 2);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	pthread_t t[THREADS];
	struct parallel p[THREADS];
	for (unsigned i = 0; i < THREADS; i++) {
		p[i] = (struct parallel){ clone, i };
		CHECK(pthread_create(&t[i], NULL, parallel_writer, &p[i]) == 0);
	}
	for (unsigned i = 0; i < THREADS; i++)
		CHECK(pthread_join(t[i], NULL) == 0);

	for (size_t pg = 0; pg < PARALLEL_PAGES; pg++)
		CHECK(pages_match(ucow_base(clone), pg, 1, 100 + pg % THREADS));
	CHECK(pages_match(ucow_base(src), 0, PARALLEL_PAGES, 2));
	/* Each page copied once: by its own fault or one's fault-around. */
	struct ucow_stats s = stats_of(clone);
	CHECK(s.cow_copies + s.fault_around == PARALLEL_PAGES);
	CHECK(s.private_pages == PARALLEL_PAGES);
	CHECK(s.shared_pages == 0);
}

static void test_threads_writing_different_pages(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(parallel_pages_scenario, NULL), 0));
}

/*
 * Faults on neighbouring pages may count the mapping boundary between them
 * twice, or not at all. The next copy of the region recounts it: after a
 * snapshot, ucow's estimate matches the kernel's mappings exactly.
 */
enum { NEIGHBOUR_PAGES = 512, NEIGHBOUR_ROUNDS = 20 };

/* Odd threads unshare before they write: under uffd their faults run on
 * their own threads, beside the handler thread's. */
static void *neighbour_writer(void *arg)
{
	struct parallel *p = arg;
	char *base = ucow_base(p->clone);
	for (size_t pg = p->id; pg < NEIGHBOUR_PAGES; pg += THREADS) {
		if (p->id % 2)
			CHECK(ucow_unshare(base + pg * page_size(), page_size()) == 0);
		base[pg * page_size()] = (char)p->id;
	}
	return NULL;
}

static void write_neighbours(ucow_region *r)
{
	pthread_t t[THREADS];
	struct parallel p[THREADS];
	for (unsigned i = 0; i < THREADS; i++) {
		p[i] = (struct parallel){ r, i };
		CHECK(pthread_create(&t[i], NULL, neighbour_writer, &p[i]) == 0);
	}
	for (unsigned i = 0; i < THREADS; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
}

static size_t region_mappings(const ucow_region *r)
{
	struct ucow_stats s;
	CHECK(ucow_stats(r, &s) == 0);
	return s.mappings;
}

static void neighbour_pages_scenario(void *unused)
{
	(void)unused;
	size_t len = NEIGHBOUR_PAGES * page_size();
	ucow_region *src = ucow_create(len);
	CHECK(src != NULL);
	for (size_t pg = 0; pg < NEIGHBOUR_PAGES; pg += 3) /* frames and holes */
		fill_pages(ucow_base(src), pg, 1, 5);
	for (int round = 0; round < NEIGHBOUR_ROUNDS; round++) {
		ucow_region *clone = ucow_clone(src);
		CHECK(clone != NULL);
		write_neighbours(clone);
		ucow_region *snap = ucow_snapshot(clone);
		CHECK(snap != NULL);
		CHECK(global_stats().mappings ==
		      (size_t)(mappings_in(ucow_base(src), len) +
			       mappings_in(ucow_base(clone), len) +
			       mappings_in(ucow_base(snap), len)));
		for (size_t pg = 0; pg < NEIGHBOUR_PAGES; pg++)
			CHECK(page_of(snap, pg)[0] == (char)(pg % THREADS));
		ucow_destroy(snap);
		ucow_destroy(clone);
	}
	ucow_destroy(src);
	CHECK(global_stats().mappings == 0);
}

static void test_threads_writing_neighbouring_pages_keep_the_estimate(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(neighbour_pages_scenario, NULL), 0));
}

/* The same when the writer keeps its frames: its faults change its
 * snapshot's table, and its next snapshot recounts that one too. */
static void neighbour_keeps_scenario(void *unused)
{
	(void)unused;
	size_t len = NEIGHBOUR_PAGES * page_size();
	ucow_region *src = ucow_create(len);
	CHECK(src != NULL);
	fill_pages(ucow_base(src), 0, NEIGHBOUR_PAGES, 5);
	for (int round = 0; round < NEIGHBOUR_ROUNDS; round++) {
		ucow_region *snap = ucow_snapshot(src);
		CHECK(snap != NULL);
		write_neighbours(src);
		ucow_region *next = ucow_snapshot(src);
		CHECK(next != NULL);
		CHECK(region_mappings(snap) ==
		      (size_t)mappings_in(ucow_base(snap), len));
		CHECK(global_stats().mappings ==
		      (size_t)(mappings_in(ucow_base(src), len) +
			       mappings_in(ucow_base(snap), len) +
			       mappings_in(ucow_base(next), len)));
		for (size_t pg = 0; pg < NEIGHBOUR_PAGES; pg++)
			CHECK(page_of(next, pg)[0] == (char)(pg % THREADS));
		ucow_destroy(next);
		ucow_destroy(snap);
	}
	ucow_destroy(src);
	CHECK(global_stats().mappings == 0);
}

/* ...and when the writer is destroyed instead of snapshotted again. */
static void neighbour_keeps_destroy_scenario(void *unused)
{
	(void)unused;
	size_t len = NEIGHBOUR_PAGES * page_size();
	for (int round = 0; round < NEIGHBOUR_ROUNDS; round++) {
		ucow_region *src = ucow_create(len);
		CHECK(src != NULL);
		fill_pages(ucow_base(src), 0, NEIGHBOUR_PAGES, 5);
		ucow_region *snap = ucow_snapshot(src);
		CHECK(snap != NULL);
		write_neighbours(src);
		ucow_destroy(src);
		CHECK(region_mappings(snap) ==
		      (size_t)mappings_in(ucow_base(snap), len));
		CHECK(global_stats().mappings == region_mappings(snap));
		ucow_destroy(snap);
	}
	CHECK(global_stats().mappings == 0);
}

static void test_threads_keeping_neighbouring_pages_keep_the_estimate(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(neighbour_keeps_scenario, NULL), 0));
	CU_ASSERT(CHILD_EXITED(run_in_child(neighbour_keeps_destroy_scenario, NULL), 0));
}

/* ---- copies taken while a thread writes are point-in-time images -------- */

enum { CUT_PAGES = 64, CUTS = 1000 };

struct cut_writer {
	uint64_t *words[CUT_PAGES]; /* the first word of each page of src */
	uint64_t next;              /* the next value to write */
	int stop;
};

/* Value v goes to page v % CUT_PAGES, in increasing order of v. */
static void *cut_writer(void *arg)
{
	struct cut_writer *w = arg;
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		uint64_t v = w->next;
		__atomic_store_n(w->words[v % CUT_PAGES], v, __ATOMIC_RELEASE);
		__atomic_store_n(&w->next, v + 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/*
 * An image taken between two writes holds the last CUT_PAGES values written
 * before it: each page k holds a value congruent to k, and those values are
 * CUT_PAGES consecutive integers (max - min == CUT_PAGES - 1). A page showing
 * a newer value next to an older page that missed an earlier write breaks it.
 */
static bool is_consistent_cut(const ucow_region *copy)
{
	uint64_t min = UINT64_MAX, max = 0;
	for (size_t k = 0; k < CUT_PAGES; k++) {
		uint64_t v = *(const uint64_t *)page_of(copy, k);
		if (v % CUT_PAGES != k)
			return false;
		min = v < min ? v : min;
		max = v > max ? v : max;
	}
	return max - min == CUT_PAGES - 1;
}

/* A region of CUT_PAGES pages holding 0, 1, ... and a writer started on it. */
static ucow_region *start_cut_writer(struct cut_writer *w, pthread_t *t)
{
	ucow_region *src = ucow_create(CUT_PAGES * page_size());
	CHECK(src != NULL);
	*w = (struct cut_writer){ .next = CUT_PAGES };
	for (size_t k = 0; k < CUT_PAGES; k++) {
		w->words[k] = (uint64_t *)page_of(src, k);
		*w->words[k] = k;
	}
	CHECK(pthread_create(t, NULL, cut_writer, w) == 0);
	return src;
}

/* Waits until the writer has written `n` more values. */
static void let_writer_write(const struct cut_writer *w, uint64_t n)
{
	uint64_t seen = __atomic_load_n(&w->next, __ATOMIC_ACQUIRE);
	while (__atomic_load_n(&w->next, __ATOMIC_ACQUIRE) < seen + n)
		sched_yield();
}

static void consistent_cut_scenario(void *unused)
{
	(void)unused;
	struct cut_writer w;
	pthread_t t;
	ucow_region *src = start_cut_writer(&w, &t);

	/* Under valgrind each fault is slow enough that 1000 cuts would take
	 * longer than the child's watchdog. */
	unsigned cuts = sanitizer_is("valgrind") ? CUTS / 20 : CUTS;
	for (unsigned i = 0; i < cuts; i++) {
		/* Let the writer move on, so that each copy cuts a new place. */
		let_writer_write(&w, CUT_PAGES / 2);
		ucow_region *copy = i % 2 ? ucow_clone(src) : ucow_snapshot(src);
		CHECK(copy != NULL);
		CHECK(is_consistent_cut(copy));
		ucow_destroy(copy);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(is_consistent_cut(src));
	ucow_destroy(src);
}

static void test_copies_taken_while_writing_are_consistent_cuts(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(consistent_cut_scenario, NULL), 0));
}

/*
 * While the writer overwrites every page of its latest snapshot's cut, it
 * keeps its frames and the snapshot's pages move to copies under a reader:
 * the snapshot must read the same cut before, during and after, and be
 * destroyed while the writer still faults.
 */
static void snapshot_under_keep_scenario(void *unused)
{
	(void)unused;
	struct cut_writer w;
	pthread_t t;
	ucow_region *src = start_cut_writer(&w, &t);
	unsigned snaps = sanitizer_is("valgrind") ? CUTS / 50 : CUTS / 5;
	for (unsigned i = 0; i < snaps; i++) {
		ucow_region *snap = ucow_snapshot(src);
		CHECK(snap != NULL);
		uint64_t cut[CUT_PAGES];
		for (size_t k = 0; k < CUT_PAGES; k++)
			cut[k] = *(const uint64_t *)page_of(snap, k);
		CHECK(is_consistent_cut(snap));
		let_writer_write(&w, 2 * CUT_PAGES);
		for (size_t k = 0; k < CUT_PAGES; k++)
			CHECK(*(const uint64_t *)page_of(snap, k) == cut[k]);
		ucow_destroy(snap);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(is_consistent_cut(src));
	CHECK(stats_of(src).cow_kept >= snaps);
	ucow_destroy(src);
}

static void test_snapshot_holds_its_cut_while_the_writer_keeps_frames(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(snapshot_under_keep_scenario, NULL),
			       0));
}

/* ---- region lookup while other threads create and destroy regions ------ */

enum { CHURN_ITERATIONS = 300, FAULT_ITERATIONS = 200, FAULT_PAGES = 16 };

static int failures;

static void *churn_regions(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	for (unsigned i = 0; i < CHURN_ITERATIONS; i++) {
		size_t pages = 1 + (i + id) % 4;
		ucow_region *r = make_filled(pages, pages, id * 1000 + i);
		ucow_region *c = r ? ucow_clone(r) : NULL;
		if (!c) {
			__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
			ucow_destroy(r);
			continue;
		}
		fill_pages(ucow_base(c), 0, 1, 7);
		if (!pages_match(ucow_base(r), 0, pages, id * 1000 + i) ||
		    !pages_match(ucow_base(c), 0, 1, 7))
			__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
		/* Alternate the order, so both ends of a family go first. */
		ucow_destroy(i % 2 ? r : c);
		ucow_destroy(i % 2 ? c : r);
	}
	return NULL;
}

static void *fault_own_region(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	ucow_region *src = make_filled(FAULT_PAGES, FAULT_PAGES, id);
	ucow_region *clone = src ? ucow_clone(src) : NULL;
	if (!clone) {
		__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	for (unsigned i = 0; i < FAULT_ITERATIONS; i++) {
		if (ucow_revert(clone, src) != 0)
			__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
		fill_pages(ucow_base(clone), 0, FAULT_PAGES, id + i);
		if (!pages_match(ucow_base(clone), 0, FAULT_PAGES, id + i) ||
		    !pages_match(ucow_base(src), 0, FAULT_PAGES, id))
			__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
	}
	ucow_destroy(clone);
	ucow_destroy(src);
	return NULL;
}

static void lookup_scenario(void *unused)
{
	(void)unused;
	size_t regions = global_stats().regions;
	pthread_t churn[2], fault[2];
	for (uintptr_t i = 0; i < 2; i++) {
		CHECK(pthread_create(&churn[i], NULL, churn_regions, (void *)(i + 1)) == 0);
		CHECK(pthread_create(&fault[i], NULL, fault_own_region,
				     (void *)(50000 + i * 1000)) == 0);
	}
	for (unsigned i = 0; i < 2; i++) {
		CHECK(pthread_join(churn[i], NULL) == 0);
		CHECK(pthread_join(fault[i], NULL) == 0);
	}
	CHECK(failures == 0);
	CHECK(global_stats().regions == regions);
}

static void test_faults_while_other_threads_create_and_destroy(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(lookup_scenario, NULL), 0));
}

void add_threads_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_threads_writing_one_shared_page_make_one_copy),
		TEST(test_threads_writing_one_kept_page_make_one_keep),
		TEST(test_threads_writing_different_pages),
		TEST(test_threads_writing_neighbouring_pages_keep_the_estimate),
		TEST(test_threads_keeping_neighbouring_pages_keep_the_estimate),
		TEST(test_copies_taken_while_writing_are_consistent_cuts),
		TEST(test_snapshot_holds_its_cut_while_the_writer_keeps_frames),
		TEST(test_faults_while_other_threads_create_and_destroy),
		{ NULL, NULL },
	};
	add_suite("threads", tests);
}
