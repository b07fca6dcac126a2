/*
 * Counters: per region and for the whole process.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static void count_pages(const ucow_region *r, struct ucow_stats *out)
{
	const struct pgtable *pt = &r->pt;
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1)) {
		size_t end = (l + 1) << PTE_LEAF_SHIFT;
		for (size_t i = l << PTE_LEAF_SHIFT; i < end && i < r->npages; i++) {
			pte_t pte = pte_read(pt, i);
			frame_t f = pte_frame(pte);
			if (f == FRAME_NONE)
				continue;
			if (frame_count(f) > 1)
				out->shared_pages++;
			else
				out->private_pages++;
			if (pte & PTE_WRITE)
				out->writable_pages++;
		}
	}
}

int ucow_stats(const ucow_region *r, struct ucow_stats *out)
{
	if (!r || !out)
		return -EINVAL;
	sigset_t mask;
	ucow_lock(&mask);
	int err = region_check(r);
	if (!err) {
		memset(out, 0, sizeof *out);
		out->pages = r->npages;
		count_pages(r, out);
		out->zero_pages = r->npages - out->shared_pages -
				  out->private_pages;
		out->cow_copies = LOAD_RELAXED(&r->cow_copies);
		out->cow_reuses = LOAD_RELAXED(&r->cow_reuses);
		out->cow_kept = LOAD_RELAXED(&r->cow_kept);
		out->zero_fills = LOAD_RELAXED(&r->zero_fills);
		out->coalesced = LOAD_RELAXED(&r->coalesced);
		out->fault_around = LOAD_RELAXED(&r->fault_around);
		out->mappings = (size_t)LOAD_RELAXED(&r->mappings);
		out->metadata_bytes = pgtable_bytes(&r->pt) + sizeof *r +
				      (r->home ? home_blocks(r->npages) *
							 sizeof *r->home : 0);
	}
	ucow_unlock(&mask);
	return err;
}

int ucow_global_stats(struct ucow_global_stats *out)
{
	if (!out)
		return -EINVAL;
	/* The budget is read when ucow starts: a first call must start it. */
	int err = ucow_init();
	if (err)
		return err;
	memset(out, 0, sizeof *out);
	out->regions = region_count();
	out->frames = (size_t)LOAD_RELAXED(&frames.frames_in_use);
	out->frame_bytes = out->frames * (size_t)ucow_page_size();
	out->faults = LOAD_RELAXED(&frames.faults);
	out->foreign_faults = LOAD_RELAXED(&frames.foreign_faults);
	out->mappings = (size_t)LOAD_RELAXED(&vmas.in_use);
	out->mapping_budget = (size_t)vmas.budget;
	return 0;
}
