/*
 * ucow: userspace, page-level copy-on-write memory regions.
 *
 * A region is a range of memory whose pages live in a frame store (a memfd).
 * Clones (writable) and snapshots (read-only) of a region share its frames;
 * the first write to a shared page is caught and the page is copied for the
 * writer, exactly as the kernel does after fork(), but per region.
 *
 * Conventions (as in libuv):
 *   - calls returning int give 0 (or a count) on success, a negative errno on
 *     failure; calls returning a pointer give NULL and set errno;
 *   - a refused call changes nothing;
 *   - handles are opaque; a destroyed handle is detected (-EBADF) until its
 *     slot is reused by a later region.
 *
 * Threads: every call may be made from any thread. Calls on different
 * regions run concurrently; calls that change one family of regions (clone,
 * snapshot, revert, destroy) are serialised. Other threads may keep writing
 * a region while it is cloned or snapshotted: the copy is a point-in-time
 * image. Destroying or reverting a region while another thread still accesses
 * it is a use-after-free in the program, as with munmap().
 *
 * fork(): regions are not inherited. In the child every region's address
 * range is left mapped PROT_NONE (an access is a SIGSEGV) and every inherited
 * handle reports -ECHILD; the child may create regions of its own. Only
 * fork() through the C library runs ucow's fork handler; a raw clone(2)
 * child shares the parent's frames. The frame store is close-on-exec.
 *
 * Signals: ucow installs a SIGSEGV handler (GNU libsigsegv) when the first
 * region is created. Faults that are not copy-on-write faults of a ucow region
 * (a write to a snapshot, a stray pointer) are passed to the SIGSEGV action the
 * program had installed before, or to the default action; a SIGSEGV sent by
 * kill(), raise() or sigqueue() is never taken for a fault. A program that
 * installs its own SIGSEGV handler afterwards must call ucow_handle_fault()
 * first from it. Under that backend a thread must not write a region's page
 * that may need a copy while it blocks SIGSEGV (the kernel kills a process
 * that faults with SIGSEGV blocked): see the README's rules.
 *
 * Cancellation: no call is a cancellation point, and a thread cancelled
 * during a call or a fault is cancelled once it ends.
 */
#ifndef UCOW_H
#define UCOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define UCOW_API __attribute__((visibility("default")))
#else
#define UCOW_API
#endif

/* An opaque handle to a region: a writable original, a clone or a snapshot. */
typedef struct ucow_region ucow_region;

/*
 * Creates a zero-filled, writable region of `size` bytes, rounded up to whole
 * pages. Pages never written cost no memory: they read as zeros.
 * Returns NULL with errno EINVAL (size 0 or too large), ENOMEM (no memory,
 * address space or region slot left), EMFILE/ENFILE (no memfd) or EFBIG
 * (the file size limit, RLIMIT_FSIZE, is below 2^20 pages: the frame
 * store's memfd is sized to fit under it, and never raises SIGXFSZ).
 * The first create starts the fault backend, which may fail too: EPERM,
 * ENOSYS or EOPNOTSUPP (no userfaultfd for the uffd backend), EBUSY (the
 * sigsegv backend, in a program that installed a GNU libsigsegv handler
 * itself), each after one line on stderr naming the reason.
 * A failed call leaves no thread or descriptor of ucow's behind when no
 * region exists.
 */
UCOW_API ucow_region *ucow_create(size_t size);

/*
 * Creates a writable copy of `src` (a region, clone or snapshot). The copy
 * shares every page with `src` until either side writes it. Cost grows with
 * the pages `src` maps, not with its size: a pass over them, and a system
 * call for each run of pages whose frames do not lie where most of src's do
 * (after scattered writes, one per page written since src was populated).
 * The copy takes about as many kernel mappings as src has (see
 * ucow_stats): faults keep ucow's mappings within its budget by coalescing,
 * a copy cannot, and one that would take them past twice the budget less an
 * eighth (15/16 of vm.max_map_count by default) fails with ENOMEM, so that
 * faults always have mappings left.
 * Returns NULL with errno EINVAL (NULL src), EBADF (destroyed handle),
 * ECHILD (handle inherited across fork) or ENOMEM (no memory, or no
 * mappings, as above); src's content is then unchanged.
 */
UCOW_API ucow_region *ucow_clone(ucow_region *src);

