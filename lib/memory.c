/*
 * The write fault on a copy-on-write page: the userspace mirror of
 * do_wp_page(), wp_page_reuse() and wp_page_copy() in Linux mm/memory.c,
 * with one case the kernel does not have, in keep.c: the writer keeps its
 * frame and its snapshots take the copy. Every backend (and ucow_unshare)
 * resolves faults here.
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
	int err = region_make_writable(r, i, 1);
	if (err)
		return err;
	COUNT(&r->cow_reuses);
	*out = pte | PTE_WRITE;
	return 0;
}

/*
 * Takes the free frames [f, f + n), fills them from the pages at `from`
 * (unless NULL: a free frame is a hole of the memfd and reads as zeros) and
 * maps them over pages [i, i + n) of r; on failure gives them back.
 */
int copy_and_map(ucow_region *r, size_t i, size_t n, frame_t f,
		 const void *from, bool writable)
{
	/*
	 * pwrite reads the run through the region's mapping, and each page it
	 * finds unmapped stops the copy for a fault and a retry. The kernel
	 * maps pages around a read fault, but not in a userfaultfd-registered
	 * range: there one call maps the run first (ascending writes to a
	 * 64 MiB clone under uffd, three paired runs on our VM: 6.6-7.5 us a
	 * page before, 4.6-4.8 after; under sigsegv it gained nothing).
	 */
	if (from && n > 1 && !ucow_backend_ops->read_fault_around)
		os_populate_read((void *)from, n << os_page_shift);
	int err = from ? frame_fill(f, from, n << os_page_shift) : 0;
	for (size_t k = 0; k < n; k++)
		frame_get_new(f + (frame_t)k);
	if (!err)
		err = region_map_pages(r, i, n, f, writable);
	if (err)
		for (size_t k = 0; k < n; k++)
			frame_put(f + (frame_t)k);
	return err;
}

/*
 * Copy the pages [i, i + n) into the region's home frames for them and map
 * those frames writable over the pages; only then drop the old frames, so
 * that no other user can reuse one while this region still maps it. From the
 * zero page there is nothing to copy. The caller holds the ptes' locks.
 */
static int wp_page_copy(ucow_region *r, size_t i, size_t n)
{
	frame_t old = pte_frame(pte_read(&r->pt, i));
	int err = copy_and_map(r, i, n, home_frame(r, i),
			       old == FRAME_NONE ? NULL : page_addr(r, i), true);
	if (err)
		return err;
	for (size_t k = 0; k < n; k++) {
		frame_t f = pte_frame(pte_read(&r->pt, i + k));
		if (f != FRAME_NONE)
			frame_put(f);
	}
	COUNT(old == FRAME_NONE ? &r->zero_fills : &r->cow_copies);
	if (n > 1)
		ADD(&r->fault_around, n - 1);
	return 0;
}

/*
 * Fault-around: a writer that moves in sequence (this fault is at the page
 * after the last one served) gets the following pages served in the same
 * fault, as the kernel maps a run of pages around a read fault. The run is
 * twice the previous fault's (at least FAULT_AROUND, at most
 * FAULT_AROUND_MAX), so a long sequential write pays a fault per 64 pages,
 * and one that stops within its first 49 pages copies at most 15 it did not
 * write. Only pages that need the same work as page i
 * join (`joins` says, and locks what else it needs); the run stops at a page
 * another fault holds.
 */
size_t fault_around_lock(ucow_region *r, size_t i, const ucow_region *h,
			 bool (*joins)(void *ctx, size_t j, pte_t pte),
			 void *ctx)
{
	size_t n = 1;
	if (i == 0 || LOAD_RELAXED(&r->next_fault) != i)
		return 1;
	size_t want = 2 * LOAD_RELAXED(&r->last_run);
	want = want < FAULT_AROUND ? FAULT_AROUND
	       : want > FAULT_AROUND_MAX ? FAULT_AROUND_MAX : want;
	while (n < want && i + n < r->npages && home_contiguous(h, i, n + 1)) {
		pte_t pte;
		if (!pte_trylock(&r->pt, i + n, &pte))
			break;
		if (!joins(ctx, i + n, pte)) {
			pte_unlock(&r->pt, i + n, pte);
			break;
		}
		n++;
	}
	return n;
}

