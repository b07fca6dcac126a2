/*
 * ucow bench, figures 2 and 3: cost against size.
 *
 * 2. Snapshot of a populated region (the first one, one after 1% of the
 *    pages changed, and the 10th of a row with a new 1% changed before each,
 *    each replacing the previous one) against fork() of a process with the
 *    same heap, timed in the parent until fork() returns (the child exits at
 *    once; waitpid is not timed).
 * 3. Revert after 1% of the pages changed against a fork server's reset: the
 *    parent forks a child that writes 1% of the pages and exits, timed from
 *    fork() to the end of waitpid(). The same, with ucow's 1% writes counted
 *    in, is the full cycle of a fuzzing loop. ucow_revert() (share the
 *    snapshot's frames again; a new random 1% each round) and
 *    ucow_revert_in_place() (copy its bytes back into the pages written; the
 *    same 1% each round, as a loop that dirties the same pages, since its
 *    cost grows with every page the region has written) have their rows.
 *
 * Each round of figure 2 uses a new region, so that every "first snapshot"
 * is the first of its region. Figure 3 keeps a region per kind of revert
 * (the original, then a clone of its snapshot), used one kind after the
 * other: a revert leaves a region as the snapshot left it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "bench.h"
#include "cli.h"

/* The measures' names: the plot finds its lines by them (bench_plot.c). */
const char *const bench_m_snap_first = "snapshot, first";
const char *const bench_m_snap_after = "snapshot after 1% changed";
const char *const bench_m_snap_chain = "snapshot after 1% changed, 10th";
static const char *const m_snap_write = "write 1% after a snapshot";
static const char *const m_snap_two = "10th snapshot, 2 alive, 0.1%";
const char *const bench_m_revert = "revert after 1% changed";
const char *const bench_m_cycle = "write 1% + revert";
const char *const bench_m_revert_in_place = "revert in place, same 1% changed";
const char *const bench_m_cycle_in_place = "write same 1% + revert in place";

struct size_run {
	struct bench *b;
	size_t size, pages, page, count;  /* count: 1% of the pages */
	bool heap_ready;                  /* the fork() helper holds the heap */
};

/* The fork() side's heap, made by the first figure of the size. */
static int heap(struct size_run *z)
{
	if (z->heap_ready)
		return 0;
	bench_progress(z->b, "populating the fork() heap");
	if (kern_alloc(z->b, z->size))
		return 1;
	z->heap_ready = true;
	return 0;
}

static uint64_t round_seed(const struct size_run *z, unsigned r)
{
	return z->b->seed * 1000003u + r + 1;
}

static ucow_region *populated_region(struct size_run *z)
{
	ucow_region *r = ucow_create(z->size);
	if (!r) {
		bench_lib_error("ucow_create", errno);
		return NULL;
	}
	if (bench_populate(r, z->page)) {
		ucow_destroy(r);
		return NULL;
	}
	return r;
}

static int timed_snapshot(ucow_region *r, ucow_region **snap, double *secs)
{
	double t0 = cli_now();
	*snap = ucow_snapshot(r);
	*secs = cli_now() - t0;
	return *snap ? 0 : bench_lib_error("ucow_snapshot", errno);
}

/* Writes `count` random pages of r; c gets the faults they took. */
static int write_pages(struct size_run *z, ucow_region *r, size_t count, uint64_t seed,
		       double *secs, struct bench_counters *c)
{
	struct bench_counters before;
	size_t *pages = bench_sample(z->pages, count, seed);
	if (!pages)
		return bench_lib_error("malloc", ENOMEM);
	int rc = bench_counters(r, &before);
	double t0 = cli_now();
	bench_touch(ucow_base(r), z->page, pages, count);
	*secs = cli_now() - t0;
	free(pages);
	if (!rc)
		rc = bench_counters(r, c);
	c->copies -= before.copies;
	c->kept -= before.kept;
	c->reuses -= before.reuses;
	c->zero_fills -= before.zero_fills;
	c->coalesced -= before.coalesced;
	c->fault_around -= before.fault_around;
	return rc;
}

/* Writes 1% of r's pages at random. */
static int write_sample(struct size_run *z, ucow_region *r, uint64_t seed, double *secs,
			struct bench_counters *c)
{
	return write_pages(z, r, z->count, seed, secs, c);
}

/* ---- figure 2 ---- */

/* Snapshots in a row of the chain row, each after 1% changed. */
#define SNAP_CHAIN 10

/*
 * The times of one round of figure 2, and the writes' counters. `write` is
 * per page: the 1% written after the first snapshot (the region keeps its
 * frames), and the same number of pages written to a clone (copied).
 */
struct snap_times {
	double first, after, chain, write, clone_write, two;
	struct bench_counters after_c, chain_c, clone_c, two_c;
};

