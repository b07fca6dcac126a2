/*
 * Internal header of libucow: the data structures every part shares.
 *
 * Map of the library (one concept per file, as in mimalloc's src/):
 *   os.c          pages, mappings, signal masks, the global lock
 *   cpus.c        CPU time the process may use (affinity, cgroup limits)
 *   frame.c       the frame store: memfd, reference counts, homes
 *   pgtable.c     a region's page table (one pte per page)
 *   region.c      region slots, address lookup, create/destroy, fork
 *   memory.c      the write fault: do_wp_page, wp_page_copy, wp_page_reuse
 *   keep.c        the writer keeps its frame, its snapshots take the copy
 *   snapshot.c    clone and snapshot (copy_page_range's mirror)
 *   revert.c      revert: a region takes another's content
 *   backend.c     choice of fault backend, library initialisation
 *   fault_signal.c  the SIGSEGV backend (GNU libsigsegv)
 *   fault_uffd.c  the userfaultfd write-protect backend
 *   stats.c       counters
 *   vma.c         the mapping budget
 *   diff.c        where two regions differ
 */
#ifndef UCOW_INTERNAL_H
#define UCOW_INTERNAL_H

/* memfd_create, fallocate, MAP_* and pthread_sigmask are GNU/POSIX. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ucow.h"

#define UNUSED(x) ((void)(x))

/* Relaxed/acquire/release atomics on plain memory (mmap'd arrays). */
#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RELAXED(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE_RELAXED(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#define SUB(p, v) __atomic_sub_fetch((p), (v), __ATOMIC_SEQ_CST)
#define COUNT(p) __atomic_add_fetch((p), 1, __ATOMIC_RELAXED)

/* ---- os.c -------------------------------------------------------------- */

extern size_t os_page_size;  /* sysconf(_SC_PAGESIZE) */
/* Whether a read of untouched anonymous memory maps the kernel's zero page
 * (some kernels give each page read memory of its own, and its mapping an
 * anon_vma, which keeps it from merging with its neighbours again). */
extern bool os_zero_page_reads;
extern unsigned os_page_shift;

void os_init(void);
/* Reserves address space that costs memory only where it is touched. */
void *os_reserve(size_t size);
/* Reserves `size` bytes aligned to `align` (a power of two), PROT_NONE. */
void *os_reserve_aligned(size_t size, size_t align);
void os_release(void *addr, size_t size);
/*
 * A table reserved at its largest size and made accessible only as far as it
 * is used: the rest stays address space without access, which tools that
 * read every readable page (valgrind's leak check) pass over at no cost.
 * Commits and releases run in normal code, never on the fault path.
 */
struct os_table {
	char *base;
	size_t size;      /* bytes reserved */
	size_t committed; /* bytes accessible from base; only grows */
};
int os_table_reserve(struct os_table *t, size_t size);
/* Makes the first `bytes` accessible: 0 or a negative errno. */
int os_table_commit(struct os_table *t, size_t bytes);
void os_table_release(struct os_table *t);
/* Makes reserved pages accessible (any part of a table): 0 or -errno. */
int os_commit(void *addr, size_t size);
/* Gives the memory of a reserved range back; it reads as zeros again. */
void os_discard(void *addr, size_t size);
/* Replaces the range by anonymous memory: read-only zeros, or no access. */
int os_map_zero(void *addr, size_t size);
int os_map_none(void *addr, size_t size);
/* Maps what a read would (the kernel's zero page, for untouched anonymous
 * memory), now; best effort. */
void os_populate_read(void *addr, size_t size);
/* Private anonymous memory (the userfaultfd backend protects it itself). */
int os_map_anon(void *addr, size_t size, bool writable);
/* Maps frames [off, off + size) of the memfd at addr, shared. */
int os_map_file(void *addr, size_t size, int fd, uint64_t off, bool writable,
		bool populate);
