/*
 * Where two regions differ, from their page tables: pages that map one frame
 * are equal, pages that map two differ. The one exception is a frame that an
 * in-place revert gave another's bytes (PTE_RESTORED): its bytes are
 * compared, since its frame says nothing about them.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * A frame's bytes, read from the frame store rather than through a region's
 * mapping: a fault whose map failed may leave a page inaccessible for a
 * moment. False if it cannot be read.
 */
static bool frame_read(frame_t f, char *buf)
{
	if (f == FRAME_NONE) {
		memset(buf, 0, os_page_size);
		return true;
	}
	for (size_t done = 0; done < os_page_size;) {
		ssize_t n = pread(frames.memfd, buf + done, os_page_size - done,
				  (off_t)(frame_offset(f) + done));
		if (n <= 0)
			return false;
		done += (size_t)n;
	}
	return true;
}

/*
 * Page i's ptes in a and b as they were at one moment, neither locked by a
 * fault that changes them. A fault that keeps its frame moves every
 * snapshot sharing the page to one copy, one pte after the other, with all
 * of them locked: a diff must not see two snapshots apart meanwhile, nor
 * read one before the move and the other after it (a's pte read again
 * after b's, unchanged, held that value when b's was read).
 */
static void ptes_settled(const ucow_region *a, const ucow_region *b, size_t i,
			 pte_t *p, pte_t *q)
{
	for (;;) {
		*p = LOAD(&a->pt.pte[i]);
		*q = LOAD(&b->pt.pte[i]);
		if (pte_frame(*p) == pte_frame(*q))
			return;
		if (!((*p | *q) & PTE_LOCK) && LOAD(&a->pt.pte[i]) == *p)
			return;
		sched_yield();
	}
}

/* buf: two pages, allocated at the first comparison; if that fails, or a
 * read does, the pages are reported (as their frames say). */
static bool pages_differ(const ucow_region *a, const ucow_region *b, size_t i,
			 char **buf)
{
	pte_t p, q;
	ptes_settled(a, b, i, &p, &q);
	if (pte_frame(p) == pte_frame(q))
		return false;
	if (!((p | q) & PTE_RESTORED))
		return true;
	if (!*buf && !(*buf = malloc(2 * os_page_size)))
		return true;
	return !frame_read(pte_frame(p), *buf) ||
	       !frame_read(pte_frame(q), *buf + os_page_size) ||
	       memcmp(*buf, *buf + os_page_size, os_page_size) != 0;
}

static int diff_walk(const ucow_region *a, const ucow_region *b,
		     ucow_diff_fn fn, void *arg, char **buf)
{
	int err;
	size_t run = 0, start = 0;
	for (size_t l = leaf_next_either(&a->pt, &b->pt, 0); l < a->pt.nleaves;
	     l = leaf_next_either(&a->pt, &b->pt, l + 1)) {
		for (size_t i = l << PTE_LEAF_SHIFT; i < leaf_end(&a->pt, l); i++) {
			bool differ = pages_differ(a, b, i, buf);
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

int ucow_diff(const ucow_region *a, const ucow_region *b, ucow_diff_fn fn,
	      void *arg)
{
	int err = diff_check(a, b, fn);
	if (err || a == b)
		return err;
	char *buf = NULL;
	err = diff_walk(a, b, fn, arg, &buf);
	free(buf);
	return err;
}
