/*
 * The write fault on a copy-on-write page: the userspace mirror of
 * do_wp_page(), wp_page_reuse() and wp_page_copy() in Linux mm/memory.c,
 * with one case the kernel does not have: wp_page_keep(), where the writer
 * keeps its frame and its latest snapshot takes the copy. Every backend (and
 * ucow_unshare) resolves faults here.
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
 * Takes the free frames [f, f + n), fills them from the pages at `from`
 * (unless NULL: a free frame is a hole of the memfd and reads as zeros) and
 * maps them over pages [i, i + n) of r; on failure gives them back.
 */
static int copy_and_map(ucow_region *r, size_t i, size_t n, frame_t f,
			const void *from, bool writable)
{
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
	int err = copy_and_map(r, i, n, r->home + (frame_t)i,
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
 * The region's latest snapshot, with a fault reference taken, if it can take
 * copies now: live and not held (a fault never waits for a holder while it
 * holds ptes of its own: a revert holds two regions), a snapshot of the same
 * size with a home. r->snap is a slot pointer, and the slot may hold another
 * region by now; these checks and keep_lock's make that harmless (internal.h,
 * "homes").
 */
static ucow_region *keep_enter(const ucow_region *r)
{
	ucow_region *s = LOAD(&r->snap);
	if (!s || !region_fault_tryenter(s))
		return NULL;
	if (s->readonly && s->npages == r->npages && s->home != FRAME_NONE)
		return s;
	region_fault_exit(s);
	return NULL;
}

/*
 * Whether page i of the writer, mapping frame f, can keep it: f has two
 * users and the other is page i of s, whose pte is then locked. The
 * snapshot's copy goes to its home + i, so not when f is that frame (the
 * writer took it back by a revert). The writer's pte is locked and both
 * regions have a fault reference, so no copy or revert can add a user.
 */
static bool keep_lock(ucow_region *s, size_t i, frame_t f)
{
	pte_t p;
	if (f == FRAME_NONE || frame_count(f) != 2 ||
	    s->home + (frame_t)i == f || !pte_trylock(&s->pt, i, &p))
		return false;
	if (pte_frame(p) == f)
		return true;
	pte_unlock(&s->pt, i, p);
	return false;
}

/*
 * Fault-around: a writer that moves in sequence (this fault is at the page
 * after the last one served) gets the following pages copied in the same
 * fault, as the kernel maps a run of pages around a read fault. Only pages
 * that need the same work as page i join: shared ones after a shared page,
 * zero pages after a zero page, pages the writer keeps (shared with s) after
 * one it keeps; the run stops at a page another fault holds.
 */
static size_t fault_around_lock(ucow_region *r, size_t i, frame_t f,
				ucow_region *s)
{
	size_t n = 1;
	if (i == 0 || LOAD_RELAXED(&r->next_fault) != i)
		return 1;
	while (n < FAULT_AROUND && i + n < r->npages) {
		pte_t pte;
		if (!pte_trylock(&r->pt, i + n, &pte))
			break;
		frame_t g = pte_frame(pte);
		bool same = !(pte & PTE_WRITE) &&
			    (s ? keep_lock(s, i + n, g)
			     : f == FRAME_NONE ? g == FRAME_NONE
					       : g != FRAME_NONE && frame_count(g) > 1);
		if (!same) {
			pte_unlock(&r->pt, i + n, pte);
			break;
		}
		n++;
	}
	return n;
}

/*
 * A failed mmap(MAP_FIXED) may have unmapped the old pages on some kernels:
 * map s's frames back, as far as possible, rather than leave a hole in a
 * snapshot (a read there would be the program's fault).
 */
static void keep_undo(ucow_region *s, size_t i, size_t n)
{
	for (size_t k = 0; k < n; k++)
		region_map_pages(s, i + k, 1, pte_frame(pte_read(&s->pt, i + k)),
				 false);
}

/*
 * The writer keeps its frame: pages [i, i + n) of r, shared with the same
 * pages of s alone, stay r's where they are, and s takes the copies. The
 * kernel has no such case, since its copies may go anywhere; ours land at
 * memfd offsets, and a region whose written pages moved to a new home after
 * every snapshot would lie, after a few rounds, in many homes, one mapping
 * each, which every later snapshot maps and counts again. Kept, they stay
 * where they were first written: one mapping, which a snapshot maps with one
 * call. It costs a call more per fault (s's page is remapped, r's made
 * writable) and a second mapping split (vma_keep_fits).
 *
 * Copy into s's home, map the copies in s, and only then drop s's references
 * to r's frames (wp_page_copy's order). Both regions' ptes are locked.
 */
static int wp_page_keep(ucow_region *r, ucow_region *s, size_t i, size_t n)
{
	frame_t copy = s->home + (frame_t)i;
	long before = vma_window(s, i, i + n);
	int err = copy_and_map(s, i, n, copy, page_addr(r, i), false);
	if (err) {
		keep_undo(s, i, n);
		return err;
	}
	for (size_t k = 0; k < n; k++) {
		pte_update_locked(&s->pt, i + k, copy + (frame_t)k);
		frame_put(pte_frame(pte_read(&r->pt, i + k)));
	}
	vma_account(s, vma_window(s, i, i + n) - before);
	COUNT(&r->cow_kept);
	if (n > 1)
		ADD(&r->fault_around, n - 1);
	return 0;
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
	frame_t f = pte_frame(pte), home = r->home + (frame_t)j;
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
	size_t taken = lo;
	while (taken < hi && !(err = coalesce_take(r, taken)))
		taken++;
	if (!err)
		err = region_map_pages(r, lo, hi - lo, r->home + (frame_t)lo,
				       true);
	if (err) {
		coalesce_undo(r, lo, taken);
		vma_account(r, vma_window(r, lo, hi) - before);
		for (size_t k = lo; k < hi; k++)
			pte_unlock(&r->pt, k, pte_read(&r->pt, k));
		return err;
	}
	coalesce_commit(r, lo, hi);
	vma_account(r, vma_window(r, lo, hi) - before);
	return 0;
}

static int do_wp_page_reuse(ucow_region *r, size_t i, pte_t pte)
{
	pte_t out = pte | PTE_WRITE;
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
	size_t n = around ? fault_around_lock(r, i, pte_frame(pte), NULL) : 1;
	long before = vma_window(r, i, i + n);
	int err = wp_page_copy(r, i, n);
	for (size_t k = 0; k < n; k++)
		pte_unlock(&r->pt, i + k,
			   err ? pte_read(&r->pt, i + k)
			       : (r->home + (frame_t)(i + k)) | PTE_WRITE);
	if (err)
		return err;
	vma_account(r, vma_window(r, i, i + n) - before);
	STORE(&r->next_fault, i + n);
	return 0;
}

/*
 * The keep path, when page i's frame is shared with the latest snapshot
 * alone and the mappings it costs fit: 0 or a negative errno, or 1 when it
 * does not apply (copy instead).
 */
static int do_wp_page_keep(ucow_region *r, size_t i, pte_t pte, bool around)
{
	if (!vma_keep_fits())
		return 1;
	ucow_region *s = keep_enter(r);
	if (!s)
		return 1;
	if (!keep_lock(s, i, pte_frame(pte))) {
		region_fault_exit(s);
		return 1;
	}
	size_t n = around ? fault_around_lock(r, i, pte_frame(pte), s) : 1;
	long before = vma_window(r, i, i + n);
	int err = wp_page_keep(r, s, i, n);
	/*
	 * Once kept, the frames are r's alone and the table says writable even
	 * if the kernel does not agree: a write then makes the page writable
	 * again (do_wp_page), and the next snapshot write-protects it.
	 */
	int mkwrite = err ? 0 : ucow_backend_ops->make_writable(
					page_addr(r, i), n << os_page_shift);
	for (size_t k = 0; k < n; k++) {
		pte_unlock(&s->pt, i + k, pte_read(&s->pt, i + k));
		pte_t p = pte_read(&r->pt, i + k);
		pte_unlock(&r->pt, i + k, err ? p : p | PTE_WRITE);
	}
	region_fault_exit(s);
	if (err)
		return err;
	vma_account(r, vma_window(r, i, i + n) - before);
	STORE(&r->next_fault, i + n);
	return mkwrite;
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
		int err = ucow_backend_ops->make_writable(page_addr(r, i),
							  os_page_size);
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
		err = do_wp_page(held, i, false);
		region_fault_exit(held);
	}
	return err;
}