int os_protect(void *addr, size_t size, bool writable);
/* Raw pwrite(2): bytes written or negative errno. */
int os_pwrite(int fd, const void *buf, size_t size, uint64_t off);
/* Frees [off, off + size) of a file: it reads as zeros again. */
void os_punch_hole(int fd, uint64_t off, size_t size);
/* Writes a message to stderr with write(2) only: async-signal-safe. */
void os_write_error(const char *a, const char *b, uintptr_t addr);
/*
 * A setting from the environment (normal code only): true and *out set when
 * `name` holds a whole number in [min, max]; false when it is unset or
 * empty, and when it is anything else, after one line on stderr:
 * "ucow: NAME ignored: what".
 */
bool os_env_long(const char *name, long min, long max, const char *what,
		 long *out);

/*
 * The asynchronous signals: all but SIGSEGV, SIGBUS, SIGILL, SIGFPE and
 * SIGTRAP, glibc's cancellation signal included (sigfillset leaves it out;
 * sigaction keeps it in an sa_mask). With asynchronous cancellation, that
 * signal unwinds the thread wherever it is: in a fault, or in normal code,
 * with a region's fault count raised or a pte locked, and every later copy
 * of the region, or fault on the page, would wait for ever.
 */
void os_async_signals(sigset_t *set);
/* Blocks the asynchronous signals for the calling thread; os_restore_signals
 * puts `saved` back (both with rt_sigprocmask itself: pthread_sigmask would
 * leave the cancellation signal out). */
void os_block_signals(sigset_t *saved);
void os_restore_signals(const sigset_t *saved);
/*
 * The global lock serialises every operation that changes regions or homes.
 * The fault path never takes it. Taking it blocks asynchronous signals, so
 * that a program's signal handler that writes a region cannot interrupt a
 * thread that holds it (and wait for it forever). It also disables
 * cancellation until ucow_unlock (which restores the thread's state): a
 * thread cancelled while it held the lock, at a cancellation point under it
 * (write(2), pthread_join, fopen) or anywhere with asynchronous
 * cancellation, would leave it held, and every later call would wait. A
 * cancel requested meanwhile is acted on once the lock is given back: at
 * once if asynchronous (its signal was held back), else at the thread's
 * next cancellation point.
 */
void ucow_lock(sigset_t *saved);
void ucow_unlock(const sigset_t *saved);
/* Registers fork() handlers (when the library is loaded): `child` runs in
 * the child with the lock held. */
void ucow_atfork_init(void (*child)(void));

/* ---- cpus.c ------------------------------------------------------------ */

/*
 * CPUs' worth of time the process may use at once: its affinity, bounded by
 * the CPU limits of its cgroup and the cgroups above it. At least 1.
 */
unsigned cpus_usable(void);
/*
 * The tightest cgroup CPU limit, in whole CPUs (at least 1), with the
 * process's mounts and cgroups read from these files (/proc/self/mountinfo,
 * /proc/self/cgroup); 0 if there is none.
 */
unsigned cgroup_cpu_limit(const char *mountinfo, const char *cgroup);

/* ---- frame.c ------------------------------------------------------------ */

/*
 * A frame is one page of the memfd, numbered by its offset / page size; its
 * reference count is the number of region ptes that map it (the userspace
 * struct page). Frame 0 is never used: a pte of frame 0 is the zero page.
 *
 * Every writable region owns a *home*: frame numbers, one per page, where its
 * private copies go (page i is copied into home_frame(r, i)). They come in
 * blocks of FRAME_BLOCK, one run of blocks when the pool has one, so that
 * neighbouring private pages map neighbouring offsets and merge into one
 * kernel mapping. A home is private to its region: when the region's frames
 * become shared (clone, snapshot, revert from it) the home is retired and the
 * region gets a new one, so home_frame(r, i) is always free when page i
 * needs a copy and the fault path needs no allocator. A retired home's
 * blocks return to the pool one by one, as soon as every frame in a block
 * has been freed: a region that keeps a few frames of each home it had (a
 * checkpoint loop: snapshot, write a little, snapshot) holds a few blocks of
 * numbers per home, not the whole home.
 *
 * A snapshot of a writable region has a home too, for the copies its source
 * gives it (keep.c). It stays: a copy of page i goes to home + i of the
 * newest snapshot that shares the page, whose pte i then maps it for good
 * (older snapshots that shared the page map the same copy; only a revert
 * that heals, revert.c, takes it back, and frees it). So home + i is free
 * whenever pte i maps another frame.
 */
