/*
 * Revert: a region takes another's content. By default it shares the source's
 * frames wherever they differ, as a fresh clone would (no data copied, the
 * region's own copies given back, one remap per run of pages). In place,
 * pages the region owns alone take the source's bytes where they are, with no
 * system call; only pages it shares are remapped.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static int revert_check(const ucow_region *dst, const ucow_region *src)
{
	if (!dst || !src)
		return -EINVAL;
	int err = region_check(dst);
	if (!err)
		err = region_check(src);
	if (err)
		return err;
	if (dst->readonly)
		return -EPERM;
	return dst->size == src->size ? 0 : -EINVAL;
}

/*
 * Maps a run of zero pages with the zero pages around it in dst's table: one
 * new mapping in place of them all. Where a read of untouched memory maps
 * no zero page (os_zero_page_reads), the program's reads gave those zero
 * mappings anon_vmas of their own, and mappings with different ones never
 * merge: the kernel would keep mappings the estimate does not count. A page
 * to the right that a later run of this revert gives a frame is mapped
 * again by that run.
 */
static void zero_run_flush(struct map_run *run)
{
	const struct pgtable *pt = &run->r->pt;
	size_t start = run->start, n = run->n;
	while (run->start > 0 &&
	       pte_frame(pte_read(pt, run->start - 1)) == FRAME_NONE) {
		run->start--;
		run->n++;
	}
	while (run->start + run->n < pt->npages &&
	       pte_frame(pte_read(pt, run->start + run->n)) == FRAME_NONE)
		run->n++;
	size_t mapped = run->mapped;
	run_flush(run);
	if (run->mapped != mapped)
		run->mapped = mapped + n;
	run->start = start;
}

/*
 * Points the pages [run->start, +n) of run->r (dst, or src when healing) at
 * the frames `src` maps there: take the new frames, map them, and only then
 * drop the old ones (as wp_page_copy orders it).
 */
static int revert_run(struct map_run *run, const ucow_region *src)
{
	ucow_region *dst = run->r;
	size_t start = run->start, n = run->n;
	for (size_t k = start; k < start + n; k++)
		if (pte_frame(pte_read(&src->pt, k)) != FRAME_NONE)
			frame_get(pte_frame(pte_read(&src->pt, k)));
	if (run->f0 == FRAME_NONE && !os_zero_page_reads)
		zero_run_flush(run);
	else
		run_flush(run);
	struct frame_batch batch = {0, 0};
	for (size_t k = start; k < start + n; k++) {
		frame_t g = pte_frame(pte_read(&src->pt, k));
		if (run->err) {
			if (g != FRAME_NONE)
				frame_put(g);
			continue;
		}
		frame_t f = pte_frame(pte_read(&dst->pt, k));
		pte_set(&dst->pt, k, g);
		if (f != FRAME_NONE)
			frame_put_batched(f, &batch);
	}
	frame_batch_flush(&batch);
	return run->err;
}

/* Extends the pending run with page i (frame g), flushing it if i does not
 * continue it. */
static int revert_add(struct map_run *run, const ucow_region *src, size_t i,
		      frame_t g)
{
	if (run->n && !run_continues(run, i, g) && revert_run(run, src))
		return run->err;
	if (!run->n) {
		run->start = i;
		run->f0 = g;
	}
	run->n++;
	return 0;
}

/*
 * In place: page i of dst holds a frame no other region maps, so it can take
 * src's bytes without a remap. A writable page gets them with a plain memcpy
 * (no system call, and it stays writable); a read-only one through the frame
 * store, and it stays read-only (its next write is a reuse fault). So does
 * every page while a make_writable has failed (wp_unsure): the kernel may
 * still protect a page the table says is writable, and a write to it would
 * fault on a region this revert holds, for ever. Either
 * way its frame now holds bytes of another: PTE_RESTORED tells diff.
 */
static int revert_page_in_place(ucow_region *dst, const ucow_region *src,
				size_t i, pte_t d)
{
	int err = 0;
	if ((d & PTE_WRITE) && !LOAD(&dst->wp_unsure))
		memcpy(page_addr(dst, i), page_addr(src, i), os_page_size);
	else
		err = frame_fill(pte_frame(d), page_addr(src, i), os_page_size);
	if (!err)
		pte_set(&dst->pt, i, d | PTE_RESTORED);
	return err;
}

/*
 * Healing: where dst kept its frame f while src, its snapshot, took the copy
 * g into its home (keep.c), and each is the only user of its frame, the
 * revert gives f src's bytes and src maps f again, and g is freed: both
 * regions get back the layout they had before the keep, instead of dst
 * mapping g among its own frames. Only a plain revert: in place, dst keeps
 * its pages writable.
 */
static bool heals(const ucow_region *dst, const ucow_region *src, size_t i,
		  frame_t f, frame_t g)
{
	return src->readonly && src->home && g == home_frame(src, i) &&
	       frame_count(g) == 1 && f != FRAME_NONE && frame_count(f) == 1 &&
	       f != home_frame(dst, i); /* its home frame stays free for dst */
}

/* Page i of dst (pte d) takes src's bytes, read-only, and joins the run of
 * src's pages to point back at dst's frames (a revert the other way round,
 * which frees src's copies). */
