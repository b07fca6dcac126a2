/* Shared helpers of the ucow CUnit suites. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

/* A watchdog, not a timing assertion: a deadlocked child fails the test. */
#define CHILD_WATCHDOG_SECONDS 300

void add_suite(const char *name, const struct test_case *tests)
{
	CU_pSuite suite = CU_add_suite(name, NULL, NULL);
	if (!suite) {
		fprintf(stderr, "CU_add_suite(%s): %s\n", name, CU_get_error_msg());
		exit(2);
	}
	for (; tests->name; tests++) {
		if (!CU_add_test(suite, tests->name, tests->fn)) {
			fprintf(stderr, "CU_add_test(%s): %s\n", tests->name,
				CU_get_error_msg());
			exit(2);
		}
	}
}

/*
 * The child's alarm is its own watchdog, but a child deadlocked with its
 * signals blocked (inside ucow's global lock) never sees it: past the same
 * time and a margin, the parent's own alarm kills it (the status says
 * SIGKILL).
 */
static volatile pid_t watched_child;

static void kill_watched_child(int sig)
{
	(void)sig;
	if (watched_child > 0)
		kill(watched_child, SIGKILL);
}

static int wait_child(pid_t pid)
{
	struct sigaction sa = {.sa_handler = kill_watched_child}, old;
	sigaction(SIGALRM, &sa, &old);
	watched_child = pid;
	alarm(CHILD_WATCHDOG_SECONDS + 30);
	int st, err = 0;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			err = -errno;
			break;
		}
	alarm(0);
	watched_child = 0;
	sigaction(SIGALRM, &old, NULL);
	return err ? err : st;
}

int run_in_child(void (*fn)(void *), void *arg)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		alarm(CHILD_WATCHDOG_SECONDS);
		fn(arg);
		_exit(0);
	}
	return wait_child(pid);
}

int run_scenario(const char *name)
{
	/* The test program's path: under valgrind /proc/self/exe itself is
	 * valgrind's tool, but readlink() of it names the program. */
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		return -errno;
	exe[n] = '\0';
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		alarm(CHILD_WATCHDOG_SECONDS); /* survives execve */
		execl(exe, "ucow-test", "--child-scenario", name, (char *)NULL);
		perror(exe);
		_exit(127);
	}
	return wait_child(pid);
}

void check_failed(const char *file, int line, const char *expr)
{
	fprintf(stderr, "%s:%d: check failed in child %d: %s\n", file, line,
		(int)getpid(), expr);
	_exit(CHILD_FAILED_CHECK);
}

void stderr_capture_begin(struct stderr_capture *c)
{
	int p[2];
	fflush(stderr);
	c->saved = dup(STDERR_FILENO);
	CHECK(c->saved >= 0 && pipe(p) == 0);
	CHECK(dup2(p[1], STDERR_FILENO) == STDERR_FILENO);
	close(p[1]);
	c->rd = p[0];
}

void stderr_capture_end(struct stderr_capture *c, char *buf, size_t len)
{
	CHECK(dup2(c->saved, STDERR_FILENO) == STDERR_FILENO);
	close(c->saved);
	ssize_t n = read(c->rd, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(c->rd);
}

long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

long count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	long n = 0;
	int c;
	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

bool sanitizer_is(const char *name)
{
	const char *tool = getenv("UCOW_TEST_SANITIZER");
	return tool && strcmp(tool, name) == 0;
}

bool backend_is(const char *name)
{
	const char *b = ucow_backend();
	return b && strcmp(b, name) == 0;
}

/* splitmix64's finaliser: distinct (seed, page, word) give unrelated words. */
static uint64_t pattern_word(unsigned seed, size_t page, size_t word)
{
	uint64_t x = ((uint64_t)seed << 40) ^ ((uint64_t)page << 20) ^ word;
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/*
 * Descending, so that the writes never look like a sequential writer to
 * ucow's fault-around and the tests' page counts stay exact.
 */
void fill_pages(void *base, size_t first, size_t count, unsigned seed)
{
	size_t words = page_size() / sizeof(uint64_t);
	for (size_t p = first + count; p-- > first;) {
		uint64_t *w = (uint64_t *)((char *)base + p * page_size());
		for (size_t i = 0; i < words; i++)
			w[i] = pattern_word(seed, p, i);
	}
}

bool pages_match(const void *base, size_t first, size_t count, unsigned seed)
{
	size_t words = page_size() / sizeof(uint64_t);
	for (size_t p = first; p < first + count; p++) {
		const uint64_t *w =
			(const uint64_t *)((const char *)base + p * page_size());
		for (size_t i = 0; i < words; i++)
			if (w[i] != pattern_word(seed, p, i))
				return false;
	}
	return true;
}

bool is_zero(const void *p, size_t len)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < len; i++)
		if (c[i])
			return false;
	return true;
}