typedef uint32_t frame_t;
#define FRAME_NONE ((frame_t)0)

struct frame_store {
	int memfd;
	frame_t nframes;        /* size of the frame number space */
	uint32_t *refcount;     /* [nframes], reserved, touched where used */
	uint32_t *block_live;   /* frames in use per block of FRAME_BLOCK */
	uint64_t frames_in_use;
	uint64_t faults;
	uint64_t foreign_faults;
};
extern struct frame_store frames;

#define FRAME_BLOCK_SHIFT 9 /* homes are allocated in blocks of 512 frames */
#define FRAME_BLOCK ((frame_t)1 << FRAME_BLOCK_SHIFT)

int frame_store_init(void);
/* In a forked child: forget the parent's store (its frames are not ours). */
void frame_store_forget(void);
/* When the last region is gone (global lock held): closes the memfd;
 * frame_store_init() makes a new store for the next region. */
void frame_store_idle(void);

/* Homes (called with the global lock held): an array of block bases,
 * one per FRAME_BLOCK pages. home_retire frees it and sets *home NULL. */
int home_alloc(size_t npages, frame_t **home);
static inline size_t home_blocks(size_t npages)
{
	return (npages + FRAME_BLOCK - 1) >> FRAME_BLOCK_SHIFT;
}
void home_retire(frame_t **home, size_t npages);

static inline uint64_t frame_offset(frame_t f)
{
	return (uint64_t)f << os_page_shift;
}

static inline uint32_t frame_count(frame_t f)
{
	return LOAD(&frames.refcount[f]);
}

/* Takes a reference to a frame that is in use (count > 0). */
void frame_get(frame_t f);
/* Takes the first reference to a free frame (count 0 -> 1). */
void frame_get_new(frame_t f);
/* Drops a reference; the last one gives the page back. Async-signal-safe. */
void frame_put(frame_t f);
/* Drops references within one operation; the batch frees runs at once. */
struct frame_batch {
	frame_t start, n;
};
void frame_put_batched(frame_t f, struct frame_batch *b);
void frame_batch_flush(struct frame_batch *b);
/* Reads the failpoints from the environment value (see frame.c). */
void frame_failpoints_init(const char *fill);
/* Copies len bytes (whole pages) from readable memory into frames f, f+1... */
int frame_fill(frame_t f, const void *src, size_t len);

/* ---- pgtable.c ---------------------------------------------------------- */

/*
 * A pte: frame number in the low 32 bits, and flags. PTE_WRITE means the page
 * is mapped writable now (no fault on write); PTE_LOCK serialises faults on
 * one page; PTE_RESTORED says that the frame was given another frame's bytes
 * (an in-place revert), so a different frame need not mean different bytes
 * (ucow_diff compares such pages). Pages are grouped in leaves of PTES_PER_LEAF; per-leaf bitmaps say
 * which leaves have any frame (so clone and revert skip empty ones) and which
 * had a page made writable since the last write-protect (so a snapshot
 * costs what changed).
 */
typedef uint64_t pte_t;
#define PTE_FRAME_MASK ((pte_t)0xffffffffu)
#define PTE_RESTORED ((pte_t)1 << 61)
#define PTE_WRITE ((pte_t)1 << 62)
#define PTE_LOCK ((pte_t)1 << 63)
#define PTE_LEAF_SHIFT 9
#define PTES_PER_LEAF ((size_t)1 << PTE_LEAF_SHIFT)

static inline frame_t pte_frame(pte_t p)
{
	return (frame_t)(p & PTE_FRAME_MASK);
}

struct pgtable {
	pte_t *pte;
	size_t npages;
	size_t pte_bytes;
	bool pte_mapped;        /* pte array from os_reserve, not calloc */
	uint64_t *used_leaves;  /* bit per leaf: some pte has a frame */
	uint64_t *write_leaves; /* bit per leaf: some pte was made writable */
	size_t nleaves;
};

