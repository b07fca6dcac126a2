/*
 * The write fault on a copy-on-write page: the userspace mirror of
 * do_wp_page(), wp_page_reuse() and wp_page_copy() in Linux mm/memory.c.
 * Every backend (and ucow_unshare) resolves faults here.
 *
 * Async-signal-safe: no malloc, no stdio, no lock that normal code holds;
 * only atomics, the per-page pte lock and system calls.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

/*
 * The frame has no other user: make the page writable in place, as the
 * kernel does for an exclusive anonymous page.
 */
static int wp_page_reuse(ucow_region *r, size_t i, pte_t pte, pte_t *out)
{
	int err = ucow_backend_ops->make_writable(page_addr(r, i),
						  os_page_size);
	if (err)
		return err;
	COUNT(&r->cow_reuses);
	*out = pte | PTE_WRITE;
	return 0;
}

/*
 * Copy the page into the region's home frame for it and map that frame
 * writable over the faulting page; only then drop the old frame, so that no
 * other user can reuse it while this page still maps it. From the zero page
 * there is nothing to copy: a free home frame is a hole and reads as zeros.
 */
static int wp_page_copy(ucow_region *r, size_t i, pte_t pte, pte_t *out)
{
	frame_t old = pte_frame(pte), new = r->home + (frame_t)i;
	void *addr = page_addr(r, i);
	int err = 0;

	if (old != FRAME_NONE)
		err = frame_fill(new, addr);
	frame_get_new(new);
	if (!err)
		err = ucow_backend_ops->map_frame(addr, os_page_size,
						  frame_offset(new), true);
	if (err) {
		frame_put(new);
		return err;
	}
	*out = new | PTE_WRITE;
	if (old == FRAME_NONE) {
		COUNT(&r->zero_fills);
	} else {
		frame_put(old);
		COUNT(&r->cow_copies);
	}
	return 0;
}

/*
 * Makes page j of a locked window private in the region's home: copies it
 * there unless it is there already. A writable page is write-protected first,
 * so that no other thread writes it while it is copied.
 */
static int coalesce_take(ucow_region *r, size_t j)
{
	pte_t pte = pte_read(&r->pt, j);
	frame_t f = pte_frame(pte), home = r->home + (frame_t)j;
	void *addr = page_addr(r, j);
	int err = 0;
	if (f == home)
		return 0;
	if (pte & PTE_WRITE)
		err = ucow_backend_ops->wrprotect(addr, os_page_size);
	if (!err && f != FRAME_NONE)
		err = frame_fill(home, addr);
	frame_get_new(home);
	if (err)
		frame_put(home);
	return err;
}

static void coalesce_undo(ucow_region *r, size_t lo, size_t hi)
{
	for (size_t j = lo; j < hi; j++)
		if (pte_frame(pte_read(&r->pt, j)) != r->home + (frame_t)j)
			frame_put(r->home + (frame_t)j);
}

static void coalesce_commit(ucow_region *r, size_t lo, size_t hi)
{
	for (size_t j = lo; j < hi; j++) {
		frame_t f = pte_frame(pte_read(&r->pt, j));
		frame_t home = r->home + (frame_t)j;
		if (f != home) {
			if (f != FRAME_NONE)
				frame_put(f);
			COUNT(&r->coalesced);
		}
		pte_unlock(&r->pt, j, home | PTE_WRITE);
	}
}

/*
 * Near the mapping budget, a fault makes the whole window around page i
 * private and maps it with one mapping: a little memory (the window's shared
 * pages are copied) for many mappings. Pte locks are taken in ascending
 * order; a plain fault holds only one, so this cannot deadlock.
 */
