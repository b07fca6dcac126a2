/*
 * Regions: slots that are never freed (so a fault handler can never touch
 * freed memory), a table from address chunk to slot (an O(1), lock-free
 * lookup for the fault path), creation, destruction and fork().
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define UCOW_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UCOW_LSAN 1
#endif
#endif
#ifdef UCOW_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define MAX_REGIONS ((uint32_t)1 << 20)
#define VA_BITS 47
#define REGION_CHUNK ((size_t)1 << REGION_CHUNK_SHIFT)
#define NCHUNKS ((size_t)1 << (VA_BITS - REGION_CHUNK_SHIFT))

/* Slot 0 is never used, so that chunk_owner 0 means "no region". */
static ucow_region *slots;
static struct os_table slot_table; /* slots, accessible up to slot_limit */
/*
 * The slot of each 2 MiB chunk of address space: reserved whole (256 MiB)
 * without access, and made accessible a page at a time where regions are
 * created, so that tools which read all accessible memory (valgrind's leak
 * check, at every exit) pass over the rest. owner_pages has a bit per table
 * page made accessible, which the fault path tests before it reads.
 */
static struct os_table owner_table;
static uint32_t *chunk_owner;
#define OWNER_PAGES_MAX (NCHUNKS * sizeof(uint32_t) / 4096)
static uint64_t owner_pages[OWNER_PAGES_MAX / 64];
static uint32_t next_slot = 1;
/*
 * Slots [1, slot_limit) are in use or in rotation. Free slots are taken in
 * rotation, so a destroyed handle stays detectable for as long as possible;
 * the rotation grows only when it is full.
 */
static uint32_t slot_limit;
#define FIRST_SLOT_LIMIT 4096

/* Grows the rotation to `limit` slots, making their memory accessible. */
static int slots_grow(uint32_t limit)
{
	int err = os_table_commit(&slot_table, (size_t)limit * sizeof *slots);
	if (!err)
		STORE(&slot_limit, limit);
	return err;
}

static size_t live_regions;

size_t region_count(void)
{
	return LOAD_RELAXED(&live_regions);
}

int region_table_init(void)
{
	int err = os_table_reserve(&slot_table,
				   (size_t)MAX_REGIONS * sizeof *slots);
	if (!err)
		err = os_table_reserve(&owner_table,
				       NCHUNKS * sizeof *chunk_owner);
	if (!err)
		err = slots_grow(FIRST_SLOT_LIMIT);
	if (err) {
		os_table_release(&slot_table);
		os_table_release(&owner_table);
		return err;
	}
	slots = (ucow_region *)slot_table.base;
	chunk_owner = (uint32_t *)owner_table.base;
#ifdef UCOW_LSAN
	/* The leak checker scans malloc'd memory, not this mapping: tell it
	 * the page tables that live regions point to are reachable. */
	__lsan_register_root_region(slots, (size_t)MAX_REGIONS * sizeof *slots);
#endif
	return 0;
}

int region_check(const ucow_region *r)
{
	if (!r)
		return -EINVAL;
	uintptr_t p = (uintptr_t)r, lo = (uintptr_t)(slots + 1),
		  hi = (uintptr_t)(slots + LOAD(&slot_limit));
	if (!slots || p < lo || p >= hi ||
	    (p - (uintptr_t)slots) % sizeof *slots)
		return -EBADF;
	uint32_t state = LOAD(&r->state);
	if (state == REGION_ORPHAN)
		return -ECHILD;
	if (state != REGION_LIVE)
		return -EBADF;
	return 0;
}

static void slot_reset(ucow_region *r)
{
	size_t keep = offsetof(ucow_region, readonly);
	memset((char *)r + keep, 0, sizeof *r - keep);
}

static ucow_region *slot_take(void)
{
	for (uint32_t n = 1; n < slot_limit; n++) {
		uint32_t idx = next_slot;
		next_slot = next_slot + 1 < slot_limit ? next_slot + 1 : 1;
		if (LOAD(&slots[idx].state) == REGION_FREE)
			return &slots[idx];
	}
	if (slot_limit == MAX_REGIONS)
		return NULL;
	uint32_t idx = slot_limit;
	if (slots_grow(slot_limit * 2 < MAX_REGIONS ? slot_limit * 2
						    : MAX_REGIONS) != 0)
		return NULL;
	next_slot = idx + 1;
	return &slots[idx];
}

static size_t owner_page(size_t chunk)
{
	return (chunk * sizeof *chunk_owner) >> os_page_shift;
}