int pgtable_init(struct pgtable *pt, size_t npages);
void pgtable_free(struct pgtable *pt);
/* Gives back the tables kept for reuse (global lock held, no region left). */
void pgtable_cache_drop(void);
size_t pgtable_bytes(const struct pgtable *pt);
/* Before copying src into pt (new, empty): pt uses src's leaves, their
 * table pages faulted in at once. */
void pgtable_prefault(struct pgtable *pt, const struct pgtable *src);
pte_t pte_lock(struct pgtable *pt, size_t i);
/* Takes the lock only if it is free: true and *old set, or false. */
bool pte_trylock(struct pgtable *pt, size_t i, pte_t *old);
void pte_unlock(struct pgtable *pt, size_t i, pte_t val);
/* Changes a pte its caller holds locked, keeping it locked (the leaf is
 * marked as pte_unlock marks it). */
void pte_update_locked(struct pgtable *pt, size_t i, pte_t val);
/* Sets a pte outside the fault path (no fault can run on the region). */
void pte_set(struct pgtable *pt, size_t i, pte_t val);
static inline pte_t pte_read(const struct pgtable *pt, size_t i)
{
	return LOAD(&pt->pte[i]) & ~PTE_LOCK;
}
void leaf_mark(uint64_t *map, size_t i);
/* Next leaf >= leaf whose bit is set in map, or nleaves. */
size_t leaf_next(const uint64_t *map, size_t nleaves, size_t leaf);
void leaf_clear_all(uint64_t *map, size_t nleaves);
/* An empty leaf of pt (no fault runs on its region): no longer used, its
 * table memory given back. */
void leaf_drop(struct pgtable *pt, size_t leaf);
/* One past the last page of a leaf. */
size_t leaf_end(const struct pgtable *pt, size_t leaf);
/* Next leaf >= leaf used in a or in b (tables of the same size). */
size_t leaf_next_either(const struct pgtable *a, const struct pgtable *b,
			size_t leaf);

/* ---- region.c ----------------------------------------------------------- */

enum region_state {
	REGION_FREE = 0,
	REGION_LIVE,
	REGION_DYING,
	REGION_ORPHAN, /* inherited across fork(): dead in the child */
};

struct ucow_region {
	/*
	 * Kept when a slot is reused: a stale fault may still count itself in
	 * `active` for a moment. `active` counts faults in progress; wp_seq is
	 * odd while a clone, snapshot or revert holds the region (the mirror
	 * of the kernel's mmap_lock taken for writing by fork()).
	 */
	uint32_t state;
	uint32_t active;
	uint32_t wp_seq;

	/* Reset when a slot is reused. */
	bool readonly;          /* a snapshot */
	uintptr_t base;
	size_t size;            /* bytes, whole pages */
	size_t npages;
	size_t va_size;         /* reserved address space, whole chunks */
	frame_t *home;          /* where private copies go; for a snapshot of
				   a writable region, where the copies its
				   source gives it go (keep.c) */
	/*
	 * The chain of a writable region's snapshots (keep.c), newest first:
	 * snap, then each one's prev_snap. Changed under the global lock; the
	 * fault path reads snap and prev_snap without it, and checks what it
	 * finds (a slot read a moment before its region was destroyed may
	 * hold another region by now).
	 */
	ucow_region *snap;      /* the latest live snapshot taken of it */
	ucow_region *prev_snap; /* for a snapshot: the next older one */
	ucow_region *next_snap; /* for a snapshot: the next newer one */
	ucow_region *source;    /* for a snapshot in a chain: its region */
	struct pgtable pt;
	long mappings;          /* estimate of its kernel mappings */
	bool vma_drift;         /* neighbouring faults overlapped (vma.c) */
	bool wp_unsure;         /* a page the table says writable may still be
				   protected: a make_writable failed */
	uint64_t cow_copies;
	uint64_t cow_reuses;
	uint64_t cow_kept;      /* faults that kept the frame (keep.c) */
	uint64_t zero_fills;
	uint64_t coalesced;     /* pages made private by coalescing */
	uint64_t fault_around;  /* pages copied ahead by sequential faults */
	size_t next_fault;      /* page after the last fault served */
	size_t last_run;        /* pages the last fault served */
};

