/*
 * Clone and snapshot: sharing frames between regions, the mirror of fork()'s
 * copy_page_range(). The source is held (no fault runs on it) while its
 * writable pages are write-protected and its ptes copied, which makes the
 * copy a point-in-time image even while other threads write the source.
 * Both steps count their system calls: write-protecting joins neighbouring
 * runs, and the copy maps most of its pages with one call (its backdrop).
 */
#include "internal.h"

#include <errno.h>

void run_flush(struct map_run *run)
{
	if (!run->n || run->err)
		goto out;
	run->calls++;
	if (run->dry)
		goto out;
	run->err = region_map_pages(run->r, run->start, run->n, run->f0, false);
	if (!run->err)
		run->mapped += run->n;
out:
	run->n = 0;
}

bool run_continues(const struct map_run *run, size_t i, frame_t f)
{
	bool zero = f == FRAME_NONE;
	return run->n && i == run->start + run->n &&
	       zero == (run->f0 == FRAME_NONE) && (zero || f == run->f0 + run->n);
}

void run_add(struct map_run *run, size_t i, frame_t f)
{
	if (run_continues(run, i, f)) {
		run->n++;
		return;
	}
	run_flush(run);
	run->start = i;
	run->n = 1;
	run->f0 = f;
}

void run_add_zeros(struct map_run *run, size_t i, size_t n)
{
	if (!n)
		return;
	run_add(run, i, FRAME_NONE);
	run->n += n - 1;
}

/*
 * Clears PTE_WRITE on the writable runs of [lo, hi), which the kernel has
 * just write-protected, and accounts the mappings that merge again. Where
 * the one call for the whole span failed, each run is tried on its own.
 */
static int wrprotect_runs(ucow_region *r, size_t lo, size_t hi, int span_err)
{
	struct pgtable *pt = &r->pt;
	for (size_t i = lo; i < hi; i++) {
		if (!(i & (PTES_PER_LEAF - 1))) {
			size_t l = leaf_next(pt->write_leaves, pt->nleaves,
					     i >> PTE_LEAF_SHIFT);
			if ((l << PTE_LEAF_SHIFT) >= hi)
				break;
			i = l << PTE_LEAF_SHIFT;
		}
		if (!(pte_read(pt, i) & PTE_WRITE))
			continue;
		size_t j = i;
		while (j < hi && (pte_read(pt, j) & PTE_WRITE))
			j++;
		if (span_err) {
			int err = ucow_backend_ops->wrprotect(
				page_addr(r, i), (j - i) << os_page_shift);
			if (err)
				return err;
		}
		long before = vma_window(r, i, j);
		for (size_t k = i; k < j; k++)
			pte_set(pt, k, pte_read(pt, k) & ~PTE_WRITE);
		vma_account(r, vma_window(r, i, j) - before);
		i = j;
	}
	return 0;
}

static int wrprotect_span(ucow_region *r, size_t lo, size_t hi)
{
	int err = ucow_backend_ops->wrprotect(page_addr(r, lo),
					      (hi - lo) << os_page_shift);
	return wrprotect_runs(r, lo, hi, err);
}

/*
 * Mappings between two writable runs that one call may pass over: mprotect
 * passes over a mapping that has the protection asked for already in about
 * 180 ns, a fifth of a call of its own (one page, about 1 us on our VM).
 */
#define WP_JOIN_MAPPINGS 4

/*
 * Whether one call covers the read-only pages [hi, i) between two writable
 * runs too: when the backend passes over them cheaply, the gap is short
 * enough to look at, and it holds few mappings (vma_window counts the two
 * edges too).
 */
static bool wp_joins(const ucow_region *r, size_t hi, size_t i)
{
	return i - hi <= ucow_backend_ops->wp_gap &&
	       vma_window(r, hi, i) <= WP_JOIN_MAPPINGS + 1;
}

