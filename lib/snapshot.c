/*
 * Clone, snapshot and revert: sharing frames between regions, the mirror of
 * fork()'s copy_page_range(). The source is held (no fault runs on it) while
 * its writable pages are write-protected and its ptes copied, which makes the
 * copy a point-in-time image even while other threads write the source.
 */
#include "internal.h"

#include <errno.h>

/* A run of pages to map with one system call: frames f0, f0+1, ... or zeros. */
struct map_run {
	ucow_region *r;
	size_t start, n;
	frame_t f0;
	int err;
};

static void run_flush(struct map_run *run)
{
	if (!run->n || run->err)
		goto out;
	run->err = region_map_pages(run->r, run->start, run->n, run->f0, false);
out:
	run->n = 0;
}

/* Adds page i, to be mapped read-only from frame f (or zeros). */
static void run_add(struct map_run *run, size_t i, frame_t f)
{
	bool zero = f == FRAME_NONE, run_zero = run->f0 == FRAME_NONE;
	if (run->n && i == run->start + run->n && zero == run_zero &&
	    (zero || f == run->f0 + run->n)) {
		run->n++;
		return;
	}
	run_flush(run);
	run->start = i;
	run->n = 1;
	run->f0 = f;
}

/*
 * Write-protects the pages of r made writable since the last call, so that
 * the next write to any of them faults. Costs what changed, not the size.
 */
static int wrprotect_region(ucow_region *r)
{
	struct pgtable *pt = &r->pt;
	for (size_t l = leaf_next(pt->write_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->write_leaves, pt->nleaves, l + 1)) {
		size_t end = (l + 1) << PTE_LEAF_SHIFT;
		if (end > r->npages)
			end = r->npages;
		for (size_t i = l << PTE_LEAF_SHIFT; i < end; i++) {
			if (!(pte_read(pt, i) & PTE_WRITE))
				continue;
			size_t j = i;
			while (j < end && (pte_read(pt, j) & PTE_WRITE))
				j++;
			int err = ucow_backend_ops->wrprotect(
				page_addr(r, i), (j - i) << os_page_shift);
			if (err)
				return err;
			long before = vma_window(r, i, j);
			for (size_t k = i; k < j; k++)
				pte_set(pt, k, pte_read(pt, k) & ~PTE_WRITE);
			vma_account(r, vma_window(r, i, j) - before);
			i = j;
		}
	}
	leaf_clear_all(pt->write_leaves, pt->nleaves);
	return 0;
}

/* dst (new, all zero pages) maps every frame of src read-only. */
static int share_all(ucow_region *dst, const ucow_region *src)
{
	const struct pgtable *pt = &src->pt;
	struct map_run run = {.r = dst};
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1)) {
		for (size_t i = l << PTE_LEAF_SHIFT; i < leaf_end(&src->pt, l); i++) {
			frame_t f = pte_frame(pte_read(pt, i));
			if (f == FRAME_NONE)
				continue;
			frame_get(f);
			pte_set(&dst->pt, i, f);
			run_add(&run, i, f);
		}
	}
	run_flush(&run);
	return run.err;
}

/*
 * The source's frames are about to be shared: it needs a new home, since its
 * current one may now hold frames that other regions map.
 */
static int rehome_prepare(const ucow_region *src, frame_t *home)
{
	*home = FRAME_NONE;
	return src->readonly ? 0 : home_alloc(src->npages, home);
}

static void rehome_commit(ucow_region *src, frame_t home)
{
	if (src->readonly)
		return;
	home_retire(src->home, src->npages);
	src->home = home;
}

static ucow_region *copy_region(ucow_region *src, bool readonly)
{
	int err = region_check(src);
	if (err) {
		errno = -err;
		return NULL;
	}
	sigset_t mask;
	ucow_lock(&mask);
	ucow_region *dst = NULL;
	frame_t home = FRAME_NONE;
	if ((err = region_check(src)) != 0)
		goto out;
	if (!(dst = region_new(src->npages, readonly, &err)))
		goto out;
	if ((err = rehome_prepare(src, &home)) != 0)
		goto out;
	region_hold(src);
	err = wrprotect_region(src);
	if (!err)
		err = share_all(dst, src);
	if (!err)
		rehome_commit(src, home);
	region_release(src);
out:
	if (err) {
		home_retire(home, src->npages);
		region_abandon(dst);
		dst = NULL;
		errno = -err;
	} else {
		region_publish(dst);
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
 * Points dst's pages [run->start, +n) at src's frames: take the new frames,
 * map them, and only then drop the old ones (as wp_page_copy orders it).
 */
static int revert_run(struct map_run *run, const ucow_region *src)
{
	ucow_region *dst = run->r;
	size_t start = run->start, n = run->n;
	for (size_t k = start; k < start + n; k++)
		if (pte_frame(pte_read(&src->pt, k)) != FRAME_NONE)
			frame_get(pte_frame(pte_read(&src->pt, k)));
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

/* Makes every pte of dst equal to src's, mapping only the differences. */
static int revert_ptes(ucow_region *dst, const ucow_region *src)
{
	struct map_run run = {.r = dst};
	for (size_t l = leaf_next_either(&dst->pt, &src->pt, 0); l < dst->pt.nleaves;
	     l = leaf_next_either(&dst->pt, &src->pt, l + 1)) {
		for (size_t i = l << PTE_LEAF_SHIFT; i < leaf_end(&dst->pt, l); i++) {
			frame_t f = pte_frame(pte_read(&dst->pt, i));
			frame_t g = pte_frame(pte_read(&src->pt, i));
			if (f == g)
				continue;
			bool zero = g == FRAME_NONE;
			if (run.n && !(i == run.start + run.n &&
				       zero == (run.f0 == FRAME_NONE) &&
				       (zero || g == run.f0 + run.n))) {
				if (revert_run(&run, src))
					return run.err;
			}
			if (!run.n) {
				run.start = i;
				run.f0 = g;
			}
			run.n++;
		}
	}
	return run.n ? revert_run(&run, src) : 0;
}

int ucow_revert(ucow_region *dst, const ucow_region *src)
{
	int err = revert_check(dst, src);
	if (err || dst == src)
		return err;
	sigset_t mask;
	ucow_lock(&mask);
	ucow_region *s = (ucow_region *)src;
	frame_t home = FRAME_NONE;
	if ((err = revert_check(dst, src)) != 0 ||
	    (err = rehome_prepare(s, &home)) != 0)
		goto out;
	region_hold(s);
	region_hold(dst);
	err = wrprotect_region(s);
	if (!err)
		err = revert_ptes(dst, s);
	vma_recount(dst);
	rehome_commit(s, home);
	home = FRAME_NONE;
	region_release(dst);
	region_release(s);
out:
	home_retire(home, src->npages);
	ucow_unlock(&mask);
	return err;
}