/* For a copy: shared pages after a shared page, zero pages after one. */
static bool copy_joins(void *ctx, size_t j, pte_t pte)
{
	frame_t f = *(const frame_t *)ctx, g = pte_frame(pte);
	UNUSED(j);
	if (pte & PTE_WRITE)
		return false;
	return f == FRAME_NONE ? g == FRAME_NONE
			       : g != FRAME_NONE && frame_count(g) > 1;
}

/*
 * Makes page j of a locked window private in the region's home: copies it
 * there unless it is there already. A writable page is write-protected first,
 * so that no other thread writes it while it is copied; its locked pte says
 * so at once, so that a failure later leaves the table true.
 */
static int coalesce_take(ucow_region *r, size_t j)
{
	pte_t pte = pte_read(&r->pt, j);
	frame_t f = pte_frame(pte), home = home_frame(r, j);
	void *addr = page_addr(r, j);
	int err = 0;
	if (f == home)
		return 0;
	if (pte & PTE_WRITE) {
		err = ucow_backend_ops->wrprotect(addr, os_page_size);
		if (!err)
			pte_update_locked(&r->pt, j, pte & ~PTE_WRITE);
	}
	if (!err && f != FRAME_NONE)
		err = frame_fill(home, addr, os_page_size);
	frame_get_new(home);
	if (err)
		frame_put(home);
	return err;
}

static void coalesce_undo(ucow_region *r, size_t lo, size_t hi)
{
	for (size_t j = lo; j < hi; j++)
		if (pte_frame(pte_read(&r->pt, j)) != home_frame(r, j))
			frame_put(home_frame(r, j));
}

static void coalesce_commit(ucow_region *r, size_t lo, size_t hi)
{
	for (size_t j = lo; j < hi; j++) {
		frame_t f = pte_frame(pte_read(&r->pt, j));
		frame_t home = home_frame(r, j);
		if (f != home) {
			if (f != FRAME_NONE)
				frame_put(f);
			COUNT(&r->coalesced);
		}
		pte_update_locked(&r->pt, j, home | PTE_WRITE);
	}
}

/* Unlocks pages [lo, hi) as the table says. */
static void unlock_run(ucow_region *r, size_t lo, size_t hi)
{
	for (size_t k = lo; k < hi; k++)
		pte_unlock(&r->pt, k, pte_read(&r->pt, k));
}

/*
 * The window is counted again before the pages are unlocked: a fault on a
 * neighbouring page then either started after this one (and read the new
 * ptes) or found this one's locks (vma_note_neighbours).
 */
int fault_finish(ucow_region *r, size_t i, size_t n, bool copied, long before,
		 int err)
{
	if (!err) {
		for (size_t k = i; k < i + n; k++) {
			frame_t f = copied ? home_frame(r, k)
					   : pte_frame(pte_read(&r->pt, k));
			pte_update_locked(&r->pt, k, f | PTE_WRITE);
		}
		vma_account(r, vma_window(r, i, i + n) - before);
		STORE_RELAXED(&r->last_run, n);
		STORE(&r->next_fault, i + n);
	}
	unlock_run(r, i, i + n);
	return err;
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
	long before = vma_window_held(r, lo, hi);
	int err = 0;
	size_t taken = lo;
	while (taken < hi && !(err = coalesce_take(r, taken)))
		taken++;
	if (!err)
		err = region_map_pages(r, lo, hi - lo, home_frame(r, lo), true);
	if (err)
		coalesce_undo(r, lo, taken);
	else
		coalesce_commit(r, lo, hi);
	vma_account(r, vma_window(r, lo, hi) - before);
	unlock_run(r, lo, hi);
	return err;
}

static int do_wp_page_reuse(ucow_region *r, size_t i, pte_t pte)
{
	pte_t out = pte | PTE_WRITE;
	vma_note_neighbours(r, i, i + 1);
	long delta = vma_delta(r, i, pte, out);
	if (vma_over_budget(delta)) {
		pte_unlock(&r->pt, i, pte);
		return wp_page_coalesce(r, i);
	}
	int err = wp_page_reuse(r, i, pte, &out);
	pte_unlock(&r->pt, i, err ? pte : out);
	if (!err)
		vma_account(r, delta);
	return err;
}

static int do_wp_page_copy(ucow_region *r, size_t i, pte_t pte, bool around)
{
	/* A run mapped into the middle of others splits at most two. */
	if (vma_over_budget(2)) {
		pte_unlock(&r->pt, i, pte);
		return wp_page_coalesce(r, i);
	}
	frame_t f = pte_frame(pte);
	size_t n = around ? fault_around_lock(r, i, r, copy_joins, &f) : 1;
	long before = vma_window_held(r, i, i + n);
	int err = wp_page_copy(r, i, n);
	return fault_finish(r, i, n, true, before, err);
}