/* Writes 1% of a new clone of r: the copy path, beside the keep path. */
static int clone_write(struct size_run *z, ucow_region *r, unsigned round,
		       struct snap_times *t)
{
	ucow_region *c = ucow_clone(r);
	if (!c)
		return bench_lib_error("ucow_clone", errno);
	double w;
	int rc = write_sample(z, c, round_seed(z, round) + 1, &w, &t->clone_c);
	t->clone_write = w / (double)z->count;
	ucow_destroy(c);
	return rc;
}

/*
 * A program that takes a snapshot every period and keeps the latest one
 * (`two`: the two latest, one being saved while the next is taken): snapshots
 * [from, SNAP_CHAIN) of a row, each after `count` random pages changed, each
 * destroying the one before (`two`: the one before the previous). The last
 * one is timed.
 */
static int snap_row(struct size_run *z, ucow_region *r, ucow_region **snap,
		    unsigned from, size_t count, bool two, uint64_t seed0,
		    double *last, struct bench_counters *c)
{
	ucow_region *older = NULL;
	double w;
	int rc = 0;
	for (unsigned k = from; k < SNAP_CHAIN && !rc; k++) {
		ucow_region *next = NULL;
		rc = write_pages(z, r, count, seed0 + k, &w, c) ||
		     timed_snapshot(r, &next, last);
		if (rc)
			break;
		ucow_destroy(two ? older : *snap);
		older = two ? *snap : NULL;
		*snap = next;
	}
	ucow_destroy(older);
	return rc;
}

static int ucow_snap_round(struct size_run *z, unsigned round, struct snap_times *t)
{
	ucow_region *snap1 = NULL, *snap2 = NULL, *r = populated_region(z);
	double w = 0; /* read below even when a step before the writes failed */
	int rc = !r || timed_snapshot(r, &snap1, &t->first) ||
		 write_sample(z, r, round_seed(z, round), &w, &t->after_c) ||
		 timed_snapshot(r, &snap2, &t->after);
	t->write = w / (double)z->count;
	ucow_destroy(snap1);
	if (!rc)
		rc = clone_write(z, r, round, t);
	/* The 10th of a row after 1% each, then after 0.1% with two alive. */
	uint64_t seed = round_seed(z, round) * SNAP_CHAIN;
	if (!rc)
		rc = snap_row(z, r, &snap2, 2, z->count, false, seed, &t->chain,
			      &t->chain_c);
	if (!rc)
		rc = snap_row(z, r, &snap2, 0, z->count / 10 ? z->count / 10 : 1,
			      true, seed + SNAP_CHAIN, &t->two, &t->two_c);
	ucow_destroy(snap2);
	ucow_destroy(r);
	return rc;
}

static int figure2(struct size_run *z)
{
	struct bench *b = z->b;
	char sz[32];
	bench_step(b, "snapshot %s", bench_fmt_size(sz, z->size));
	if (heap(z))
		return 1;
	struct bench_row *first = bench_row_new(b, 2, bench_m_snap_first, z->size, UNIT_SECONDS);
	struct bench_row *after = bench_row_new(b, 2, bench_m_snap_after, z->size, UNIT_SECONDS);
	struct bench_row *chain = bench_row_new(b, 2, bench_m_snap_chain, z->size, UNIT_SECONDS);
	struct bench_row *write = bench_row_new(b, 2, m_snap_write, z->size, UNIT_PER_PAGE);
	struct bench_row *two = bench_row_new(b, 2, m_snap_two, z->size, UNIT_SECONDS);
	if (!first || !after || !chain || !write || !two)
		return bench_lib_error("malloc", ENOMEM);
	bench_row_alt(first, "fork(), same heap");
	bench_row_alt(after, "fork() after 1% changed");
	bench_row_alt(chain, "fork() after 1% changed");
	bench_row_alt(write, "the same writes to a clone");
	bench_row_alt(two, "fork(), same heap");
	after->has_counters = chain->has_counters = write->has_counters = true;
	two->has_counters = true;
	struct snap_times t;
	double k1, k2;
	for (unsigned r = 0; r < b->rounds; r++) {
		bench_progress(b, "round %u/%u", r + 1, b->rounds);
		if (ucow_snap_round(z, r, &t) || kern_fork(b, &k1) ||
		    kern_write(b, z->count, round_seed(z, r)) || kern_fork(b, &k2))
			return 1;
		bench_add(&first->ucow, t.first);
		bench_add(&first->alt[0], k1);
		bench_add(&after->ucow, t.after);
		bench_add(&after->alt[0], k2);
		bench_add(&chain->ucow, t.chain);
		bench_add(&chain->alt[0], k2);
		bench_add(&write->ucow, t.write);
		bench_add(&write->alt[0], t.clone_write);
		bench_add(&two->ucow, t.two);
		bench_add(&two->alt[0], k1);
		two->counters = t.two_c;
		after->counters = t.after_c;
		chain->counters = t.chain_c;
		write->counters = t.after_c;
	}
	return 0;
}

/* ---- figure 3 ---- */

/* One kind of revert: its region, its rows and the call it times. */
struct revert_kind {
	ucow_region *r;
	struct bench_row *rev, *cyc;
	int (*revert)(ucow_region *, const ucow_region *);
	const char *name;
	bool same_pages; /* the same 1% every round */
};

