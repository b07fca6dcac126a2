/*
 * The userfaultfd backend: pages of writable regions are mapped writable and
 * write-protected through userfaultfd (UFFDIO_REGISTER_MODE_WP), so a write
 * by the program *or by the kernel* (read(2) into a shared page, recv(2),
 * process_vm_writev(2), ...) stops the writer until a handler thread has
 * served it through the same do_wp_page() as the signal backend, then wakes
 * it. Only how faults arrive and how writers are released differ.
 *
 * A page remapped with mmap(MAP_FIXED) is a new mapping that userfaultfd does
 * not know, so every mapping made here is registered; a waiting writer is
 * woken with UFFDIO_WAKE, retries, and finds the new mapping.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Newer than the headers of some distributions (Linux 6.4). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

/* Write-protect of shmem (memfd) pages, and of pages never touched yet. */
#define UFFD_NEEDED (UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED)

/* Faults read from the descriptor at once: one wake-up serves them all. */
#define UFFD_BATCH 64

static int uffd = -1;
static int stop_fd = -1;
static pthread_t handler;
static bool handler_running;
static void *handler_stack;

/*
 * The handler's stack is ours, not from the C library's cache: a forked
 * child then never gives its own handler the vanished thread's stack (and
 * identity), which thread sanitizers would take for a thread started twice.
 */
#define HANDLER_STACK ((size_t)8 << 20) /* reserved; costs what it touches */

#define UFFD_FLAGS (O_CLOEXEC | O_NONBLOCK)

/*
 * /dev/userfaultfd, for where the system call is refused. *err becomes the
 * device's reason, unless the system call's says more: a resource that ran
 * out (EMFILE, ENOMEM), or a device that is not there.
 */
static int uffd_open_device(int *err)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		if (errno != ENOENT && (*err == EPERM || *err == ENOSYS))
			*err = errno;
		return -1;
	}
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, UFFD_FLAGS);
	if (fd < 0)
		*err = errno;
	close(dev);
	return fd;
}

static const char *uffd_reason(int err, char *buf, size_t len)
{
	if (err == EPERM || err == EACCES)
		return "no permission (vm.unprivileged_userfaultfd=0, no access "
		       "to /dev/userfaultfd, or a seccomp filter)";
	if (err == ENOSYS)
		return "the kernel has no userfaultfd";
	return strerror_r(err, buf, len);
}

/* Tries the system call, unprivileged user-mode-only, then the device. */
static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, UFFD_FLAGS);
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd,
				  UFFD_FLAGS | UFFD_USER_MODE_ONLY);
	if (fd >= 0)
		return fd;
	int err = errno;
	fd = uffd_open_device(&err);
	if (fd >= 0)
		return fd;
	char buf[128];
	os_write_error("userfaultfd backend unavailable",
		       uffd_reason(err, buf, sizeof buf), 0);
	return -err;
}

static int uffd_handshake(int fd)
{
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_NEEDED};
	if (ioctl(fd, UFFDIO_API, &api) == 0 &&
	    (api.features & UFFD_NEEDED) == UFFD_NEEDED)
		return 0;
	os_write_error("userfaultfd backend unavailable",
		       "the kernel lacks write-protect of shmem and of "
		       "unpopulated pages (Linux 6.4 or later needed)",
		       0);
	return -EOPNOTSUPP;
}

static void uffd_close(void)
{
	if (uffd >= 0)
		close(uffd);
	if (stop_fd >= 0)
		close(stop_fd);
	uffd = stop_fd = -1;
}

/* The descriptors: opened for the first region, closed after the last. */
static int uffd_open_all(void)
{
	int fd = uffd_open();
	if (fd < 0)
		return fd;
	uffd = fd;
	int err = uffd_handshake(fd);
	if (!err && (stop_fd = eventfd(0, EFD_CLOEXEC)) < 0)
		err = -errno;
	if (err)
		uffd_close();
	return err;
}