static int wp_page_coalesce(ucow_region *r, size_t i)
{
	size_t lo = i >> VMA_WINDOW_SHIFT << VMA_WINDOW_SHIFT;
	size_t hi = lo + ((size_t)1 << VMA_WINDOW_SHIFT);
	if (hi > r->npages)
		hi = r->npages;
	for (size_t j = lo; j < hi; j++)
		pte_lock(&r->pt, j);
	long before = vma_window(r, lo, hi);
	int err = 0;
	size_t j = lo;
	for (; j < hi && !err; j++)
		err = coalesce_take(r, j);
	if (!err)
		err = ucow_backend_ops->map_frame(page_addr(r, lo),
						  (hi - lo) << os_page_shift,
						  frame_offset(r->home + lo), true);
	if (err) {
		coalesce_undo(r, lo, err ? j - 1 : hi);
		for (size_t k = lo; k < hi; k++)
			pte_unlock(&r->pt, k, pte_read(&r->pt, k));
		return err;
	}
	coalesce_commit(r, lo, hi);
	vma_account(r, vma_window(r, lo, hi) - before);
	return 0;
}

int do_wp_page(ucow_region *r, size_t i)
{
	if (r->readonly)
		return -EPERM;
	pte_t pte = pte_lock(&r->pt, i), out = pte;
	/* Another thread resolved it while we waited: just retry the access. */
	if (pte & PTE_WRITE) {
		pte_unlock(&r->pt, i, pte);
		return 0;
	}
	frame_t f = pte_frame(pte);
	bool reuse = f != FRAME_NONE && frame_count(f) == 1;
	pte_t planned = (reuse ? pte : (pte_t)(r->home + (frame_t)i)) | PTE_WRITE;
	long delta = vma_delta(r, i, pte, planned);
	if (vma_over_budget(delta)) {
		pte_unlock(&r->pt, i, pte);
		return wp_page_coalesce(r, i);
	}
	int err = reuse ? wp_page_reuse(r, i, pte, &out)
			: wp_page_copy(r, i, pte, &out);
	pte_unlock(&r->pt, i, err ? pte : out);
	if (!err)
		vma_account(r, delta);
	return err;
}

static const char *errno_name(int err)
{
	switch (err) {
	case -ENOMEM: return "out of memory (ENOMEM)";
	case -ENOSPC: return "the frame store is full (ENOSPC)";
	case -EFBIG: return "the frame store cannot grow (EFBIG)";
	default: return "a system call failed";
	}
}

/*
 * A store that cannot be given a frame cannot be failed back to the program:
 * continuing would lose the write. Say why, then abort.
 */
static void fault_unserviceable(uintptr_t addr, int err)
{
	os_write_error("cannot serve a copy-on-write fault", errno_name(err),
		       addr);
	abort();
}

int handle_mm_fault(uintptr_t addr)
{
	ucow_region *r = region_fault_enter(addr);
	if (!r)
		return 0;
	int err = do_wp_page(r, (addr - r->base) >> os_page_shift);
	region_fault_exit(r);
	if (err == -EPERM)
		return 0; /* a write to a snapshot: the program's fault */
	if (err)
		fault_unserviceable(addr, err);
	COUNT(&frames.faults);
	return 1;
}

int ucow_handle_fault(void *addr)
{
	int saved = errno;
	int served = handle_mm_fault((uintptr_t)addr);
	errno = saved;
	return served;
}

static int unshare_check(uintptr_t start, size_t len, ucow_region **out)
{
	ucow_region *r = region_find(start);
	if (!r)
		return -EFAULT;
	if (r->readonly)
		return -EPERM;
	if (len > r->size - (start - r->base))
		return -EINVAL;
	*out = r;
	return 0;
}

int ucow_unshare(void *addr, size_t len)
{
	if (len == 0)
		return 0;
	uintptr_t start = (uintptr_t)addr;
	ucow_region *r;
	int err = unshare_check(start, len, &r);
	if (err)
		return err;
	size_t first = (start - r->base) >> os_page_shift;
	size_t last = (start + len - 1 - r->base) >> os_page_shift;
	for (size_t i = first; i <= last && !err; i++) {
		if (pte_read(&r->pt, i) & PTE_WRITE)
			continue;
		ucow_region *held = region_fault_enter((uintptr_t)page_addr(r, i));
		if (!held)
			return -EFAULT;
		err = do_wp_page(held, i);
		region_fault_exit(held);
	}
	return err;
}
