/*
 * A region's page table: one pte per page, from page number to frame.
 * Large tables are reserved address space, so a huge region that is lightly
 * used costs table memory only where its pages are used.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Tables up to this size come from malloc; larger ones are reserved. */
#define PGTABLE_MALLOC_MAX ((size_t)64 << 10)

static size_t bitmap_words(size_t nbits)
{
	return (nbits + 63) / 64;
}

/*
 * The reserved tables of destroyed regions are kept, cleared, for the next
 * tables of the same size. On the VMs we measure on, the first access to a
 * page the process has never touched costs about 9 us beyond the kernel's
 * fault (the hypervisor fills in its own page table), and a copy of a
 * populated 1 GiB region writes 2 MiB of new table: 4.6 ms of the 4.8 ms its
 * snapshot took when nothing had changed. A checkpoint loop (snapshot,
 * destroy the previous one) then writes into pages it has touched before.
 * The cache holds at most TABLE_CACHE tables and TABLE_CACHE_BYTES of their
 * resident pages, and is emptied when the last region goes (ucow_idle).
 * Called with the global lock held, as the tables' init and free.
 */
#define TABLE_CACHE 4
#define TABLE_CACHE_BYTES ((size_t)32 << 20)

static struct {
	pte_t *pte;
	size_t bytes;    /* its pte_bytes */
	size_t resident; /* bytes of its pages in memory */
} table_cache[TABLE_CACHE];

static pte_t *table_cache_take(size_t bytes)
{
	for (int k = 0; k < TABLE_CACHE; k++)
		if (table_cache[k].pte && table_cache[k].bytes == bytes) {
			pte_t *pte = table_cache[k].pte;
			table_cache[k].pte = NULL;
			return pte;
		}
	return NULL;
}

static bool page_is_zero(const uint64_t *w, size_t words)
{
	for (size_t k = 0; k < words; k++)
		if (w[k])
			return false;
	return true;
}

/*
 * Clears the pages of a table that are in memory, and returns their bytes.
 * Pages never touched are not in memory, and read as zeros; a page only
 * read maps the zero page, which is left as it is.
 */
static size_t table_clear(pte_t *pte, size_t bytes)
{
	unsigned char vec[1024];
	size_t resident = 0, chunk = sizeof vec << os_page_shift;
	for (size_t off = 0; off < bytes; off += chunk) {
		size_t len = bytes - off < chunk ? bytes - off : chunk;
		char *base = (char *)pte + off;
		if (mincore(base, len, vec) != 0) {
			memset(base, 0, len); /* cannot tell: every page */
			resident += len;
			continue;
		}
		for (size_t p = 0; p < (len + os_page_size - 1) >> os_page_shift;
		     p++) {
			if (!(vec[p] & 1))
				continue;
			uint64_t *page = (uint64_t *)(base + (p << os_page_shift));
			resident += os_page_size;
			if (!page_is_zero(page, os_page_size / sizeof *page))
				memset(page, 0, os_page_size);
		}
	}
	return resident;
}

static void table_cache_put(pte_t *pte, size_t bytes)
{
	size_t held = 0;
	int free_slot = -1;
	for (int k = 0; k < TABLE_CACHE; k++) {
		if (table_cache[k].pte)
			held += table_cache[k].resident;
		else if (free_slot < 0)
			free_slot = k;
	}
	if (free_slot < 0) {
		os_release(pte, bytes);
		return;
	}
	size_t resident = table_clear(pte, bytes);
	if (held + resident > TABLE_CACHE_BYTES) {
		os_release(pte, bytes);
		return;
	}
	table_cache[free_slot].pte = pte;
	table_cache[free_slot].bytes = bytes;
	table_cache[free_slot].resident = resident;
}

void pgtable_cache_drop(void)
{
	for (int k = 0; k < TABLE_CACHE; k++) {
		os_release(table_cache[k].pte, table_cache[k].bytes);
		table_cache[k].pte = NULL;
	}
}