#define REGION_CHUNK_SHIFT 21 /* regions own whole 2 MiB chunks of VA */

int region_table_init(void);
size_t region_count(void);
/*
 * Handle checks for public calls: 0, -EINVAL (NULL), -EBADF (not a handle, or
 * destroyed), -ECHILD (inherited across fork()).
 */
int region_check(const ucow_region *r);
/* Allocates a region of npages with a fresh home (global lock held). */
ucow_region *region_new(size_t npages, bool readonly, int *err);
/* Frees a region that is not (or no longer) published (global lock held). */
void region_abandon(ucow_region *r);
/* Makes a region visible to the fault path (global lock held). */
void region_publish(ucow_region *r);
/*
 * Fault path: the region containing addr with a fault reference taken
 * (region_fault_exit() drops it), or NULL. Async-signal-safe.
 */
ucow_region *region_fault_enter(uintptr_t addr);
void region_fault_exit(ucow_region *r);
/*
 * Takes a fault reference on r itself, without waiting: false if r is not
 * live or is held. For a fault that already holds a reference on another
 * region, which must never wait for a holder (a revert holds two).
 */
bool region_fault_tryenter(ucow_region *r);
/* Normal code: the region containing addr, or NULL. Caller holds the lock. */
ucow_region *region_find(uintptr_t addr);
/* Waits until no fault runs on r and new ones wait (global lock held). */
void region_hold(ucow_region *r);
void region_release(ucow_region *r);
/* fork(): disowns every region in the child (global lock held). */
void region_atfork_child(void);

static inline void *page_addr(const ucow_region *r, size_t i)
{
	return (void *)(r->base + (i << os_page_shift));
}

/* Where r's private copy of page i goes (r has a home). */
static inline frame_t home_frame(const ucow_region *r, size_t i)
{
	return r->home[i >> FRAME_BLOCK_SHIFT] +
	       (frame_t)(i & (FRAME_BLOCK - 1));
}

/* Whether pages [i, i + n) have neighbouring home frames (one run). */
static inline bool home_contiguous(const ucow_region *r, size_t i, size_t n)
{
	return home_frame(r, i + n - 1) == home_frame(r, i) + (frame_t)(n - 1);
}

/* ---- vma.c -------------------------------------------------------------- */

struct vma_budget {
	long budget;  /* ucow's share: half of vm.max_map_count, or less */
	long in_use;  /* estimate over all regions */
};
extern struct vma_budget vmas;

/* Pages per coalescing window: a fault near the budget maps this many. */
#define VMA_WINDOW_SHIFT 6

void vma_init(void);
/* Change in r's mappings if page i went from pte old to pte new. */
long vma_delta(const ucow_region *r, size_t i, pte_t old, pte_t new);
/* Mapping boundaries from page lo - 1 to page hi (inclusive). */
long vma_window(const ucow_region *r, size_t lo, size_t hi);
/*
 * The same at the start of a fault that holds pages [lo, hi) locked; it
 * notes (vma_drift) when a neighbour is locked by another fault, whose
 * count may overlap ours. vma_note_neighbours() only notes.
 */
long vma_window_held(ucow_region *r, size_t lo, size_t hi);
void vma_note_neighbours(ucow_region *r, size_t lo, size_t hi);
/* Recounts r, and the snapshots of its chain, where a fault noted drift
 * (r held: no fault runs on it; global lock held). */
void vma_resync(ucow_region *r);
/* The same for the snapshots from snap on, older ones through prev_snap,
 * once their writer's faults are over (a destroyed writer's chain). */
void vma_resync_chain(ucow_region *snap);
bool vma_over_budget(long delta);
/*
 * Whether a copy or a revert that adds `delta` mappings fits. Faults keep
 * ucow within its budget by coalescing (from 7/8 of it); a copy maps what
 * its source maps and has no such lever, and every region costs a mapping
 * or two (10,000 regions with a clone each pass half of the default
 * vm.max_map_count). So copies may go past the budget, but not past
 * vma_copy_limit(), twice the budget less an eighth of it (with the default
 * budget: 15/16 of vm.max_map_count): past it they fail (ENOMEM), rather
 * than bring the process to the kernel's limit, where a fault could no
 * longer map anything and the write would be lost.
 */