static void uffd_wake(uintptr_t addr)
{
	struct uffdio_range range = {.start = addr, .len = os_page_size};
	ioctl(uffd, UFFDIO_WAKE, &range);
}

static uintptr_t fault_page(const struct uffd_msg *msg)
{
	return (uintptr_t)msg->arg.pagefault.address &
	       ~(uintptr_t)(os_page_size - 1);
}

static bool seen_in_batch(const struct uffd_msg *msg, size_t k)
{
	for (size_t j = 0; j < k; j++)
		if (msg[j].event == UFFD_EVENT_PAGEFAULT &&
		    fault_page(&msg[j]) == fault_page(&msg[k]))
			return true;
	return false;
}

/*
 * Serves one batch of faults; a page that is not ours is just retried. The
 * messages of one batch were all pending at once, so several for one page
 * (several writers) are served by the first: serving a later one after the
 * writers resumed could copy a page that is shared again by then.
 */
static void serve(const struct uffd_msg *msg, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		if (msg[k].event != UFFD_EVENT_PAGEFAULT || seen_in_batch(msg, k))
			continue;
		if (msg[k].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
			handle_mm_fault(fault_page(&msg[k]));
		uffd_wake(fault_page(&msg[k]));
	}
}

/*
 * Reads and serves what is queued; false when nothing was. A queue that
 * cannot be read leaves every writer waiting for ever: say so and abort.
 */