static int heal_add(struct map_run *run, ucow_region *dst, size_t i, pte_t d)
{
	ucow_region *src = run->r;
	int err = 0;
	if (d & PTE_WRITE) {
		err = ucow_backend_ops->wrprotect(page_addr(dst, i), os_page_size);
		if (err)
			return err;
		pte_set(&dst->pt, i, d & ~PTE_WRITE);
	}
	err = frame_fill(pte_frame(d), page_addr(src, i), os_page_size);
	return err ? err : revert_add(run, dst, i, pte_frame(d));
}

/* Ptes compared at once before they are looked at one by one. */
#define PTE_BLOCK 8

/* The runs a revert builds: dst's pages to map to src's frames, and src's
 * pages to map back to dst's (healing). */
struct revert_runs {
	struct map_run share, heal;
	bool in_place;
};

/* Reverts the pages of [lo, hi) whose frames differ: in place where dst
 * owns the frame alone and in_place is asked, by healing where that
 * applies, else by sharing src's. */
static int revert_range(struct revert_runs *rr, const ucow_region *src,
			size_t lo, size_t hi)
{
	ucow_region *dst = rr->share.r;
	for (size_t i = lo; i < hi; i++) {
		pte_t d = pte_read(&dst->pt, i);
		frame_t f = pte_frame(d), g = pte_frame(pte_read(&src->pt, i));
		int err = 0;
		if (f == g)
			continue;
		if (rr->in_place && f != FRAME_NONE && frame_count(f) == 1)
			err = revert_page_in_place(dst, src, i, d);
		else if (!rr->in_place && heals(dst, src, i, f, g))
			err = heal_add(&rr->heal, dst, i, d);
		else
			err = revert_add(&rr->share, src, i, g);
		if (err)
			return err;
	}
	return 0;
}

/*
 * Makes dst's content equal to src's, touching only pages that differ. Both
 * are held, so no pte is locked and ptes whose words are equal map the same
 * frames: whole leaves, then blocks of a leaf, are skipped on one memcmp.
 */
static int revert_ptes(struct revert_runs *rr, const ucow_region *src)
{
	const struct pgtable *a = &rr->share.r->pt, *b = &src->pt;
	for (size_t l = leaf_next_either(a, b, 0); l < a->nleaves;
	     l = leaf_next_either(a, b, l + 1)) {
		size_t lo = l << PTE_LEAF_SHIFT, hi = leaf_end(a, l);
		if (memcmp(&a->pte[lo], &b->pte[lo], (hi - lo) * sizeof(pte_t)) == 0)
			continue;
		for (size_t i = lo; i < hi; i += PTE_BLOCK) {
			size_t end = i + PTE_BLOCK < hi ? i + PTE_BLOCK : hi;
			if (memcmp(&a->pte[i], &b->pte[i],
				   (end - i) * sizeof(pte_t)) == 0)
				continue;
			int err = revert_range(rr, src, i, end);
			if (err)
				return err;
		}
	}
	int err = rr->share.n ? revert_run(&rr->share, src) : 0;
	if (rr->heal.n && revert_run(&rr->heal, rr->share.r) && !err)
		err = rr->heal.err;
	return err;
}

static int revert(ucow_region *dst, const ucow_region *src, bool in_place)
{
	int err = revert_check(dst, src);
	if (err || dst == src)
		return err;
	sigset_t mask;
	ucow_lock(&mask);
	ucow_region *s = (ucow_region *)src;
	frame_t *home = NULL;
	if ((err = revert_check(dst, src)) != 0 ||
	    (err = rehome_prepare(s, &home)) != 0)
		goto out;
	region_hold(s);
	region_hold(dst);
	vma_resync(s);
	vma_resync(dst);
	struct revert_runs rr = {
		.share = {.r = dst}, .heal = {.r = s}, .in_place = in_place};
	err = region_wrprotect(s);
	/* dst takes src's layout where they differ: about src's mappings. */
	if (!err && !vma_fits(LOAD_RELAXED(&s->mappings) -
			      LOAD_RELAXED(&dst->mappings))) {
		err = -ENOMEM;
		goto release;
	}
	if (!err)
		err = revert_ptes(&rr, s);
	if (rr.share.mapped || rr.heal.calls || err)
		vma_recount(dst);
	if (rr.heal.calls)
		vma_recount(s);
	/*
	 * A snapshot the program rolls back to is a base, used again and again:
	 * dst's writes now copy, so that the base keeps the layout it was taken
	 * with and a revert maps dst back to it (see keep.c). A policy only:
	 * keep.c never gives a snapshot a copy where its own copy is.
	 */
	if (src->readonly)
		chain_detach(dst);
	rehome_commit(s, &home);
release:
	region_release(dst);
	region_release(s);
out:
	home_retire(&home, src->npages);
	ucow_unlock(&mask);
	return err;
}

int ucow_revert(ucow_region *dst, const ucow_region *src)
{
	return revert(dst, src, false);
}

int ucow_revert_in_place(ucow_region *dst, const ucow_region *src)
{
	return revert(dst, src, true);
}