/*
 * Creates a read-only copy of `src`. A write to a snapshot is a genuine
 * SIGSEGV for the program, never a copy. Errors as ucow_clone().
 *
 * When src (writable) then writes a page that it shares with its snapshots
 * alone (found among its four latest live ones), src keeps the page where
 * it is and the snapshots take one copy (`cow_kept` in the stats): src's pages
 * stay in one mapping, so that the next snapshot of src costs what changed
 * since this one (a checkpoint loop: snapshot, write, snapshot, destroy the
 * oldest). A snapshot's content never changes; its kernel mappings do. Not
 * done for the snapshots src had when it was reverted to a snapshot (a
 * base rolled back to keeps its layout; snapshots taken after the revert
 * are served again), nor once ucow's mappings fill 3/8 of its budget. For
 * those copies a snapshot of a writable region reserves one frame number
 * per page (numbers, not memory: see the frame limit in the README).
 */
UCOW_API ucow_region *ucow_snapshot(ucow_region *src);

/*
 * Makes the content of `dst` equal to that of `src`, by sharing src's frames
 * (no data is copied): dst's own copies of the pages that differ are given
 * back, and its next write to any of them copies again. Cost grows with the
 * pages that differ (one remap per run of them). Where src is a snapshot of
 * dst and took a copy while dst kept its frame (see ucow_snapshot),
 * the frame takes src's bytes back instead and src maps it again: both get
 * the layout they had before.
 * Threads must not write `dst` during the call (their writes may be lost,
 * and under the uffd backend one that meets the moment a page is remapped
 * gets SIGSEGV, so that it can never reach a frame other regions map);
 * `src` may be read and written: dst takes its content as of the call.
 * Returns 0; -EINVAL (NULL handle, or sizes differ), -EBADF, -ECHILD,
 * -EPERM (dst is a snapshot), -ENOMEM (dst may then be partly reverted; or,
 * with dst unchanged, dst would take more mappings than remain for copies:
 * see ucow_clone).
 * Reverting a region to itself is 0.
 */
UCOW_API int ucow_revert(ucow_region *dst, const ucow_region *src);

/*
 * As ucow_revert(), but the pages that differ and that `dst` owns alone (it
 * wrote them since it last shared them) take src's bytes where they are, by
 * memcpy: no system call, and a page that was writable stays writable, so
 * writing it again costs no fault. Only pages dst shares are remapped to
 * src's frames. For loops that revert and dirty the same pages again
 * (fuzzing, speculation): each cycle costs a copy of those pages, not a
 * remap and a fault each.
 * The pages stay dst's own: memory stays as it was, the next in-place revert
 * copies them again even if they were not written since (cost grows with
 * the pages dst owns, not with those written since the last revert; a
 * ucow_revert() shares them again). ucow_diff() compares such pages byte
 * for byte: right after the call it reports no difference against src.
 * Same arguments, rules and errors as ucow_revert().
 */
UCOW_API int ucow_revert_in_place(ucow_region *dst, const ucow_region *src);

/*
 * Destroys a region. Other copies keep their content; frames that no copy
 * uses any more are given back to the system. NULL and a destroyed handle are
 * ignored. In a forked child, a handle inherited from the parent is released
 * (its address range unmapped) without touching the parent's memory.
 * Once the last region is destroyed, ucow holds no file descriptor and no
 * thread: the frame store's memfd is closed (and, under the uffd backend,
 * the userfaultfd, its eventfd and the handler thread are gone); the next
 * ucow_create() makes them again. The global fault counters go on.
 */
UCOW_API void ucow_destroy(ucow_region *r);

/* Base address of the region's memory; NULL for NULL or a dead handle. */
UCOW_API void *ucow_base(const ucow_region *r);

/* Size in bytes (a multiple of the page size); 0 for NULL or a dead handle. */
UCOW_API size_t ucow_size(const ucow_region *r);

/* 1 for a snapshot, 0 for a writable region, negative errno for a bad handle. */
UCOW_API int ucow_is_snapshot(const ucow_region *r);

/*
 * Breaks sharing for [addr, addr + len) now, so that a system call (read(2),
 * recv(2), ...) may write into it: under the signal backend the kernel's own
 * writes into a shared page fail with EFAULT instead of faulting.
 * The range must lie in one region; len 0 is 0. Content never changes.
 * Returns 0; -EFAULT (addr is outside every region), -EPERM (a snapshot),
 * -EINVAL (the range runs past the region's end), -ENOMEM (no frame left),
 * -ENOSPC or -EFBIG (the frame store's memfd could not take the copy: its
 * file system is full, or the process's file size limit is reached); on
 * an error, the pages before the failing one are unshared already, and a
 * call made again once memory is back finishes the job.
 * Asynchronous signals are held back on the calling thread while pages are
 * copied (a handler that wrote one of them would wait for the copy).
 */
