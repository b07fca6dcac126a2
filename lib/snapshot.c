/*
 * Clone and snapshot: sharing frames between regions, the mirror of fork()'s
 * copy_page_range(). The source is held (no fault runs on it) while its
 * writable pages are write-protected and its ptes copied, which makes the
 * copy a point-in-time image even while other threads write the source.
 */
#include "internal.h"

#include <errno.h>

void run_flush(struct map_run *run)
{
	if (!run->n || run->err)
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

int region_wrprotect(ucow_region *r)
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

int rehome_prepare(const ucow_region *src, frame_t *home)
{
	*home = FRAME_NONE;
	return src->readonly ? 0 : home_alloc(src->npages, home);
}

void rehome_commit(ucow_region *src, frame_t home)
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
	err = region_wrprotect(src);
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
