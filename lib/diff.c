/*
 * Where two regions differ, from their page tables: pages that map one frame
 * are equal, pages that map two differ. The one exception is a frame that an
 * in-place revert gave another's bytes (PTE_RESTORED): its bytes are
 * compared, since its frame says nothing about them.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static int diff_check(const ucow_region *a, const ucow_region *b,
		      ucow_diff_fn fn)
{
	if (!a || !b || !fn)
		return -EINVAL;
	int err = region_check(a);
	if (!err)
		err = region_check(b);
	if (!err && a->npages != b->npages)
		err = -EINVAL;
	return err;
}

static bool pages_differ(const ucow_region *a, const ucow_region *b,
			 size_t i)
{
	pte_t p = pte_read(&a->pt, i), q = pte_read(&b->pt, i);
	if (pte_frame(p) == pte_frame(q))
		return false;
	if (!((p | q) & PTE_RESTORED))
		return true;
	return memcmp(page_addr(a, i), page_addr(b, i), os_page_size) != 0;
}

int ucow_diff(const ucow_region *a, const ucow_region *b, ucow_diff_fn fn,
	      void *arg)
{
	int err = diff_check(a, b, fn);
	if (err || a == b)
		return err;
	size_t run = 0, start = 0;
	for (size_t l = leaf_next_either(&a->pt, &b->pt, 0); l < a->pt.nleaves;
	     l = leaf_next_either(&a->pt, &b->pt, l + 1)) {
		for (size_t i = l << PTE_LEAF_SHIFT; i < leaf_end(&a->pt, l); i++) {
			bool differ = pages_differ(a, b, i);
			if (differ && run && start + run == i) {
				run++;
				continue;
			}
			if (run && (err = fn(start << os_page_shift,
					     run << os_page_shift, arg)) != 0)
				return err;
			run = differ;
			start = i;
		}
	}
	return run ? fn(start << os_page_shift, run << os_page_shift, arg) : 0;
}