/*
 * Neighbouring writable runs with few mappings between them share one
 * system call: after scattered writes to a region whose other pages lie in
 * one mapping, the calls grow with the clusters of changed pages, not with
 * the pages.
 */
int region_wrprotect(ucow_region *r)
{
	struct pgtable *pt = &r->pt;
	size_t lo = 0, hi = 0;
	for (size_t l = leaf_next(pt->write_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->write_leaves, pt->nleaves, l + 1)) {
		size_t end = leaf_end(pt, l);
		for (size_t i = l << PTE_LEAF_SHIFT; i < end; i++) {
			if (!(pte_read(pt, i) & PTE_WRITE))
				continue;
			size_t j = i + 1;
			while (j < end && (pte_read(pt, j) & PTE_WRITE))
				j++;
			if (hi > lo && !wp_joins(r, hi, i)) {
				int err = wrprotect_span(r, lo, hi);
				if (err)
					return err;
				lo = hi;
			}
			if (hi == lo)
				lo = i;
			hi = j;
			i = j;
		}
	}
	if (hi > lo) {
		int err = wrprotect_span(r, lo, hi);
		if (err)
			return err;
	}
	leaf_clear_all(pt->write_leaves, pt->nleaves);
	STORE(&r->wp_unsure, false); /* table and kernel agree: read-only */
	return 0;
}

/*
 * Most pages of a region usually map frames at one distance from their page
 * number: the home they were first written in. A copy then maps the span of
 * those pages with one call at that distance, the *backdrop*, and maps over
 * it only the pages at another distance and the zero pages under it: after
 * d scattered writes since the last copy, d + 1 calls instead of 2d.
 */
struct backdrop {
	int64_t delta; /* frame - page number of the pages it covers */
	size_t lo, hi; /* the pages it spans, [lo, hi); lo == hi: none */
};

static int64_t frame_delta(frame_t f, size_t i)
{
	return (int64_t)f - (int64_t)i;
}

/*
 * Feeds `run` the pages of src that the copy maps on top of its backdrop
 * (every frame when there is none). With dst, also takes a reference to
 * every frame and sets dst's ptes; and a leaf of src found empty (its pages
 * went back to zeros: a revert, a destroyed source) stops counting as used
 * in both tables, so that copies of copies no longer carry it.
 */
static void share_walk(struct map_run *run, ucow_region *src,
		       const struct backdrop *bd, ucow_region *dst)
{
	struct pgtable *pt = &src->pt;
	size_t zeros_from = bd->lo; /* pages under bd before it are fed */
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1)) {
		size_t start = l << PTE_LEAF_SHIFT, end = leaf_end(pt, l);
		bool used = false;
		if (zeros_from < start && zeros_from < bd->hi)
			run_add_zeros(run, zeros_from,
				      (start < bd->hi ? start : bd->hi) - zeros_from);
		for (size_t i = start; i < end; i++) {
			frame_t f = pte_frame(pte_read(pt, i));
			bool under = i >= bd->lo && i < bd->hi;
			if (f != FRAME_NONE && dst) {
				frame_get(f);
				pte_set(&dst->pt, i, f);
			}
			used |= f != FRAME_NONE;
			if (f == FRAME_NONE ? !under
					    : under && frame_delta(f, i) == bd->delta)
				continue;
			run_add(run, i, f);
		}
		if (zeros_from < end)
			zeros_from = end;
		if (dst && !used) {
			leaf_drop(pt, l);
			leaf_drop(&dst->pt, l);
		}
	}
	run_flush(run);
}

/* The distance most frames of src share (Boyer-Moore majority vote). */
static int64_t common_delta(const struct pgtable *pt)
{
	int64_t delta = 0;
	size_t votes = 0;
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1))
		for (size_t i = l << PTE_LEAF_SHIFT; i < leaf_end(pt, l); i++) {
			frame_t f = pte_frame(pte_read(pt, i));
			if (f == FRAME_NONE)
				continue;
			if (!votes)
				delta = frame_delta(f, i);
			if (frame_delta(f, i) == delta)
				votes++;
			else
				votes--;
		}
	return delta;
}