long vma_copy_limit(void);
bool vma_fits(long delta);
/*
 * Whether a fault may keep its frame for `snapshots` snapshots (keep.c):
 * each snapshot's page and the writer's split a mapping, twice what a copy
 * costs or more, so only while the mappings in use are under 3/8 of the
 * budget.
 */
bool vma_keep_fits(unsigned snapshots);
void vma_account(ucow_region *r, long delta);
/* Recomputes r's estimate from its page table (no fault may run on r). */
void vma_recount(ucow_region *r);

/* ---- snapshot.c: shared with revert.c (global lock held) ---------------- */

/* A run of pages to map with one system call: frames f0, f0+1, ... or zeros. */
struct map_run {
	ucow_region *r;
	size_t start, n;
	frame_t f0;
	int err;
	size_t mapped; /* pages mapped by the runs flushed so far */
	bool dry;      /* count the calls only, map nothing */
	size_t calls;  /* runs flushed so far */
};
void run_flush(struct map_run *run);
/* Whether page i, mapping frame f (or zeros), extends the pending run. */
bool run_continues(const struct map_run *run, size_t i, frame_t f);
/* Adds page i, to be mapped read-only from frame f (or zeros). */
void run_add(struct map_run *run, size_t i, frame_t f);
/* Adds pages [i, i + n), to be mapped as zeros. */
void run_add_zeros(struct map_run *run, size_t i, size_t n);
/*
 * Write-protects the pages of r made writable since the last call, so that
 * the next write to any of them faults. Costs what changed, not the size.
 * The caller holds r.
 */
int region_wrprotect(ucow_region *r);
/*
 * The source's frames are about to be shared: it needs a new home, since its
 * current one may now hold frames that other regions map. Prepare before
 * holding anything (it may allocate); commit once the frames are shared.
 */
int rehome_prepare(const ucow_region *src, frame_t **home);
void rehome_commit(ucow_region *src, frame_t **home);

/* ---- memory.c ----------------------------------------------------------- */

/*
 * Pages one fault may serve when a writer moves in sequence: FAULT_AROUND at
 * the first fault that follows the last one, then twice the previous run for
 * as long as the writer keeps in sequence, up to FAULT_AROUND_MAX (the
 * kernel's readahead grows its window the same way).
 */
#define FAULT_AROUND 16
#define FAULT_AROUND_MAX 64

/*
 * Locks the pages after page i (locked) that one fault may serve with it,
 * when the writer moves in sequence; `joins` says whether page j (locked,
 * pte) needs the same work, and locks what else it needs. The run stays
 * within one run of h's home frames, where its copies go. Pages in the run.
 */
size_t fault_around_lock(ucow_region *r, size_t i, const ucow_region *h,
			 bool (*joins)(void *ctx, size_t j, pte_t pte),
			 void *ctx);
/*
 * Takes the free frames [f, f + n), fills them from the pages at `from`
 * (unless NULL: they read as zeros) and maps them over pages [i, i + n) of
 * r; on failure gives them back.
 */
int copy_and_map(ucow_region *r, size_t i, size_t n, frame_t f,
		 const void *from, bool writable);

/*
 * The end of a fault that served pages [i, i + n) (ptes locked; `before`:
 * their vma_window when it began). Done (err 0): they are unlocked
 * writable, on their home frames if `copied`, else on their own frames,
 * and the mappings and the writer's position are accounted. Failed: they
 * are unlocked as the table says. Returns err.
 */
int fault_finish(ucow_region *r, size_t i, size_t n, bool copied, long before,
		 int err);

/* ---- keep.c ------------------------------------------------------------- */

/*
 * The writer keeps its frame (page i, pte locked): 0 or a negative errno
 * when kept, 1 when it does not apply (copy instead).
 */
