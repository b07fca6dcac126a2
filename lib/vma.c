/*
 * The mapping budget. A process may hold at most vm.max_map_count kernel
 * mappings (VMAs), and a page remapped on its own can split one mapping in
 * three. ucow keeps an estimate of the mappings its regions use, from the
 * ptes: two neighbouring pages share a mapping when both are zero pages, or
 * when they map consecutive frames with the same protection (the kernel
 * merges those). ucow's share of the limit is half; near it, a fault makes a
 * whole window of pages private instead of one page (see memory.c).
 */
#include "internal.h"

#include <fcntl.h>
#include <unistd.h>

struct vma_budget vmas;

#define DEFAULT_MAX_MAP_COUNT 65530

static long read_max_map_count(void)
{
	char buf[32];
	int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return DEFAULT_MAX_MAP_COUNT;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return DEFAULT_MAX_MAP_COUNT;
	buf[n] = 0;
	long v = 0;
	for (char *p = buf; *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (*p - '0');
	return v > 0 ? v : DEFAULT_MAX_MAP_COUNT;
}

/*
 * UCOW_MAP_BUDGET=N lowers ucow's share, for a program that needs more of
 * the limit for itself (and for tests that must reach the budget quickly).
 * It cannot raise it: past the kernel's limit a remap would fail.
 */
#define MIN_BUDGET 64

void vma_init(void)
{
	long half = read_max_map_count() / 2;
	vmas.budget = half;
	os_env_long("UCOW_MAP_BUDGET", MIN_BUDGET, half,
		    "not a number of mappings from 64 to half of "
		    "vm.max_map_count",
		    &vmas.budget);
}

/* Do neighbouring pages with these ptes lie in one kernel mapping? */
static bool vma_joins(pte_t a, pte_t b)
{
	frame_t fa = pte_frame(a), fb = pte_frame(b);
	if (fa == FRAME_NONE || fb == FRAME_NONE)
		return fa == fb;
	return fb == fa + 1 && (!ucow_backend_ops->wp_splits ||
				(a & PTE_WRITE) == (b & PTE_WRITE));
}

/*
 * Past its last page, a region's 2 MiB chunk holds plain read-only zeros
 * (region.c): one more mapping, unless the last page is plain zeros too (a
 * zero page of a snapshot, or of any region under a backend whose zero pages
 * are plain; userfaultfd's are registered, and never merge with it).
 */
static long tail_boundary(const ucow_region *r, pte_t last)
{
	bool joins = r->va_size == r->size ||
		     (pte_frame(last) == FRAME_NONE &&
		      (r->readonly || ucow_backend_ops->plain_zero));
	return joins ? 0 : 1;
}

/* Mapping boundaries around page i if it held `mid` (lock bits ignored). */
static long boundaries_at(const ucow_region *r, size_t i, pte_t mid)
{
	long n = 0;
	if (i > 0 && !vma_joins(pte_read(&r->pt, i - 1), mid))
		n++;
	if (i + 1 < r->npages && !vma_joins(mid, pte_read(&r->pt, i + 1)))
		n++;
	if (i + 1 == r->npages)
		n += tail_boundary(r, mid);
	return n;
}

long vma_delta(const ucow_region *r, size_t i, pte_t old, pte_t new)
{
	return boundaries_at(r, i, new) - boundaries_at(r, i, old);
}

long vma_window(const ucow_region *r, size_t lo, size_t hi)
{
	long n = 0;
	size_t from = lo > 0 ? lo - 1 : 0;
	size_t to = hi < r->npages ? hi : r->npages - 1;
	for (size_t i = from; i < to; i++)
		if (!vma_joins(pte_read(&r->pt, i), pte_read(&r->pt, i + 1)))
			n++;
	if (hi >= r->npages)
		n += tail_boundary(r, pte_read(&r->pt, r->npages - 1));
	return n;
}

/*
 * Two faults on neighbouring pages of one region may both count the mapping
 * boundary between them, or neither: the estimate may drift. A fault that
 * finds a page beside its own locked marks the region, and the next copy
 * or revert that holds it recounts it. A fault counts its window again
 * before it unlocks (fault_finish), so of two faults on neighbouring pages
 * that overlap in time the later one finds the other's lock. The look is
 * sequentially consistent, as the lock itself (pte_lock): of two faults
 * that each lock their page and then look at the other's, one sees the
 * other's lock (a store then a load, which weaker orders may reorder).
 */
static bool pte_locked(const struct pgtable *pt, size_t i)
{
	return __atomic_load_n(&pt->pte[i], __ATOMIC_SEQ_CST) & PTE_LOCK;
}

void vma_note_neighbours(ucow_region *r, size_t lo, size_t hi)
{
	if (((lo > 0 && pte_locked(&r->pt, lo - 1)) ||
	     (hi < r->npages && pte_locked(&r->pt, hi))) &&
	    !LOAD_RELAXED(&r->vma_drift))
		STORE(&r->vma_drift, true);
}

long vma_window_held(ucow_region *r, size_t lo, size_t hi)
{
	vma_note_neighbours(r, lo, hi);
	return vma_window(r, lo, hi);
}

/*
 * A writer's keep faults also change its snapshots' tables (keep.c), and may
 * drift their counts: those are recounted with the writer's, while it is
 * held (no other fault changes them).
 */
void vma_resync(ucow_region *r)
{
	if (LOAD_RELAXED(&r->vma_drift))
		vma_recount(r);
	if (!r->readonly)
		vma_resync_chain(r->snap);
}

void vma_resync_chain(ucow_region *snap)
{
	for (ucow_region *s = snap; s; s = s->prev_snap)
		if (LOAD_RELAXED(&s->vma_drift))
			vma_recount(s);
}

bool vma_over_budget(long delta)
{
	long limit = vmas.budget - vmas.budget / 8;
	return delta > 0 && LOAD_RELAXED(&vmas.in_use) + delta > limit;
}

long vma_copy_limit(void)
{
	return 2 * vmas.budget - vmas.budget / 8;
}

bool vma_fits(long delta)
{
	return delta <= 0 ||
	       LOAD_RELAXED(&vmas.in_use) + delta <= vma_copy_limit();
}

/*
 * The snapshot's page splits a mapping, and the writer's too where making it
 * writable does: a kept page can cost twice a copied one. Keeping stops at
 * 3/8 of the budget, so that scattered writes still reach the coalescing
 * point (7/8) after 11/32 of the budget in pages, against 14/32 with copies
 * alone: 1% of 4 GiB written at random, 10,486 pages, fits either way.
 */
bool vma_keep_fits(unsigned snapshots)
{
	long splits = 2 * (long)snapshots + (ucow_backend_ops->wp_splits ? 2 : 0);
	return LOAD_RELAXED(&vmas.in_use) + splits <= vmas.budget / 8 * 3;
}

void vma_account(ucow_region *r, long delta)
{
	if (!delta)
		return;
	ADD(&r->mappings, delta);
	ADD(&vmas.in_use, delta);
}

static bool leaf_used(const struct pgtable *pt, size_t leaf)
{
	return leaf_next(pt->used_leaves, pt->nleaves, leaf) == leaf;
}

/*
 * Boundaries (i, i+1) that touch a used leaf: from the page before it (unless
 * the previous leaf is used and counted that one) to the page after it.
 */
static long count_leaf(const ucow_region *r, size_t leaf)
{
	size_t start = leaf << PTE_LEAF_SHIFT;
	size_t end = start + PTES_PER_LEAF < r->npages ? start + PTES_PER_LEAF
						       : r->npages;
	size_t lo = start > 0 && !leaf_used(&r->pt, leaf - 1) ? start - 1 : start;
	size_t hi = end < r->npages ? end : end - 1;
	long n = 0;
	for (size_t i = lo; i < hi; i++)
		if (!vma_joins(pte_read(&r->pt, i), pte_read(&r->pt, i + 1)))
			n++;
	return n;
}

void vma_recount(ucow_region *r)
{
	const struct pgtable *pt = &r->pt;
	long n = 1 + tail_boundary(r, pte_read(pt, r->npages - 1));
	for (size_t l = leaf_next(pt->used_leaves, pt->nleaves, 0);
	     l < pt->nleaves; l = leaf_next(pt->used_leaves, pt->nleaves, l + 1))
		n += count_leaf(r, l);
	vma_account(r, n - LOAD_RELAXED(&r->mappings));
	STORE(&r->vma_drift, false);
}