/* A backdrop for copying src, where it saves calls; else an empty one. */
static struct backdrop plan_backdrop(ucow_region *src)
{
	const struct pgtable *pt = &src->pt;
	struct backdrop none = {0, 0, 0};
	struct map_run plain = {.dry = true}, over = {.dry = true};
	/* Few mappings (the estimate; if it is off, only the count of calls
	 * suffers): few runs to map, and no need to count them. */
	if (LOAD_RELAXED(&src->mappings) < 3)
		return none;
	share_walk(&plain, src, &none, NULL);
	if (plain.calls < 3)
		return none;
	/* The vote's delta is some frame's: at least that page sets lo. */
	struct backdrop bd = {.delta = common_delta(pt), .lo = SIZE_MAX};
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1))
		for (size_t i = l << PTE_LEAF_SHIFT; i < leaf_end(pt, l); i++) {
			frame_t f = pte_frame(pte_read(pt, i));
			if (f == FRAME_NONE || frame_delta(f, i) != bd.delta)
				continue;
			if (bd.lo == SIZE_MAX)
				bd.lo = i;
			bd.hi = i + 1;
		}
	share_walk(&over, src, &bd, NULL);
	return over.calls + 1 < plain.calls ? bd : none;
}

/* dst (new, all zero pages) maps every frame of src read-only. */
static int share_all(ucow_region *dst, ucow_region *src)
{
	struct backdrop bd = plan_backdrop(src);
	struct map_run run = {.r = dst};
	pgtable_prefault(&dst->pt, &src->pt);
	if (bd.hi > bd.lo)
		run.err = region_map_pages(dst, bd.lo, bd.hi - bd.lo,
					   (frame_t)(bd.delta + (int64_t)bd.lo),
					   false);
	share_walk(&run, src, &bd, dst);
	return run.err;
}

int rehome_prepare(const ucow_region *src, frame_t **home)
{
	*home = NULL;
	return src->readonly ? 0 : home_alloc(src->npages, home);
}

void rehome_commit(ucow_region *src, frame_t **home)
{
	if (src->readonly)
		return;
	home_retire(&src->home, src->npages);
	src->home = *home;
	*home = NULL;
}

static ucow_region *copy_region(ucow_region *src, bool readonly)
{
	int err = region_check(src);
	if (err) {
		errno = -err;
		return NULL;
	}
	/* A snapshot of a writable region takes copies when src writes (keep.c):
	 * it needs a home, and joins src's chain. */
	bool chained = readonly && !src->readonly;
	sigset_t mask;
	ucow_lock(&mask);
	ucow_region *dst = NULL;
	frame_t *home = NULL;
	if ((err = region_check(src)) != 0)
		goto out;
	if (!(dst = region_new(src->npages, readonly, &err)))
		goto out;
	if (chained && (err = home_alloc(dst->npages, &dst->home)) != 0)
		goto out;
	if ((err = rehome_prepare(src, &home)) != 0)
		goto out;
	region_hold(src);
	vma_resync(src);
	err = region_wrprotect(src);
	/* The copy maps what src maps (all read-only now): as many mappings. */
	if (!err && !vma_fits(LOAD_RELAXED(&src->mappings)))
		err = -ENOMEM;
	if (!err)
		err = share_all(dst, src);
	if (!err) {
		rehome_commit(src, &home);
		/* Before src's faults resume, so that the first keeps. */
		if (chained)
			chain_add(src, dst);
		region_publish(dst);
	}
	region_release(src);
out:
	if (err) {
		home_retire(&home, src->npages);
		region_abandon(dst);
		dst = NULL;
		errno = -err;
	}
	ucow_unlock(&mask);
	return dst;
}

ucow_region *ucow_clone(ucow_region *src)
{
	return copy_region(src, false);
}

ucow_region *ucow_snapshot(ucow_region *src)
{
	return copy_region(src, true);
}