static bool serve_pending(struct uffd_msg *msg)
{
	ssize_t got = read(uffd, msg, UFFD_BATCH * sizeof *msg);
	if (got < 0 && errno != EAGAIN && errno != EINTR) {
		os_write_error("cannot read the userfaultfd queue",
			       "the faults waiting on it cannot be served", 0);
		abort();
	}
	if (got <= 0)
		return false;
	serve(msg, (size_t)got / sizeof *msg);
	return true;
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * A writer moving through a region faults again a few microseconds after it
 * was woken. A handler asleep in poll() costs that writer two cross-CPU
 * wake-ups per fault (its own and the handler's); so after serving, the
 * handler keeps reading the queue for a while (hot_ns) before it sleeps
 * again. With one CPU to run on, or one CPU's worth of time (a cgroup's CPU
 * limit), the spin would only delay the writer: it is off then.
 * UCOW_UFFD_HOT_US sets the time (0 turns it off).
 */
#define HOT_US_DEFAULT 50
#define HOT_US_MAX 100000

static uint64_t hot_ns;
static bool stopping; /* stop_handler asks the spin to end now */

static uint64_t hot_time(void)
{
	long us = HOT_US_DEFAULT;
	os_env_long("UCOW_UFFD_HOT_US", 0, HOT_US_MAX,
		    "not a number of microseconds from 0 to 100000", &us);
	if (cpus_usable() < 2)
		return 0;
	return (uint64_t)us * 1000u;
}

static void serve_while_hot(struct uffd_msg *msg)
{
	uint64_t until = 0;
	while (!LOAD(&stopping)) {
		if (serve_pending(msg))
			until = now_ns() + hot_ns;
		else if (!hot_ns || now_ns() >= until)
			return;
	}
}

/*
 * Stopping (no region left) drains the queue first: a writer still waiting
 * on a destroyed region is woken, retries, and gets its SIGSEGV instead of
 * waiting for ever.
 */
static void *handler_main(void *arg)
{
	UNUSED(arg);
	struct uffd_msg msg[UFFD_BATCH];
	struct pollfd fds[2] = {{.fd = uffd, .events = POLLIN},
				{.fd = stop_fd, .events = POLLIN}};
	for (;;) {
		if (poll(fds, 2, -1) < 0)
			continue;
		if (fds[1].revents) {
			while (serve_pending(msg))
				;
			return NULL;
		}
		serve_while_hot(msg);
	}
}

/*
 * The handler thread runs while regions exist (global lock held). It takes
 * no signal: the program's handlers run on the program's threads.
 */
static int uffd_busy(void)
{
	if (handler_running)
		return 0;
	if (uffd < 0) {
		int err = uffd_open_all();
		if (err)
			return err;
	}
	pthread_attr_t attr;
	if (!handler_stack && !(handler_stack = os_reserve(HANDLER_STACK)))
		return -ENOMEM;
	int err = pthread_attr_init(&attr);
	if (!err)
		err = pthread_attr_setstack(&attr, handler_stack, HANDLER_STACK);
	sigset_t all, saved;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	if (!err)
		err = pthread_create(&handler, &attr, handler_main, NULL);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	pthread_attr_destroy(&attr);
	handler_running = !err;
	return -err;
}

static void release_stack(void)
{
	os_release(handler_stack, HANDLER_STACK);
	handler_stack = NULL;
}

/* Lets the handler finish its batch and stop: false if it runs on. */
static bool stop_handler(void)
{
	uint64_t n = 1;
	if (!handler_running)
		return true;
	STORE(&stopping, true);
	if (write(stop_fd, &n, sizeof n) != sizeof n) {
		STORE(&stopping, false);
		return false;
	}
	pthread_join(handler, NULL);
	STORE(&stopping, false);
	handler_running = false;
	release_stack();
	return true;
}

/*
 * No region is left: the thread stops and the descriptors are closed (no
 * range is registered any more); uffd_busy opens new ones for the next
 * region.
 */
static void uffd_idle(void)
{
	if (stop_handler())
		uffd_close();
}

/* At exit, with regions still alive: stop the handler cleanly. */
__attribute__((destructor)) static void uffd_shutdown(void)
{
	uffd_idle();
}

/* At the first region: whether the kernel has what the backend needs. */
static int uffd_init(void)
{
	int err = uffd_open_all();
	if (!err)
		hot_ns = hot_time();
	return err;
}

/* In a forked child: the parent's descriptor and thread are not ours. */
static void uffd_atfork_child(void)
{
	handler_running = false;
	release_stack();
	uffd_close();
}

static int uffd_register(void *addr, size_t size)
{
	struct uffdio_register reg = {
		.range = {.start = (uintptr_t)addr, .len = size},
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	return ioctl(uffd, UFFDIO_REGISTER, &reg) ? -errno : 0;
}

static int uffd_set_wp(void *addr, size_t size, __u64 mode)
{
	struct uffdio_writeprotect wp = {
		.range = {.start = (uintptr_t)addr, .len = size},
		.mode = mode,
	};
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

static int uffd_wrprotect(void *addr, size_t size)
{
	return uffd_set_wp(addr, size, UFFDIO_WRITEPROTECT_MODE_WP);
}

/*
 * Clearing the protection would also wake the writers waiting on the range,
 * before the fault is complete (pte and counters not updated yet). Every
 * waiter has a message queued: serve() wakes it once its fault is done.
 */
static int uffd_make_writable(void *addr, size_t size)
{
	return uffd_set_wp(addr, size, UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
}

/*
 * A new mapping is not watched by uffd until it is registered, and a store
 * from another thread in that moment would land unseen: in a frame other
 * regions map, or in a zero page the table does not know was written. So a
 * protected mapping of a live region is made read-only for the MMU,
 * registered and write-protected, and only then writable (uffd's
 * protection outlives mprotect). A store in that moment gets SIGSEGV
 * instead: only a program that writes a region while it is reverted, or a
 * restore after a failed map in a fault, can meet it. A region being made
 * is out of the program's reach and skips the extra call (over a new
 * 64 GiB region it took 150 ms instead of 110 here). If a step fails the range is left inaccessible;
 * region_map_pages then maps it back as the table says.
 */
static int uffd_map_failed(void *addr, size_t size, int err)
{
	os_map_none(addr, size);
	return err;
}

static int uffd_protect_new(void *addr, size_t size, bool live, int err)
{
	if (!err)
		err = uffd_register(addr, size);
	if (!err)
		err = uffd_wrprotect(addr, size);
	if (!err && live)
		err = os_protect(addr, size, true);
	return err ? uffd_map_failed(addr, size, err) : 0;
}

/* Huge pages (THP) of x86-64 and arm64 with 4 KiB pages. */
#define THP_SIZE ((size_t)2 << 20)
/* Zero runs up to this size map the zero page (below one huge page, so
 * never the huge zero page, which would give the mapping an anon_vma). */
#define POPULATE_MAX ((size_t)1 << 20)

/*
 * The kernel gives a never-touched page that is written an anonymous page,
 * and its mapping an anon_vma, before it reports the write; mappings with
 * different anon_vmas never merge again, so zero pages that become
 * neighbours later would stay apart, unseen by the mapping estimate. Only a
 * new region's mapping may take an anon_vma of its own: it gets it at once
 * (a write, undone), before any split, so every piece split from it shares
 * that one. Any later mapping of zero pages, whether the region is live (a
 * revert to zeros, a restore) or still being made (a copy's zeros mapped
 * over its backdrop), starts with none and should never take its own: it
 * maps the kernel's zero page (a read of each; not for large runs, see
 * uffd_map_zero), so that a write is reported at once, as for any protected
 * page, and takes none; it gets the region's when it merges with a
 * neighbour that has it.
 */
static void give_anon_vma(void *addr, size_t size)
{
	*(volatile char *)addr = 0;
	/* Under THP=always the write took a whole huge page (regions start on
	 * 2 MiB boundaries): give all of it back, not one page of it. */
	os_discard(addr, size < THP_SIZE ? size : THP_SIZE);
}

/* A new region's pages: anonymous memory, writable, protected by uffd. */
static int uffd_map_region(void *addr, size_t size)
{
	int err = os_map_anon(addr, size, true);
	if (!err)
		give_anon_vma(addr, size);
	return uffd_protect_new(addr, size, false, err);
}

/*
 * Zero pages mapped into an existing region: the kernel's zero page, one
 * fault per page. Past POPULATE_MAX they are left as they are (a large hole
 * under a copy's backdrop took seconds to fill at 64 GiB): a write there
 * may leave a mapping the estimate does not count. Where a read maps no
 * zero page (os_zero_page_reads), it would give the mapping an anon_vma at
 * once: the pages are left unread, and merge with their neighbours when
 * they are registered.
 */
static int uffd_map_zero(void *addr, size_t size, bool live)
{
	int err = os_map_anon(addr, size, !live);
	if (!err && size <= POPULATE_MAX && os_zero_page_reads)
		os_populate_read(addr, size);
	return uffd_protect_new(addr, size, live, err);
}

/* A writable copy needs no protection, only the registration. */
static int uffd_map_frame(void *addr, size_t size, uint64_t off, bool writable,
			  bool live)
{
	bool rw = writable || !live;
	int err = os_map_file(addr, size, frames.memfd, off, rw, writable);
	if (!writable)
		return uffd_protect_new(addr, size, live, err);
	if (!err)
		err = uffd_register(addr, size);
	return err ? uffd_map_failed(addr, size, err) : 0;
}

const struct backend uffd_backend = {
	.name = "uffd",
	.init = uffd_init,
	.busy = uffd_busy,
	.idle = uffd_idle,
	.atfork_child = uffd_atfork_child,
	.map_region = uffd_map_region,
	.map_zero = uffd_map_zero,
	.map_frame = uffd_map_frame,
	.wrprotect = uffd_wrprotect,
	.make_writable = uffd_make_writable,
	/* UFFDIO_WRITEPROTECT walks every pte in its range: runs only. */
	.wp_gap = 0,
	.wp_splits = false,
	.plain_zero = false,
	.read_fault_around = false,
};