/* Writes 1% of the region's pages, then reverts it to snap, timed. */
static int revert_round(struct size_run *z, struct revert_kind *k, const ucow_region *snap,
			unsigned i)
{
	double w, v;
	if (write_sample(z, k->r, round_seed(z, k->same_pages ? 0 : i), &w, &k->rev->counters))
		return 1;
	double t0 = cli_now();
	int rc = k->revert(k->r, snap);
	v = cli_now() - t0;
	if (rc < 0)
		return bench_lib_error(k->name, -rc);
	bench_add(&k->rev->ucow, v);
	bench_add(&k->cyc->ucow, w + v);
	k->cyc->counters = k->rev->counters;
	return 0;
}

/*
 * All rounds of one kind, each beside a fork server's reset. The kinds run
 * one after the other, each with its region alone: the in-place region keeps
 * its 1% of separately mapped pages, and two such regions at once would
 * share the mapping budget (at 4 GiB they pass it and faults coalesce).
 */
static int figure3_rounds(struct size_run *z, struct revert_kind *k,
			  const ucow_region *snap)
{
	struct bench *b = z->b;
	for (unsigned i = 0; i < b->rounds; i++) {
		bench_progress(b, "%s, round %u/%u", k->name, i + 1, b->rounds);
		double f;
		if (revert_round(z, k, snap, i) ||
		    kern_fork_server(b, z->count, round_seed(z, i), &f))
			return 1;
		bench_add(&k->rev->alt[0], f);
		bench_add(&k->cyc->alt[0], f);
	}
	return 0;
}

static int revert_rows(struct size_run *z, struct revert_kind *k, const char *rev,
		       const char *cyc)
{
	k->rev = bench_row_new(z->b, 3, rev, z->size, UNIT_SECONDS);
	k->cyc = bench_row_new(z->b, 3, cyc, z->size, UNIT_SECONDS);
	if (!k->rev || !k->cyc)
		return bench_lib_error("malloc", ENOMEM);
	bench_row_alt(k->rev, "fork()+exit+wait, child writes 1%");
	bench_row_alt(k->cyc, "fork()+exit+wait, child writes 1%");
	k->rev->has_counters = k->cyc->has_counters = true;
	return 0;
}

static int figure3(struct size_run *z)
{
	struct bench *b = z->b;
	char sz[32];
	bench_step(b, "revert %s", bench_fmt_size(sz, z->size));
	struct revert_kind kinds[] = {
		{ .revert = ucow_revert, .name = "ucow_revert" },
		{ .revert = ucow_revert_in_place, .name = "ucow_revert_in_place", .same_pages = true },
	};
	if (heap(z) || revert_rows(z, &kinds[0], bench_m_revert, bench_m_cycle) ||
	    revert_rows(z, &kinds[1], bench_m_revert_in_place, bench_m_cycle_in_place))
		return 1;

	bench_progress(b, "populating the region");
	ucow_region *snap = NULL, *r = populated_region(z);
	if (!r)
		return 1;
	int rc = 0;
	if (!(snap = ucow_snapshot(r)))
		rc = bench_lib_error("ucow_snapshot", errno);
	kinds[0].r = r;
	if (!rc)
		rc = figure3_rounds(z, &kinds[0], snap);
	if (!rc && !(kinds[1].r = ucow_clone(snap)))
		rc = bench_lib_error("ucow_clone", errno);
	if (!rc)
		rc = figure3_rounds(z, &kinds[1], snap);
	ucow_destroy(kinds[1].r);
	ucow_destroy(snap);
	ucow_destroy(r);
	return rc;
}

/* ---- per size ---- */

/*
 * At once: the ucow region, its snapshots' 1% copies, the fork() heap and a
 * child's 1% copies, and the 1% samples (a page index per page).
 */
static int size_fits(struct size_run *z)
{
	char sz[32], what[64];
	snprintf(what, sizeof(what), "figures 2 and 3 at %s", bench_fmt_size(sz, z->size));
	double need = 2.1 * (double)z->size + 2.0 * (double)z->pages * sizeof(size_t);
	return bench_fits(z->b, need, what);
}

static int one_size(struct bench *b, size_t size)
{
	struct size_run z = { .b = b, .size = size, .page = b->page };
	z.pages = size / z.page;
	z.count = bench_one_percent(z.pages);
	if (!size_fits(&z)) {
		b->step += bench_wants(b, 2) + bench_wants(b, 3);
		return 0;
	}
	int rc = 0;
	if (bench_wants(b, 2))
		rc = figure2(&z);
	if (!rc && bench_wants(b, 3))
		rc = figure3(&z);
	if (z.heap_ready && kern_free(b))
		rc = 1;
	return rc;
}

int bench_snapshot(struct bench *b)
{
	for (unsigned i = 0; i < b->nsizes; i++)
		if (one_size(b, b->sizes[i]))
			return 1;
	return 0;
}