int pgtable_init(struct pgtable *pt, size_t npages)
{
	pt->npages = npages;
	pt->pte_bytes = npages * sizeof(pte_t);
	pt->nleaves = (npages + PTES_PER_LEAF - 1) >> PTE_LEAF_SHIFT;
	pt->pte_mapped = pt->pte_bytes > PGTABLE_MALLOC_MAX;
	if (!pt->pte_mapped)
		pt->pte = calloc(npages, sizeof(pte_t));
	else if (!(pt->pte = table_cache_take(pt->pte_bytes)))
		pt->pte = os_reserve(pt->pte_bytes);
	size_t words = bitmap_words(pt->nleaves);
	pt->used_leaves = calloc(words, sizeof(uint64_t));
	pt->write_leaves = calloc(words, sizeof(uint64_t));
	if (!pt->pte || !pt->used_leaves || !pt->write_leaves) {
		pgtable_free(pt);
		return -ENOMEM;
	}
	return 0;
}

void pgtable_free(struct pgtable *pt)
{
	if (pt->pte_mapped && pt->pte)
		table_cache_put(pt->pte, pt->pte_bytes);
	else if (!pt->pte_mapped)
		free(pt->pte);
	free(pt->used_leaves);
	free(pt->write_leaves);
	pt->pte = NULL;
	pt->used_leaves = pt->write_leaves = NULL;
}

/*
 * A copy writes the ptes of every leaf its source uses into a table that is
 * still untouched memory: a page fault per table page (one leaf per 4 KiB
 * page). Asking the kernel for them first, one call per run of leaves, cost
 * 0.4 ms less per populated GiB here. The copy's table then counts those
 * leaves as used, as the memory is.
 */
void pgtable_prefault(struct pgtable *pt, const struct pgtable *src)
{
	memcpy(pt->used_leaves, src->used_leaves,
	       bitmap_words(pt->nleaves) * sizeof(uint64_t));
#ifdef MADV_POPULATE_WRITE
	if (!pt->pte_mapped)
		return;
	const uint64_t *used = pt->used_leaves;
	uintptr_t mask = os_page_size - 1;
	for (size_t l = leaf_next(used, pt->nleaves, 0); l < pt->nleaves;) {
		size_t e = l + 1;
		while (e < pt->nleaves && leaf_next(used, pt->nleaves, e) == e)
			e++;
		size_t last = e << PTE_LEAF_SHIFT < pt->npages
				      ? e << PTE_LEAF_SHIFT : pt->npages;
		uintptr_t lo = (uintptr_t)&pt->pte[l << PTE_LEAF_SHIFT] & ~mask;
		uintptr_t hi = ((uintptr_t)&pt->pte[last] + mask) & ~mask;
		madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
		l = leaf_next(used, pt->nleaves, e);
	}
#endif
}

/* Bytes of table actually allocated: leaves in use for a reserved table. */
size_t pgtable_bytes(const struct pgtable *pt)
{
	size_t bytes = 2 * bitmap_words(pt->nleaves) * sizeof(uint64_t);
	if (!pt->pte_mapped)
		return bytes + pt->pte_bytes;
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1))
		bytes += PTES_PER_LEAF * sizeof(pte_t);
	return bytes;
}

/*
 * The per-page lock of the fault path: a bit in the pte, taken with a
 * compare-and-swap. It is only ever held for the few system calls of one
 * fault, never while the holder could wait for anything else. Taken
 * sequentially consistent: a fault then looks at its neighbours' locks
 * (vma_note_neighbours).
 */
pte_t pte_lock(struct pgtable *pt, size_t i)
{
	pte_t *p = &pt->pte[i];
	for (unsigned spins = 0;; spins++) {
		pte_t old = LOAD_RELAXED(p);
		if (!(old & PTE_LOCK) &&
		    __atomic_compare_exchange_n(p, &old, old | PTE_LOCK, false,
						__ATOMIC_SEQ_CST,
						__ATOMIC_RELAXED))
			return old;
		if (spins > 64)
			sched_yield();
	}
}