int do_wp_page(ucow_region *r, size_t i, bool around)
{
	if (r->readonly)
		return -EPERM;
	pte_t pte = pte_lock(&r->pt, i);
	/*
	 * Another thread resolved it while we waited: retry the access. The
	 * page is made writable again (a no-op, as a rule) so that a kernel
	 * protection that disagrees with the table, left by a write-protect
	 * that failed half-way, cannot make the write fault for ever.
	 */
	if (pte & PTE_WRITE) {
		int err = region_make_writable(r, i, 1);
		pte_unlock(&r->pt, i, pte);
		return err;
	}
	frame_t f = pte_frame(pte);
	if (f != FRAME_NONE && frame_count(f) == 1)
		return do_wp_page_reuse(r, i, pte);
	int err = f != FRAME_NONE ? do_wp_page_keep(r, i, pte, around) : 1;
	if (err <= 0)
		return err;
	return do_wp_page_copy(r, i, pte, around);
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

static ucow_fault_error_fn error_handler;
static void *error_arg;

void ucow_on_fault_error(ucow_fault_error_fn fn, void *arg)
{
	__atomic_store_n(&error_arg, arg, __ATOMIC_RELAXED);
	__atomic_store_n(&error_handler, fn, __ATOMIC_RELEASE);
}

/*
 * A store that cannot be given a frame cannot be failed back to the program,
 * and continuing would lose the write. The program's handler may free memory
 * and return (the access is retried) or leave; without one, say why and
 * abort.
 */
static void fault_unserviceable(uintptr_t addr, int err)
{
	ucow_fault_error_fn fn = __atomic_load_n(&error_handler, __ATOMIC_ACQUIRE);
	if (fn) {
		fn((void *)addr, err, __atomic_load_n(&error_arg, __ATOMIC_RELAXED));
		return;
	}
	os_write_error("cannot serve a copy-on-write fault", errno_name(err),
		       addr);
	abort();
}

int handle_mm_fault(uintptr_t addr)
{
	ucow_region *r = region_fault_enter(addr);
	if (!r)
		return 0;
	int err = do_wp_page(r, (addr - r->base) >> os_page_shift, true);
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

/* Looked up as a fault does: a fault reference, no global lock. */
static int unshare_check(uintptr_t start, size_t len)
{
	ucow_region *r = region_fault_enter(start);
	if (!r)
		return -EFAULT;
	int err = r->readonly ? -EPERM
		  : len > r->size - (start - r->base) ? -EINVAL : 0;
	region_fault_exit(r);
	return err;
}

/*
 * Each page is looked up again, as a fault would: the region may be
 * destroyed meanwhile.
 */
static int unshare_pages(uintptr_t start, size_t len)
{
	uintptr_t mask = os_page_size - 1;
	int err = 0;
	for (uintptr_t a = start & ~mask; a < start + len && !err;
	     a += os_page_size) {
		ucow_region *r = region_fault_enter(a);
		if (!r)
			return -EFAULT;
		size_t i = (a - r->base) >> os_page_shift;
		/* After a failed make_writable a page the table calls writable
		 * may still be protected: do_wp_page makes it writable again. */
		if (!(pte_read(&r->pt, i) & PTE_WRITE) || LOAD(&r->wp_unsure))
			err = do_wp_page(r, i, false);
		region_fault_exit(r);
	}
	return err;
}

/*
 * Per thread, not on the stack: a cancel acted on as the mask is restored
 * unwinds through this frame, and ASan would leave the poison of a local
 * on the unwound stack (the unwinder does not tell it).
 */
static _Thread_local sigset_t unshare_saved_mask;

/*
 * Normal code faulting on purpose, with fault references and pte locks
 * held: a signal handler of this thread that wrote the same page would wait
 * for that lock for ever, and the signal of asynchronous cancellation would
 * unwind the thread with them held. So asynchronous signals, that one
 * included, are blocked throughout, as in a fault. (There is no
 * cancellation point in between: deferred cancellation needs nothing.)
 */
int ucow_unshare(void *addr, size_t len)
{
	if (len == 0)
		return 0;
	os_block_signals(&unshare_saved_mask);
	int err = unshare_check((uintptr_t)addr, len);
	if (!err)
		err = unshare_pages((uintptr_t)addr, len);
	os_restore_signals(&unshare_saved_mask);
	return err;
}
