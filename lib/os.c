/*
 * Operating-system primitives: the page size, address-space reservations,
 * mappings of frames, signal masks and the global lock.
 */
#include "internal.h"
#include <ctype.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

size_t os_page_size;
unsigned os_page_shift;
bool os_zero_page_reads;

static bool reads_map_zero_page(void);

void os_init(void)
{
	os_page_size = (size_t)sysconf(_SC_PAGESIZE);
	os_page_shift = (unsigned)__builtin_ctzl(os_page_size);
	os_zero_page_reads = reads_map_zero_page();
}

/*
 * ucow's tables are reserved large and used sparsely: a page of page table
 * per used leaf, a page of reference counts per used run of frames. Under
 * THP=always the first store in each 2 MiB would take a huge page: a 64 GiB
 * region and a clone with 1,000 pages written each held more than 64 MiB.
 */
static void no_huge_pages(void *p, size_t size)
{
	madvise(p, size, MADV_NOHUGEPAGE);
}

void *os_reserve(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	no_huge_pages(p, size);
	return p;
}

void *os_reserve_aligned(size_t size, size_t align)
{
	size_t span = size + align;
	char *p = mmap(NULL, span, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
	size_t head = start - (uintptr_t)p;
	if (head)
		munmap(p, head);
	if (span - head - size)
		munmap((char *)start + size, span - head - size);
	return (void *)start;
}

void os_release(void *addr, size_t size)
{
	if (addr)
		munmap(addr, size);
}

/* Commits grow by at least this much: fewer calls, one mapping each time. */
#define TABLE_COMMIT_MIN ((size_t)1 << 20)

int os_table_reserve(struct os_table *t, size_t size)
{
	void *p = mmap(NULL, size, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	*t = (struct os_table){0};
	if (p == MAP_FAILED)
		return -errno;
	no_huge_pages(p, size);
	t->base = p;
	t->size = size;
	return 0;
}

int os_table_commit(struct os_table *t, size_t bytes)
{
	if (bytes <= t->committed)
		return 0;
	if (bytes > t->size)
		return -ENOMEM;
	size_t want = bytes - t->committed;
	if (want < TABLE_COMMIT_MIN)
		want = TABLE_COMMIT_MIN;
	want = (want + os_page_size - 1) & ~(os_page_size - 1);
	if (want > t->size - t->committed)
		want = t->size - t->committed;
	if (mprotect(t->base + t->committed, want, PROT_READ | PROT_WRITE) != 0)
		return -errno;
	t->committed += want;
	return 0;
}

int os_commit(void *addr, size_t size)
{
	return mprotect(addr, size, PROT_READ | PROT_WRITE) ? -errno : 0;
}

void os_table_release(struct os_table *t)
{
	if (t->base)
		munmap(t->base, t->size);
	*t = (struct os_table){0};
}

void os_discard(void *addr, size_t size)
{
	madvise(addr, size, MADV_DONTNEED);
}

/*
 * Region memory is remapped with raw system calls. They are async-signal-safe
 * by nature, and they keep sanitizers' interceptors (which may take locks, and
 * which reset their shadow state for a range that other threads are already
 * writing through the new mapping) out of the fault path: the order between a
 * remap and a write that no longer faults is the kernel's, not a race.
 */
static int sys_mmap(void *addr, size_t size, int prot, int flags, int fd,
		    uint64_t off)
{
	long p = syscall(SYS_mmap, addr, size, prot, flags, fd, (off_t)off);
	return p == -1 ? -errno : 0;
}

/*
 * Never-written pages are private anonymous memory mapped read-only: reads
 * see the kernel's zero page and cost nothing, a write faults to us.
 */
int os_map_zero(void *addr, size_t size)
{
	return os_map_anon(addr, size, false);
}

int os_map_anon(void *addr, size_t size, bool writable)
{
	return sys_mmap(addr, size, PROT_READ | (writable ? PROT_WRITE : 0),
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
			-1, 0);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

void os_populate_read(void *addr, size_t size)
{
	syscall(SYS_madvise, addr, size, MADV_POPULATE_READ);
}

/* /proc/self/pagemap: the page is present; it is mapped only here. */
#define PAGEMAP_PRESENT ((uint64_t)1 << 63)
#define PAGEMAP_EXCLUSIVE ((uint64_t)1 << 56)

/*
 * Whether a read of untouched private anonymous memory maps the kernel's
 * zero page, as Linux does as a rule, or gives the page memory of its own
 * (the 6.18.44 kernel of a VM we measured on does, booted with
 * pvm_no_zero_page=1; reading 256 MiB of a region's zeros then took
 * 256 MiB). The zero page is shared by every process, so pagemap never
 * calls it exclusive. Unknown (no pagemap): yes.
 */
static bool reads_map_zero_page(void)
{
	bool zero = true;
	void *p = os_reserve(os_page_size);
	if (!p)
		return zero;
	os_populate_read(p, os_page_size);
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t entry;
	off_t off = (off_t)((uintptr_t)p >> os_page_shift) * (off_t)sizeof entry;
	if (fd >= 0 && pread(fd, &entry, sizeof entry, off) == sizeof entry &&
	    (entry & PAGEMAP_PRESENT))
		zero = !(entry & PAGEMAP_EXCLUSIVE);
	if (fd >= 0)
		close(fd);
	os_release(p, os_page_size);
	return zero;
}

int os_map_none(void *addr, size_t size)
{
	return sys_mmap(addr, size, PROT_NONE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
			-1, 0);
}

/*
 * Populating a writable mapping at once spares the writer a second (minor)
 * page fault when it retries the access.
 */
int os_map_file(void *addr, size_t size, int fd, uint64_t off, bool writable,
		bool populate)
{
	int prot = PROT_READ | (writable ? PROT_WRITE : 0);
	int flags = MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0);
	return sys_mmap(addr, size, prot, flags, fd, off);
}

int os_protect(void *addr, size_t size, bool writable)
{
	int prot = PROT_READ | (writable ? PROT_WRITE : 0);
	return syscall(SYS_mprotect, addr, size, prot) ? -errno : 0;
}

int os_pwrite(int fd, const void *buf, size_t size, uint64_t off)
{
	long n = syscall(SYS_pwrite64, fd, buf, size, (off_t)off);
	return n < 0 ? -errno : (int)n;
}

void os_punch_hole(int fd, uint64_t off, size_t size)
{
	syscall(SYS_fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		(off_t)off, (off_t)size);
}

static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
	while (s && *s && at < cap)
		buf[at++] = *s++;
	return at;
}

static size_t put_hex(char *buf, size_t at, size_t cap, uintptr_t v)
{
	char tmp[2 + 2 * sizeof v];
	int n = 0;
	do {
		tmp[n++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	at = put_str(buf, at, cap, "0x");
	while (n && at < cap)
		buf[at++] = tmp[--n];
	return at;
}

void os_write_error(const char *a, const char *b, uintptr_t addr)
{
	char buf[256];
	size_t n = put_str(buf, 0, sizeof buf - 1, "ucow: ");
	n = put_str(buf, n, sizeof buf - 1, a);
	if (b) {
		n = put_str(buf, n, sizeof buf - 1, ": ");
		n = put_str(buf, n, sizeof buf - 1, b);
	}
	if (addr) {
		n = put_str(buf, n, sizeof buf - 1, " at ");
		n = put_hex(buf, n, sizeof buf - 1, addr);
	}
	buf[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, buf, n);
	UNUSED(w);
}

bool os_env_long(const char *name, long min, long max, const char *what,
		 long *out)
{
	const char *env = getenv(name);
	if (!env || !*env)
		return false;
	char *end;
	errno = 0;
	long v = strtol(env, &end, 10);
	if (isdigit((unsigned char)env[0]) && !errno && !*end && v >= min &&
	    v <= max) {
		*out = v;
		return true;
	}
	char head[128];
	size_t n = put_str(head, 0, sizeof head - 1, name);
	n = put_str(head, n, sizeof head - 1, " ignored");
	head[n] = '\0';
	os_write_error(head, what, 0);
	return false;
}

static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * glibc's cancellation signal, SIGCANCEL: the kernel's first real-time
 * signal, which glibc keeps for itself (sigfillset leaves it out, sigaddset
 * refuses it, pthread_sigmask never blocks it), so it is set by hand.
 */
#define GLIBC_SIGCANCEL __SIGRTMIN

static void add_cancel_signal(sigset_t *set)
{
	unsigned bit = GLIBC_SIGCANCEL - 1;
	unsigned width = 8 * sizeof set->__val[0];
	set->__val[bit / width] |= 1ul << (bit % width);
}

void os_async_signals(sigset_t *set)
{
	sigfillset(set);
	/* Synchronous signals cannot be blocked without killing the process. */
	sigdelset(set, SIGSEGV);
	sigdelset(set, SIGBUS);
	sigdelset(set, SIGILL);
	sigdelset(set, SIGFPE);
	sigdelset(set, SIGTRAP);
	add_cancel_signal(set);
}

/* rt_sigprocmask itself: pthread_sigmask would leave SIGCANCEL out. */
static void set_mask(int how, const sigset_t *set, sigset_t *old)
{
	syscall(SYS_rt_sigprocmask, how, set, old, _NSIG / 8);
}

void os_block_signals(sigset_t *saved)
{
	sigset_t all;
	os_async_signals(&all);
	set_mask(SIG_BLOCK, &all, saved);
}

void os_restore_signals(const sigset_t *saved)
{
	set_mask(SIG_SETMASK, saved, NULL);
}

/* The cancel state the holder of the lock had: only it reads or writes. */
static int holder_cancel_state;

void ucow_lock(sigset_t *saved)
{
	int state;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
	os_block_signals(saved);
	pthread_mutex_lock(&global_lock);
	holder_cancel_state = state;
}

void ucow_unlock(const sigset_t *saved)
{
	int state = holder_cancel_state;
	pthread_mutex_unlock(&global_lock);
	os_restore_signals(saved);
	pthread_setcancelstate(state, NULL);
}

/* Per thread: two threads may fork at once, and each waits for the lock
 * with its own mask saved. */
static _Thread_local sigset_t fork_saved_mask;

static void lock_for_fork(void)
{
	ucow_lock(&fork_saved_mask);
}

static void unlock_after_fork(void)
{
	ucow_unlock(&fork_saved_mask);
}

static void (*fork_child_hook)(void);

static void unlock_in_child(void)
{
	fork_child_hook();
	ucow_unlock(&fork_saved_mask);
}

/*
 * fork() takes the global lock first, so that no operation is half done in
 * the copy of memory the child gets; the child then disowns every region.
 */
void ucow_atfork_init(void (*child)(void))
{
	fork_child_hook = child;
	pthread_atfork(lock_for_fork, unlock_after_fork, unlock_in_child);
}