int do_wp_page_keep(ucow_region *r, size_t i, pte_t pte, bool around);
/*
 * The chain (global lock held). chain_add links snap in as src's newest
 * (before snap is published; src->snap is set once it is); chain_remove
 * unlinks a snapshot being destroyed, so that the older ones stay in
 * reach; chain_detach empties a region's chain (its snapshots keep their
 * own links, and no longer name a source).
 */
void chain_add(ucow_region *src, ucow_region *snap);
void chain_remove(ucow_region *snap);
void chain_detach(ucow_region *src);

/*
 * Resolves a write fault on page i of r (the caller holds a fault reference).
 * 0 when the page is writable (or the access may be retried), or a negative
 * errno when no frame could be had. Shared by every backend and by unshare.
 * `around` allows fault-around (not for unshare, which is exact).
 */
int do_wp_page(ucow_region *r, size_t i, bool around);
/* Serves a copy-on-write fault at addr: 1 served, 0 not ours. */
int handle_mm_fault(uintptr_t addr);

/* ---- backend.c / fault_signal.c ----------------------------------------- */

/*
 * A fault backend: how write faults reach do_wp_page and how pages are
 * write-protected and released. Only these differ between backends.
 */
struct backend {
	const char *name;
	/* At the first region: 0, or a negative errno (reason on stderr). */
	int (*init)(void);
	/* Before each region is created, and when the last one is gone: the
	 * uffd backend runs its handler thread, and holds its descriptors,
	 * only while regions exist. */
	int (*busy)(void);
	void (*idle)(void);
	/* In a forked child: forget the parent's fault machinery. */
	void (*atfork_child)(void);
	/*
	 * Mappings of a writable region's pages (a snapshot's are plain
	 * PROT_READ, and a write to one is the program's own fault): zero
	 * pages, frames read-only (a write faults to us) or writable. `live`:
	 * the program's threads may reach the range meanwhile (not a region
	 * being made).
	 */
	int (*map_zero)(void *addr, size_t size, bool live);
	/* A new region's pages, all zeros, before anything else is mapped in
	 * it (map_zero maps zero pages into a region that has a mapping). */
	int (*map_region)(void *addr, size_t size);
	int (*map_frame)(void *addr, size_t size, uint64_t off, bool writable,
			 bool live);
	int (*wrprotect)(void *addr, size_t size);
	int (*make_writable)(void *addr, size_t size);
	/*
	 * Most read-only pages between two writable runs that one wrprotect
	 * call may cover (when they hold few mappings); 0: one call per run.
	 */
	size_t wp_gap;
	/* Whether a page's protection splits kernel mappings (mprotect does;
	 * userfaultfd's write-protect marks ptes only). */
	bool wp_splits;
	/* Whether zero pages are plain read-only zeros, as past a region's end
	 * (userfaultfd's are registered with it). */
	bool plain_zero;
	/* Whether the kernel maps a run of pages around a read fault in its
	 * mappings (not in a userfaultfd-registered range: page by page). */
	bool read_fault_around;
};

extern const struct backend *ucow_backend_ops;
extern const struct backend signal_backend;
extern const struct backend uffd_backend;

/*
 * Maps pages [i, i + n) of r: frames f, f+1, ... or zeros if f is none. On
 * failure the pages are mapped as r's table says again (as far as possible),
 * so callers update the table only once the map has succeeded; except for a
 * new region (a copy being made), which is abandoned if a map fails.
 */
int region_map_pages(ucow_region *r, size_t i, size_t n, frame_t f,
		     bool writable);
/*
 * Makes pages [i, i + n) of r writable for the MMU (the backend's
 * make_writable). On failure r->wp_unsure is set until the next
 * region_wrprotect: code that writes pages the table says are writable
 * (an in-place revert) must not trust the table meanwhile.
 */
int region_make_writable(ucow_region *r, size_t i, size_t n);
/* Reads the failpoints from the environment values (see region.c). */
void region_failpoints_init(const char *map, const char *writable);

/* Initialises the library, until it succeeds once; 0 or negative errno. */
int ucow_init(void);
/* Before the first region: fault handler, frame store (global lock held). */
int ucow_start(void);
/* When the last region is destroyed (global lock held). */
void ucow_idle(void);

#endif /* UCOW_INTERNAL_H */