UCOW_API int ucow_unshare(void *addr, size_t len);

/*
 * Called by ucow_diff() for each maximal run of differing pages, in address
 * order: `offset` and `length` are in bytes from the regions' bases (whole
 * pages). A non-zero return stops the walk and is returned by ucow_diff().
 */
typedef int (*ucow_diff_fn)(size_t offset, size_t length, void *arg);

/*
 * Reports where `a` and `b` (regions of the same size, typically of one
 * family: a region, its clones and snapshots) differ, from their page tables
 * alone: pages that map the same frame (or are both never written) are
 * equal; pages that map different frames are reported, even if their bytes
 * happen to be equal (no memcmp is done), except pages that
 * ucow_revert_in_place() gave another region's bytes: their frames say
 * nothing of their bytes, so those pages are compared byte for byte where
 * the frames differ (a page read, no more). The cost grows with the parts
 * of the tables in use, not with the size. For a stable answer no thread
 * should write `a` or `b` meanwhile (diff snapshots). The callback may call
 * ucow but must not destroy `a` or `b`.
 * Returns 0, the callback's non-zero value, -EINVAL (NULL argument, sizes
 * differ), -EBADF, -ECHILD.
 */
UCOW_API int ucow_diff(const ucow_region *a, const ucow_region *b,
		       ucow_diff_fn fn, void *arg);

struct ucow_stats {
	size_t pages;          /* pages in the region */
	size_t shared_pages;   /* pages whose frame another live region maps */
	size_t private_pages;  /* pages with a frame of their own */
	size_t zero_pages;     /* pages never written: no frame, read as zeros */
	size_t writable_pages; /* pages mapped writable now (no fault on write) */
	uint64_t cow_copies;   /* write faults that copied a shared page */
	uint64_t cow_reuses;   /* write faults that only made the page writable */
	uint64_t cow_kept;     /* write faults on a page shared with snapshots
				  of the region alone: the region kept its
				  frame (made writable in place) and the
				  snapshots took one copy */
	uint64_t zero_fills;   /* write faults that gave a never-written page a frame */
	uint64_t coalesced;    /* pages made private by coalescing (see below) */
	uint64_t fault_around; /* pages copied (or kept) ahead of a sequential
				  writer: a fault at the page after the
				  previous fault's last serves 16 pages that
				  need the same work (shared, or never
				  written), then twice the previous run while
				  the writer stays in sequence, up to 64 */
	size_t mappings;       /* kernel mappings (VMAs) the region uses, estimated */
	size_t metadata_bytes; /* bytes of the region's page table */
};

/*
 * Mapping budget: a process may hold at most vm.max_map_count mappings, and a
 * page remapped on its own can split one in three. ucow keeps its regions to
 * half of that limit: near it, a write fault makes the whole aligned window of
 * 64 pages around it private (copying the window's shared pages) and maps it
 * with one mapping. `coalesced` counts the pages that became private so.
 *
 * Fills *out with the region's counters. The page counts are a consistent
 * reading only while no other thread writes the region.
 * Returns 0; -EINVAL (NULL argument), -EBADF, -ECHILD.
 */
UCOW_API int ucow_stats(const ucow_region *r, struct ucow_stats *out);

/* Process-wide counters of the frame store. */
struct ucow_global_stats {
	size_t regions;        /* live regions, snapshots included */
	size_t frames;         /* frames in use (pages of memory held) */
	size_t frame_bytes;    /* frames * page size */
	uint64_t faults;       /* copy-on-write faults served */
	uint64_t foreign_faults; /* SIGSEGVs passed on to the program */
	size_t mappings;       /* kernel mappings of all regions, estimated */
	size_t mapping_budget; /* ucow's share: half of vm.max_map_count, or
				  less with UCOW_MAP_BUDGET=N (64 to that
				  half; read once, at the first call) */
};

/*
 * Fills *out. Returns 0; -EINVAL for NULL; -ENOMEM if ucow cannot start (as
 * for ucow_backend(): a first call starts it, which reads the budget).
 */
UCOW_API int ucow_global_stats(struct ucow_global_stats *out);