static bool owner_readable(size_t chunk)
{
	size_t p = owner_page(chunk);
	return LOAD(&owner_pages[p / 64]) >> (p % 64) & 1;
}

/* Makes the table pages that hold r's chunks accessible (normal code). */
static int owner_commit(const ucow_region *r)
{
	size_t first = owner_page(r->base >> REGION_CHUNK_SHIFT);
	size_t last = owner_page((r->base + r->va_size - 1) >> REGION_CHUNK_SHIFT);
	for (size_t p = first; p <= last; p++) {
		uint64_t bit = (uint64_t)1 << (p % 64);
		if (LOAD(&owner_pages[p / 64]) & bit)
			continue;
		int err = os_commit(owner_table.base + (p << os_page_shift),
				    os_page_size);
		if (err)
			return err;
		__atomic_fetch_or(&owner_pages[p / 64], bit, __ATOMIC_RELEASE);
	}
	return 0;
}

static int region_map(ucow_region *r)
{
	r->va_size = (r->size + REGION_CHUNK - 1) & ~(REGION_CHUNK - 1);
	void *va = os_reserve_aligned(r->va_size, REGION_CHUNK);
	if (!va)
		return -ENOMEM;
	r->base = (uintptr_t)va;
	int err = owner_commit(r);
	if (err) {
		os_release(va, r->va_size);
		return err;
	}
	/*
	 * The whole reservation reads as zeros; only [base, base + size) is
	 * the region. The rest is never the backend's: a write past the end
	 * is a stray fault (SIGSEGV) under every backend, where a range
	 * registered with userfaultfd would have made the writer wait for a
	 * fault no one serves.
	 */
	err = r->readonly ? os_map_zero(va, r->va_size)
			  : ucow_backend_ops->map_region(va, r->size);
	if (!err && !r->readonly && r->va_size > r->size)
		err = os_map_zero((char *)va + r->size, r->va_size - r->size);
	if (err)
		os_release(va, r->va_size);
	return err;
}

ucow_region *region_new(size_t npages, bool readonly, int *err)
{
	ucow_region *r = slot_take();
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	slot_reset(r);
	r->readonly = readonly;
	r->npages = npages;
	r->size = npages << os_page_shift;
	*err = pgtable_init(&r->pt, npages);
	if (*err)
		return NULL;
	if (!readonly && (*err = home_alloc(npages, &r->home)) != 0)
		goto fail_table;
	if ((*err = region_map(r)) != 0)
		goto fail_home;
	return r;
fail_home:
	home_retire(&r->home, npages);
fail_table:
	pgtable_free(&r->pt);
	return NULL;
}

/*
 * A failpoint for tests of the failure path: UCOW_FAILPOINT_MAP=N makes the
 * first call below for N pages or more fail with ENOMEM (a window coalesced
 * in a fault is 64 pages; a clone's or snapshot's backdrop spans most of
 * the region), and UCOW_FAILPOINT_MAP=N,K the K-th such call (the maps of a
 * fault come after those of the operations that set its scene). The pages
 * are left inaccessible, as a failed mmap(MAP_FIXED) may leave them.
 */
static size_t failpoint_map;
static size_t failpoint_map_calls; /* calls of failpoint_map pages or more */
/* UCOW_FAILPOINT_WRITABLE=K: the K-th make_writable fails (ENOMEM), as a
 * failed mprotect or ioctl would, leaving the pages protected. */
static long failpoint_writable;

void region_failpoints_init(const char *map, const char *writable)
{
	failpoint_writable = writable ? strtol(writable, NULL, 10) : 0;
	char *end = NULL;
	failpoint_map = map ? strtoul(map, &end, 10) : 0;
	failpoint_map_calls = end && *end == ',' ? strtoul(end + 1, NULL, 10) : 0;
	if (!failpoint_map_calls)
		failpoint_map_calls = 1; /* "N", "N," and "N,0": the first */
}

static bool failpoint_map_fires(size_t n)
{
	size_t fail_at = LOAD_RELAXED(&failpoint_map);
	if (!fail_at || n < fail_at)
		return false;
	if (__atomic_sub_fetch(&failpoint_map_calls, 1, __ATOMIC_RELAXED))
		return false;
	STORE(&failpoint_map, 0);
	return true;
}