bool pte_trylock(struct pgtable *pt, size_t i, pte_t *old)
{
	pte_t v = LOAD_RELAXED(&pt->pte[i]);
	if (v & PTE_LOCK)
		return false;
	if (!__atomic_compare_exchange_n(&pt->pte[i], &v, v | PTE_LOCK, false,
					 __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return false;
	*old = v;
	return true;
}

/* Marks page i's leaf where its pte goes from old to val. */
static void leaf_marks(struct pgtable *pt, size_t i, pte_t val)
{
	pte_t old = LOAD_RELAXED(&pt->pte[i]);
	if (pte_frame(val) != FRAME_NONE && pte_frame(old) == FRAME_NONE)
		leaf_mark(pt->used_leaves, i >> PTE_LEAF_SHIFT);
	if ((val & PTE_WRITE) && !(old & PTE_WRITE))
		leaf_mark(pt->write_leaves, i >> PTE_LEAF_SHIFT);
}

void pte_unlock(struct pgtable *pt, size_t i, pte_t val)
{
	leaf_marks(pt, i, val);
	STORE(&pt->pte[i], val & ~PTE_LOCK);
}

void pte_update_locked(struct pgtable *pt, size_t i, pte_t val)
{
	leaf_marks(pt, i, val);
	STORE(&pt->pte[i], val | PTE_LOCK);
}

void pte_set(struct pgtable *pt, size_t i, pte_t val)
{
	if (pte_frame(val) != FRAME_NONE)
		leaf_mark(pt->used_leaves, i >> PTE_LEAF_SHIFT);
	if (val & PTE_WRITE)
		leaf_mark(pt->write_leaves, i >> PTE_LEAF_SHIFT);
	STORE(&pt->pte[i], val);
}

void leaf_mark(uint64_t *map, size_t leaf)
{
	uint64_t bit = (uint64_t)1 << (leaf & 63);
	if (!(LOAD_RELAXED(&map[leaf / 64]) & bit))
		__atomic_fetch_or(&map[leaf / 64], bit, __ATOMIC_RELEASE);
}

size_t leaf_next(const uint64_t *map, size_t nleaves, size_t leaf)
{
	while (leaf < nleaves) {
		uint64_t w = LOAD(&map[leaf / 64]) >> (leaf & 63);
		if (w)
			return leaf + (size_t)__builtin_ctzll(w) < nleaves
				       ? leaf + (size_t)__builtin_ctzll(w)
				       : nleaves;
		leaf = (leaf | 63) + 1;
	}
	return nleaves;
}

/*
 * An empty leaf (every pte zero, no fault running on the region): it stops
 * counting as used, and the pages of table that lie wholly within it are
 * given back (they read as zeros again, which is what they hold).
 */
void leaf_drop(struct pgtable *pt, size_t leaf)
{
	uint64_t bit = (uint64_t)1 << (leaf & 63);
	__atomic_fetch_and(&pt->used_leaves[leaf / 64], ~bit, __ATOMIC_RELEASE);
	if (!pt->pte_mapped)
		return;
	uintptr_t mask = os_page_size - 1;
	uintptr_t lo = ((uintptr_t)&pt->pte[leaf << PTE_LEAF_SHIFT] + mask) & ~mask;
	uintptr_t hi = (uintptr_t)&pt->pte[leaf_end(pt, leaf)] & ~mask;
	if (hi > lo)
		os_discard((void *)lo, hi - lo);
}

void leaf_clear_all(uint64_t *map, size_t nleaves)
{
	for (size_t w = 0; w < bitmap_words(nleaves); w++)
		STORE(&map[w], 0);
}

size_t leaf_end(const struct pgtable *pt, size_t leaf)
{
	size_t end = (leaf + 1) << PTE_LEAF_SHIFT;
	return end < pt->npages ? end : pt->npages;
}

size_t leaf_next_either(const struct pgtable *a, const struct pgtable *b,
			size_t leaf)
{
	size_t x = leaf_next(a->used_leaves, a->nleaves, leaf);
	size_t y = leaf_next(b->used_leaves, b->nleaves, leaf);
	return x < y ? x : y;
}