/*
 * Name of the fault backend in use:
 *   "sigsegv" (the default): write faults arrive as SIGSEGV (GNU libsigsegv)
 *       and are served on the faulting thread. The kernel's own writes into a
 *       shared page (read(2), recv(2), ...) fail with EFAULT: call
 *       ucow_unshare() first.
 *   "uffd": pages are write-protected with userfaultfd; a handler thread
 *       serves write faults, those of the kernel's own writes included, which
 *       then simply work. Needs Linux 6.4 or later and either privilege, or
 *       vm.unprivileged_userfaultfd=1, or access to /dev/userfaultfd. Where it
 *       cannot be had, the first ucow_create() fails (EPERM, ENOSYS or
 *       EOPNOTSUPP) after one line on stderr that names the reason: ucow
 *       never falls back silently to another backend. After serving faults
 *       the handler thread keeps polling for more for 50 microseconds before
 *       it sleeps (a writer that faults again soon then costs one wake-up,
 *       not two); UCOW_UFFD_HOT_US=N in the environment sets that time,
 *       0 to 100000, 0 for none (an invalid value: one line on stderr, the
 *       default kept; read once, when the backend starts). It is 0 when the
 *       creating thread's CPU affinity allows one CPU only, or when the
 *       process's cgroup, or one above it, limits it to less than two CPUs'
 *       worth of time (cgroup v2 cpu.max, v1 CFS quota).
 * The environment variable UCOW_BACKEND sets it; an unknown name makes
 * ucow_create() fail with EINVAL and this call return NULL (errno EINVAL)
 * until ucow_set_backend() names a known one. If ucow cannot start (its
 * tables need a few hundred MiB of address space, which RLIMIT_AS may
 * refuse), this call returns NULL with errno ENOMEM, as ucow_create() fails;
 * every call tries again, and works once the space is there.
 */
UCOW_API const char *ucow_backend(void);

/*
 * Chooses the backend ("sigsegv" or "uffd") before the first region is
 * created. Returns 0; -EINVAL (unknown name, "" or NULL); -EBUSY (regions
 * were created with another backend already).
 */
UCOW_API int ucow_set_backend(const char *name);

/*
 * For programs that install their own SIGSEGV handler after ucow: call this
 * first from the handler with the faulting address (siginfo->si_addr).
 * Returns 1 if ucow resolved the fault (return from the handler: the access
 * is retried), 0 if it is not ucow's (handle it as you would).
 * Async-signal-safe. The fault is served with the handler's signal mask:
 * include in its sa_mask every signal whose handler may write a region, or
 * such a handler, run in the middle of the fault, faults with SIGSEGV
 * blocked (and the process dies).
 */
UCOW_API int ucow_handle_fault(void *addr);

/*
 * When a write fault cannot be served (no memory for the copy, no mapping
 * left), the store cannot fail back to the program, and continuing would lose
 * the write. ucow then calls the handler set here with the faulting address
 * and a negative errno. It runs in the fault path (a signal handler, or the
 * uffd handler thread), so it must be async-signal-safe. It may free memory
 * and return, and the access is retried (and may fail again); or it may leave
 * (_exit, abort, siglongjmp under the signal backend). With no handler (NULL,
 * the default) ucow writes one line naming the address and the cause to
 * stderr and aborts. For tests, UCOW_FAILPOINT_FILL=N in the environment
 * makes the next N page copies fail with ENOMEM, UCOW_FAILPOINT_MAP=N
 * the first mapping of N pages or more of a region's pages (a window that a
 * fault coalesces near the mapping budget is 64 pages; a clone's or
 * snapshot's backdrop, see the README, spans most of the region), and
 * UCOW_FAILPOINT_MAP=N,K the K-th such mapping. The failed mapping leaves
 * the pages unmapped, as a failed mmap(MAP_FIXED) may; ucow maps them back
 * as they were. UCOW_FAILPOINT_WRITABLE=K makes the K-th call that makes
 * pages writable for the MMU fail with ENOMEM, leaving them protected.
 */
typedef void (*ucow_fault_error_fn)(void *addr, int error, void *arg);
UCOW_API void ucow_on_fault_error(ucow_fault_error_fn fn, void *arg);

/* The page size ucow works in (sysconf(_SC_PAGESIZE)). */
UCOW_API size_t ucow_page_size(void);

#ifdef __cplusplus
}
#endif

#endif /* UCOW_H */