static int map_pages(ucow_region *r, size_t i, size_t n, frame_t f,
		     bool writable)
{
	void *addr = page_addr(r, i);
	size_t len = n << os_page_shift;
	if (r->readonly)
		return f == FRAME_NONE ? os_map_zero(addr, len)
				       : os_map_file(addr, len, frames.memfd,
						     frame_offset(f), false, false);
	bool live = LOAD(&r->state) == REGION_LIVE;
	if (f == FRAME_NONE)
		return ucow_backend_ops->map_zero(addr, len, live);
	return ucow_backend_ops->map_frame(addr, len, frame_offset(f), writable,
					   live);
}

/* Whether page j continues the run of pages from i that pte p starts. */
static bool table_run_continues(const ucow_region *r, size_t i, pte_t p,
				size_t j)
{
	pte_t q = pte_read(&r->pt, j);
	frame_t f = pte_frame(p);
	return (q & PTE_WRITE) == (p & PTE_WRITE) &&
	       pte_frame(q) == (f == FRAME_NONE ? f : f + (frame_t)(j - i));
}

/*
 * Maps [i, i + n) as r's table says, a call per run, as far as it can: a
 * failed mmap(MAP_FIXED) may have unmapped the old pages, and a hole would
 * make the next access the program's fault.
 */
static void map_table(ucow_region *r, size_t i, size_t n)
{
	for (size_t end = i + n, m; i < end; i += m) {
		pte_t p = pte_read(&r->pt, i);
		for (m = 1; i + m < end && table_run_continues(r, i, p, i + m); m++)
			;
		map_pages(r, i, m, pte_frame(p), !r->readonly && (p & PTE_WRITE));
	}
}

int region_map_pages(ucow_region *r, size_t i, size_t n, frame_t f,
		     bool writable)
{
	int err;
	if (failpoint_map_fires(n)) {
		os_map_none(page_addr(r, i), n << os_page_shift);
		err = -ENOMEM;
	} else {
		err = map_pages(r, i, n, f, writable);
	}
	if (err)
		map_table(r, i, n);
	return err;
}

int region_make_writable(ucow_region *r, size_t i, size_t n)
{
	int err = -ENOMEM;
	if (LOAD_RELAXED(&failpoint_writable) <= 0 ||
	    __atomic_sub_fetch(&failpoint_writable, 1, __ATOMIC_RELAXED) != 0)
		err = ucow_backend_ops->make_writable(page_addr(r, i),
						      n << os_page_shift);
	if (err)
		STORE(&r->wp_unsure, true);
	return err;
}

static void set_owner(const ucow_region *r, uint32_t idx)
{
	for (size_t c = r->base >> REGION_CHUNK_SHIFT;
	     c < (r->base + r->va_size) >> REGION_CHUNK_SHIFT; c++)
		STORE(&chunk_owner[c], idx);
}

void region_publish(ucow_region *r)
{
	ADD(&live_regions, 1);
	vma_recount(r);
	STORE(&r->state, REGION_LIVE);
	set_owner(r, (uint32_t)(r - slots));
}

static ucow_region *region_at(uintptr_t addr)
{
	size_t chunk = addr >> REGION_CHUNK_SHIFT;
	if (!chunk_owner || addr >> VA_BITS || !owner_readable(chunk))
		return NULL;
	uint32_t idx = LOAD(&chunk_owner[chunk]);
	return idx ? &slots[idx] : NULL;
}

static bool region_covers(const ucow_region *r, uintptr_t addr)
{
	return LOAD(&r->state) == REGION_LIVE && addr >= r->base &&
	       addr - r->base < r->size;
}

/*
 * The fault side of region_hold(): a fault counts itself in `active` and then
 * checks wp_seq; a holder makes wp_seq odd and then waits for `active` to
 * drain. Sequentially consistent order guarantees one of them sees the other.
 */
ucow_region *region_fault_enter(uintptr_t addr)
{
	ucow_region *r = region_at(addr);
	if (!r)
		return NULL;
	for (;;) {
		ADD(&r->active, 1);
		if (region_at(addr) != r || !region_covers(r, addr)) {
			SUB(&r->active, 1);
			return NULL;
		}
		if (!(__atomic_load_n(&r->wp_seq, __ATOMIC_SEQ_CST) & 1))
			return r;
		SUB(&r->active, 1);
		while (LOAD(&r->wp_seq) & 1)
			sched_yield();
	}
}

bool region_fault_tryenter(ucow_region *r)
{
	ADD(&r->active, 1);
	if (LOAD(&r->state) == REGION_LIVE &&
	    !(__atomic_load_n(&r->wp_seq, __ATOMIC_SEQ_CST) & 1))
		return true;
	SUB(&r->active, 1);
	return false;
}

void region_fault_exit(ucow_region *r)
{
	SUB(&r->active, 1);
}

