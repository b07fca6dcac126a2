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
#include <sys/resource.h>
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

/* The arrays for n frames; those of an earlier store of that size are
 * still reserved (frame_store_idle keeps them). */
static int reserve_arrays(frame_t n)
{
	if (refcount_table.size == (size_t)n * sizeof(uint32_t))
		return 0;
	release_arrays();
	if (os_table_reserve(&refcount_table, (size_t)n * sizeof(uint32_t)) ||
	    os_table_reserve(&block_table, blocks_bytes(n))) {
		release_arrays();
		return -ENOMEM;
	}
	frames.refcount = (uint32_t *)refcount_table.base;
	frames.block_live = (uint32_t *)block_table.base;
	return 0;
}

/*
 * The largest frame space the file size limit (RLIMIT_FSIZE) lets the memfd
 * have. Sizing past it fails, and raises SIGXFSZ too, which the global lock
 * only holds back: it would kill the process at ucow_unlock.
 */
static unsigned max_frame_bits(void)
{
	struct rlimit lim;
	unsigned bits = MAX_FRAME_BITS;
	if (getrlimit(RLIMIT_FSIZE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY)
		return bits;
	while (bits >= MIN_FRAME_BITS &&
	       frame_offset((frame_t)1 << bits) > (uint64_t)lim.rlim_cur)
		bits--;
	return bits;
}

/*
 * The memfd is sized once to the whole frame number space: holes cost
 * nothing, and a fixed size means no fault can ever run past its end.
 * Smaller spaces are tried where address space is scarce (sanitizers), or
 * the file size limit is lower; below MIN_FRAME_BITS, -EFBIG.
 */
static int size_store(void)
{
	unsigned top = max_frame_bits();
	if (top < MIN_FRAME_BITS)
		return -EFBIG;
	for (unsigned bits = top; bits >= MIN_FRAME_BITS; bits--) {
		frame_t n = (frame_t)1 << bits;
		if (ftruncate(frames.memfd, (off_t)frame_offset(n)) != 0)
			continue;
		frames.nframes = n;
		if (reserve_arrays(n) == 0)
			return 0;
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

static void close_store(void)
{
	if (frames.memfd >= 0)
		close(frames.memfd);
	frames.memfd = -1;
	list_clear(&free_list);
	list_clear(&retired);
}

/*
 * Every frame is free and no fault can run: nothing needs the memfd, and a
 * program that destroyed all its regions gets its descriptor back (and
 * every page of the tables). The tables stay reserved for the next store,
 * and the fault counters go on counting.
 */
void frame_store_idle(void)
{
	close_store();
	os_discard(refcount_table.base, refcount_table.committed);
	os_discard(block_table.base, block_table.committed);
}

void frame_store_forget(void)
{
	close_store();
	release_arrays();
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

static bool block_dead(frame_t block)
{
	return LOAD(&frames.block_live[block]) == 0;
}

/* The reference counts of dead blocks are all zero: drop their pages. */
static void discard_counts(struct extent e)
{
	uintptr_t lo = (uintptr_t)&frames.refcount[e.start];
	uintptr_t hi = (uintptr_t)&frames.refcount[e.start + e.len];
	lo = (lo + os_page_size - 1) & ~(uintptr_t)(os_page_size - 1);
	hi &= ~(uintptr_t)(os_page_size - 1);
	if (hi > lo)
		os_discard((void *)lo, hi - lo);
}

/*
 * Retires the frame numbers of extent e (whole blocks): each run of blocks
 * whose frames are all free goes back to the pool now, each run that still
 * holds a live frame waits in `retired`. Returns the frames freed.
 */
static size_t retire_extent(struct extent e)
{
	size_t freed = 0;
	frame_t b = e.start >> FRAME_BLOCK_SHIFT;
	frame_t end = (e.start + e.len) >> FRAME_BLOCK_SHIFT;
	while (b < end) {
		bool dead = block_dead(b);
		frame_t run = b + 1;
		while (run < end && block_dead(run) == dead)
			run++;
		struct extent part = {b << FRAME_BLOCK_SHIFT,
				      (run - b) << FRAME_BLOCK_SHIFT};
		if (dead) {
			discard_counts(part);
			free_extent(part);
			freed += part.len;
		} else {
			/* On failure the numbers leak, never reused twice. */
			(void)list_insert(&retired, retired.n, part);
		}
		b = run;
	}
	return freed;
}

/* Gives back the blocks of retired homes whose frames are all free. */
static size_t reclaim_homes(void)
{
	struct extent_list old = retired;
	size_t got = 0;
	retired = (struct extent_list){0};
	for (size_t k = 0; k < old.n; k++)
		got += retire_extent(old.v[k]);
	list_clear(&old);
	return got;
}

/* Takes the first `len` numbers of free extent k (len <= its length). */
static frame_t extent_take(size_t k, frame_t len)
{
	struct extent *e = &free_list.v[k];
	frame_t start = e->start;
	e->start += len;
	e->len -= len;
	if (!e->len)
		list_remove(&free_list, k);
	return start;
}

/* Takes up to `want` free blocks from the first free extent, or false. */
static bool take_blocks(frame_t want, struct extent *got)
{
	if (!free_list.n)
		return false;
	frame_t len = (frame_t)(want << FRAME_BLOCK_SHIFT);
	if (len > free_list.v[0].len)
		len = free_list.v[0].len;
	*got = (struct extent){extent_take(0, len), len};
	return true;
}

/* Takes `nb` blocks in one run, first fit. */
static bool take_run(size_t nb, frame_t *start)
{
	frame_t len = (frame_t)(nb << FRAME_BLOCK_SHIFT);
	for (size_t k = 0; k < free_list.n; k++) {
		if (free_list.v[k].len >= len) {
			*start = extent_take(k, len);
			return true;
		}
	}
	return false;
}

static size_t free_blocks(void)
{
	size_t n = 0;
	for (size_t k = 0; k < free_list.n; k++)
		n += free_list.v[k].len >> FRAME_BLOCK_SHIFT;
	return n;
}

/*
 * The counts of a home's frames become accessible when the home is handed
 * out (numbers are taken lowest first, so the arrays grow with the peak of
 * frame numbers in use, not with the 2^31 the memfd allows).
 */
static int commit_counts(const frame_t *home, size_t nb)
{
	size_t end = 0;
	for (size_t k = 0; k < nb; k++)
		if ((size_t)home[k] + FRAME_BLOCK > end)
			end = (size_t)home[k] + FRAME_BLOCK;
	int err = os_table_commit(&refcount_table, end * sizeof(uint32_t));
	if (!err)
		err = os_table_commit(&block_table, blocks_bytes((frame_t)end));
	return err;
}

/* Gives the blocks of a home that was never used straight back. */
static void home_free_blocks(const frame_t *home, size_t nb)
{
	for (size_t k = 0; k < nb; k++)
		free_extent((struct extent){home[k], FRAME_BLOCK});
}

/*
 * Fills home[0, nb) with free blocks: one run if the pool has one (the
 * region's private pages then merge into one mapping all along), else the
 * lowest free blocks wherever they are.
 */
static bool home_take(frame_t *home, size_t nb)
{
	frame_t start;
	if (take_run(nb, &start)) {
		for (size_t k = 0; k < nb; k++)
			home[k] = start + (frame_t)(k << FRAME_BLOCK_SHIFT);
		return true;
	}
	if (free_blocks() < nb)
		return false;
	struct extent got;
	for (size_t k = 0; k < nb && take_blocks(nb - k, &got);)
		for (frame_t f = got.start; f < got.start + got.len; f += FRAME_BLOCK)
			home[k++] = f;
	return true;
}

int home_alloc(size_t npages, frame_t **home)
{
	size_t nb = home_blocks(npages);
	if (nb > (frames.nframes >> FRAME_BLOCK_SHIFT))
		return -ENOMEM;
	frame_t *h = malloc(nb * sizeof *h);
	if (!h)
		return -ENOMEM;
	if (!home_take(h, nb) && !(reclaim_homes() && home_take(h, nb))) {
		free(h);
		return -ENOMEM;
	}
	int err = commit_counts(h, nb);
	if (err) {
		home_free_blocks(h, nb);
		free(h);
		return err;
	}
	/* On failure *home is untouched: a caller that retires it retires
	 * nothing, never numbers that went back to the free list. */
	*home = h;
	return 0;
}

void home_retire(frame_t **home, size_t npages)
{
	frame_t *h = *home;
	if (!h)
		return;
	size_t nb = home_blocks(npages);
	for (size_t k = 0; k < nb;) {
		size_t run = k + 1;
		while (run < nb &&
		       h[run] == h[k] + (frame_t)((run - k) << FRAME_BLOCK_SHIFT))
			run++;
		retire_extent((struct extent){h[k],
					      (frame_t)((run - k) << FRAME_BLOCK_SHIFT)});
		k = run;
	}
	free(h);
	*home = NULL;
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