ucow_region *make_filled(size_t pages, size_t filled, unsigned seed)
{
	ucow_region *r = ucow_create(pages * page_size());
	if (r)
		fill_pages(ucow_base(r), 0, filled, seed);
	return r;
}

char *page_of(const ucow_region *r, size_t p)
{
	return (char *)ucow_base(r) + p * page_size();
}

struct ucow_stats stats_of(const ucow_region *r)
{
	struct ucow_stats s;
	if (ucow_stats(r, &s) != 0)
		memset(&s, 0xff, sizeof(s));
	return s;
}

struct ucow_global_stats global_stats(void)
{
	struct ucow_global_stats g;
	if (ucow_global_stats(&g) != 0)
		memset(&g, 0xff, sizeof(g));
	return g;
}

bool stats_equal(const struct ucow_stats *a, const struct ucow_stats *b)
{
	return a->pages == b->pages && a->shared_pages == b->shared_pages &&
	       a->private_pages == b->private_pages &&
	       a->zero_pages == b->zero_pages &&
	       a->writable_pages == b->writable_pages &&
	       a->cow_copies == b->cow_copies &&
	       a->cow_reuses == b->cow_reuses &&
	       a->zero_fills == b->zero_fills &&
	       a->metadata_bytes == b->metadata_bytes;
}

/* Fields of a line of /proc/self/maps. */
struct maps_entry {
	unsigned long lo, offset;
	char perms[5];
	unsigned long inode;
};

/* The line of the mapping holding addr: true if found. */
static bool maps_entry_at(const void *addr, struct maps_entry *e)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return false;
	unsigned long hi;
	bool found = false;
	char line[512];
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "%lx-%lx %4s %lx %*s %lu", &e->lo, &hi,
			       e->perms, &e->offset, &e->inode) == 5 &&
			(uintptr_t)addr >= e->lo && (uintptr_t)addr < hi;
	fclose(f);
	return found;
}

bool mapping_perms(const void *addr, char perms[5])
{
	struct maps_entry e;
	if (!maps_entry_at(addr, &e))
		return false;
	memcpy(perms, e.perms, 5);
	return true;
}

long mappings_in(const void *addr, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return -1;
	const size_t chunk = (size_t)2 << 20;
	uintptr_t a = (uintptr_t)addr;
	len = (len + chunk - 1) & ~(chunk - 1);
	unsigned long lo, hi;
	long n = 0;
	char line[512];
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo < a + len && hi > a)
			n++;
	fclose(f);
	return n;
}

long mapping_inode(const void *addr)
{
	struct maps_entry e;
	return maps_entry_at(addr, &e) ? (long)e.inode : -1;
}

long long mapping_offset(const void *addr)
{
	struct maps_entry e;
	if (!maps_entry_at(addr, &e))
		return -1;
	return (long long)(e.offset + ((uintptr_t)addr - e.lo));
}

bool has_memfd_open(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return false;
	bool found = false;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		char path[300], target[300];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			found = strstr(target, "memfd:") != NULL;
		}
	}
	closedir(d);
	return found;
}