ucow_region *region_find(uintptr_t addr)
{
	ucow_region *r = region_at(addr);
	return r && region_covers(r, addr) ? r : NULL;
}

static void wait_for_faults(ucow_region *r)
{
	while (__atomic_load_n(&r->active, __ATOMIC_SEQ_CST))
		sched_yield();
}

void region_hold(ucow_region *r)
{
	ADD(&r->wp_seq, 1);
	wait_for_faults(r);
}

void region_release(ucow_region *r)
{
	ADD(&r->wp_seq, 1);
}

/* Drops every frame reference of the table, as zap_page_range does. */
static void region_zap(ucow_region *r)
{
	struct pgtable *pt = &r->pt;
	struct frame_batch batch = {0, 0};
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1)) {
		for (size_t i = l << PTE_LEAF_SHIFT; i < leaf_end(pt, l); i++) {
			frame_t f = pte_frame(pte_read(pt, i));
			if (f != FRAME_NONE)
				frame_put_batched(f, &batch);
		}
	}
	frame_batch_flush(&batch);
}

static void region_free_slot(ucow_region *r)
{
	pgtable_free(&r->pt);
	free(r->home); /* retired already, or inherited across fork() */
	slot_reset(r);
	STORE(&r->state, REGION_FREE);
}

void region_abandon(ucow_region *r)
{
	if (!r)
		return;
	os_release((void *)r->base, r->va_size);
	region_zap(r);
	home_retire(&r->home, r->npages);
	region_free_slot(r);
}

ucow_region *ucow_create(size_t size)
{
	int err = ucow_init();
	if (!err && (size == 0 || size > ((size_t)1 << (VA_BITS - 1))))
		err = -EINVAL;
	if (err) {
		errno = -err;
		return NULL;
	}
	size_t npages = (size + os_page_size - 1) >> os_page_shift;
	sigset_t mask;
	ucow_lock(&mask);
	ucow_region *r = NULL;
	err = ucow_start();
	if (!err)
		r = region_new(npages, false, &err);
	if (r)
		region_publish(r);
	else if (!region_count())
		ucow_idle(); /* what ucow_start made for it goes again */
	ucow_unlock(&mask);
	if (!r)
		errno = -err;
	return r;
}

void ucow_destroy(ucow_region *r)
{
	sigset_t mask;
	ucow_lock(&mask);
	int err = region_check(r);
	if (err == -ECHILD) {
		/* Inherited across fork(): the frames are the parent's. */
		os_release((void *)r->base, r->va_size);
		region_free_slot(r);
	} else if (!err) {
		ucow_region *snaps = r->readonly ? NULL : r->snap;
		if (r->readonly)
			chain_remove(r);
		else
			chain_detach(r);
		STORE(&r->state, REGION_DYING);
		SUB(&live_regions, 1);
		set_owner(r, 0);
		wait_for_faults(r);
		/* Only now: a fault in progress may still have counted some,
		 * here and, keeping, in its snapshots. */
		vma_account(r, -LOAD(&r->mappings));
		vma_resync_chain(snaps);
		region_abandon(r);
		if (!LOAD(&live_regions))
			ucow_idle();
	}
	ucow_unlock(&mask);
}

void *ucow_base(const ucow_region *r)
{
	return region_check(r) ? NULL : (void *)r->base;
}

size_t ucow_size(const ucow_region *r)
{
	return region_check(r) ? 0 : r->size;
}

int ucow_is_snapshot(const ucow_region *r)
{
	int err = region_check(r);
	return err ? err : r->readonly;
}

/*
 * In a forked child (global lock held, one thread): the regions' frames are
 * the parent's memory, shared through the memfd. Cover every region with
 * PROT_NONE so the child can never write them, and start a store of its own.
 */
void region_atfork_child(void)
{
	if (!slots)
		return;
	for (uint32_t idx = 1; idx < slot_limit; idx++) {
		ucow_region *r = &slots[idx];
		uint32_t state = LOAD(&r->state);
		if (state == REGION_LIVE || state == REGION_DYING) {
			os_map_none((void *)r->base, r->va_size);
			STORE(&r->state, REGION_ORPHAN);
		}
		/* Faults other threads of the parent were serving at fork()
		 * never end here: a slot used again must not wait for them. */
		STORE(&r->active, 0);
	}
	os_discard(owner_table.base, owner_table.size);
	STORE(&live_regions, 0);
	/* The parent's mappings are one PROT_NONE range per region now: the
	 * child's budget starts empty. */
	STORE(&vmas.in_use, 0);
}
