/*
 * The frame store: one memfd holds every page of every region (one file
 * descriptor for the whole process), a reference count per frame says how
 * many ptes map it, and homes hand out frame numbers to regions.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct frame_store frames = {.memfd = -1};

/* A run of free frame numbers, or a retired home, in whole blocks. */
struct extent {
	frame_t start;
	frame_t len;
};

struct extent_list {
	struct extent *v;
	size_t n, cap;
};

static struct extent_list free_list; /* sorted by start, coalesced */
static struct extent_list retired;   /* homes waiting for their frames */

#define MAX_FRAME_BITS 31
#define MIN_FRAME_BITS 20

static int list_insert(struct extent_list *l, size_t at, struct extent e)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct extent *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	for (size_t k = l->n; k > at; k--)
		l->v[k] = l->v[k - 1];
	l->v[at] = e;
	l->n++;
	return 0;
}

static void list_remove(struct extent_list *l, size_t at)
{
	for (size_t k = at + 1; k < l->n; k++)
		l->v[k - 1] = l->v[k];
	l->n--;
}

static void list_clear(struct extent_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

static size_t blocks_bytes(frame_t nframes)
{
	return ((size_t)nframes >> FRAME_BLOCK_SHIFT) * sizeof(uint32_t);
}

/* The arrays behind frames.refcount and frames.block_live. */
static struct os_table refcount_table, block_table;

static void release_arrays(void)
{
	os_table_release(&refcount_table);
	os_table_release(&block_table);
	frames.refcount = NULL;
	frames.block_live = NULL;
}

/*
 * The memfd is sized once to the whole frame number space: holes cost
 * nothing, and a fixed size means no fault can ever run past its end.
 * Smaller spaces are tried where address space is scarce (sanitizers).
 */
static int size_store(void)
{
	for (unsigned bits = MAX_FRAME_BITS; bits >= MIN_FRAME_BITS; bits--) {
		frame_t n = (frame_t)1 << bits;
		if (ftruncate(frames.memfd, (off_t)frame_offset(n)) != 0)
			continue;
		frames.nframes = n;
		if (os_table_reserve(&refcount_table,
				     (size_t)n * sizeof(uint32_t)) == 0 &&
		    os_table_reserve(&block_table, blocks_bytes(n)) == 0) {
			frames.refcount = (uint32_t *)refcount_table.base;
			frames.block_live = (uint32_t *)block_table.base;
			return 0;
		}
		release_arrays();
	}
	return -ENOMEM;
}

int frame_store_init(void)
{
	frames.memfd = memfd_create("ucow-frames", MFD_CLOEXEC);
	if (frames.memfd < 0)
		return -errno;
	int err = size_store();
	if (!err) {
		/* Block 0 stays unused: frame 0 means "the zero page". */
		struct extent all = {FRAME_BLOCK, frames.nframes - FRAME_BLOCK};
		err = list_insert(&free_list, 0, all);
	}
	if (err) {
		release_arrays();
		close(frames.memfd);
		frames.memfd = -1;
	}
	return err;
}

void frame_store_forget(void)
{
	if (frames.memfd >= 0)
		close(frames.memfd);
	frames.memfd = -1;
	release_arrays();
	list_clear(&free_list);
	list_clear(&retired);
	frames.frames_in_use = 0;
	frames.faults = 0;
	frames.foreign_faults = 0;
}

static void free_extent(struct extent e)
{
	size_t at = 0;
	while (at < free_list.n && free_list.v[at].start < e.start)
		at++;
	if (at > 0 && free_list.v[at - 1].start + free_list.v[at - 1].len ==
			      e.start) {
		free_list.v[at - 1].len += e.len;
		if (at < free_list.n &&
		    e.start + e.len == free_list.v[at].start) {
			free_list.v[at - 1].len += free_list.v[at].len;
			list_remove(&free_list, at);
		}
		return;
	}
	if (at < free_list.n && e.start + e.len == free_list.v[at].start) {
		free_list.v[at].start = e.start;
		free_list.v[at].len += e.len;
		return;
	}
	/* On allocation failure the numbers are leaked, never reused twice. */
	(void)list_insert(&free_list, at, e);
}

static bool extent_dead(struct extent e)
{
	for (frame_t b = e.start >> FRAME_BLOCK_SHIFT;
	     b < (e.start + e.len) >> FRAME_BLOCK_SHIFT; b++)
		if (LOAD(&frames.block_live[b]))
			return false;
	return true;
}

/* The reference counts of a dead home are all zero: drop their pages. */
static void discard_counts(struct extent e)
{
	uintptr_t lo = (uintptr_t)&frames.refcount[e.start];
	uintptr_t hi = (uintptr_t)&frames.refcount[e.start + e.len];
	lo = (lo + os_page_size - 1) & ~(uintptr_t)(os_page_size - 1);
	hi &= ~(uintptr_t)(os_page_size - 1);
	if (hi > lo)
		os_discard((void *)lo, hi - lo);
}

/* Returns the numbers of retired homes whose frames are all free. */
static size_t reclaim_homes(void)
{
	size_t got = 0;
	for (size_t k = 0; k < retired.n;) {
		struct extent e = retired.v[k];
		if (!extent_dead(e)) {
			k++;
			continue;
		}
		discard_counts(e);
		free_extent(e);
		list_remove(&retired, k);
		got += e.len;
	}
	return got;
}

static frame_t home_len(size_t npages)
{
	return (frame_t)((npages + FRAME_BLOCK - 1) & ~(size_t)(FRAME_BLOCK - 1));
}

static bool take_first_fit(frame_t len, frame_t *home)
{
	for (size_t k = 0; k < free_list.n; k++) {
		struct extent *e = &free_list.v[k];
		if (e->len < len)
			continue;
		*home = e->start;
		e->start += len;
		e->len -= len;
		if (!e->len)
			list_remove(&free_list, k);
		return true;
	}
	return false;
}

/*
 * The counts of a home's frames become accessible when the home is handed
 * out (homes are taken first fit, so the arrays grow with the peak of frame
 * numbers in use, not with the 2^31 the memfd allows).
 */
static int commit_counts(frame_t home, frame_t len)
{
	size_t end = (size_t)home + len;
	int err = os_table_commit(&refcount_table, end * sizeof(uint32_t));
	if (!err)
		err = os_table_commit(&block_table,
				      blocks_bytes((frame_t)end));
	if (err)
		free_extent((struct extent){home, len});
	return err;
}

int home_alloc(size_t npages, frame_t *home)
{
	if (npages > frames.nframes)
		return -ENOMEM;
	frame_t len = home_len(npages);
	frame_t got;
	if (!take_first_fit(len, &got) &&
	    !(reclaim_homes() && take_first_fit(len, &got)))
		return -ENOMEM;
	/* On failure *home is untouched: a caller that retires it retires
	 * nothing, never numbers that went back to the free list. */
	int err = commit_counts(got, len);
	if (!err)
		*home = got;
	return err;
}

void home_retire(frame_t home, size_t npages)
{
	if (home == FRAME_NONE)
		return;
	struct extent e = {home, home_len(npages)};
	if (extent_dead(e)) {
		discard_counts(e);
		free_extent(e);
		return;
	}
	if (list_insert(&retired, retired.n, e) != 0)
		return; /* leaked numbers, never reused while in use */
}

void frame_get(frame_t f)
{
	ADD(&frames.refcount[f], 1);
}

void frame_get_new(frame_t f)
{
	STORE(&frames.refcount[f], 1);
	ADD(&frames.block_live[f >> FRAME_BLOCK_SHIFT], 1);
	ADD(&frames.frames_in_use, 1);
}

void frame_put(frame_t f)
{
	if (SUB(&frames.refcount[f], 1) != 0)
		return;
	/* The last user is gone: give the memory back (and leave a hole,
	 * which reads as zeros when the number is used again). */
	os_punch_hole(frames.memfd, frame_offset(f), os_page_size);
	SUB(&frames.frames_in_use, 1);
	SUB(&frames.block_live[f >> FRAME_BLOCK_SHIFT], 1);
}

/*
 * Frames freed one after another by one operation (destroy, revert) are
 * often neighbours: punch them out of the memfd with one system call.
 */
void frame_put_batched(frame_t f, struct frame_batch *b)
{
	if (SUB(&frames.refcount[f], 1) != 0)
		return;
	if (b->n && f == b->start + b->n) {
		b->n++;
		return;
	}
	frame_batch_flush(b);
	b->start = f;
	b->n = 1;
}

void frame_batch_flush(struct frame_batch *b)
{
	if (!b->n)
		return;
	os_punch_hole(frames.memfd, frame_offset(b->start),
		      (size_t)b->n << os_page_shift);
	SUB(&frames.frames_in_use, b->n);
	for (frame_t f = b->start; f < b->start + b->n;) {
		frame_t block = f >> FRAME_BLOCK_SHIFT;
		frame_t end = (block + 1) << FRAME_BLOCK_SHIFT;
		frame_t upto = end < b->start + b->n ? end : b->start + b->n;
		SUB(&frames.block_live[block], upto - f);
		f = upto;
	}
	b->n = 0;
}

/*
 * A failpoint for tests of the failure path: the environment variable
 * UCOW_FAILPOINT_FILL=N makes the next N page copies fail with ENOMEM.
 */
static long failpoint_fill;

void frame_failpoints_init(const char *fill)
{
	failpoint_fill = fill ? strtol(fill, NULL, 10) : 0;
}

int frame_fill(frame_t f, const void *src, size_t len)
{
	if (LOAD_RELAXED(&failpoint_fill) > 0 &&
	    __atomic_sub_fetch(&failpoint_fill, 1, __ATOMIC_RELAXED) >= 0)
		return -ENOMEM;
	size_t done = 0;
	while (done < len) {
		int n = os_pwrite(frames.memfd, (const char *)src + done,
				  len - done, frame_offset(f) + done);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? n : -ENOSPC;
		done += (size_t)n;
	}
	return 0;
}
