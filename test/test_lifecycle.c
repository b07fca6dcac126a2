/*
 * The library's life in a process: what it holds while regions exist and
 * gives back when the last one is gone, how it starts (and starts again
 * after a failed start), and what fork handlers see. Each scenario runs in
 * a fresh process, where ucow was never used before it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define PAGES 8

/* The process's descriptors, "fd=target;" each, in the order of fd numbers
 * (the directory's own descriptor left out). */
static void list_fds(char *buf, size_t len)
{
	DIR *d = opendir("/proc/self/fd");
	CHECK(d != NULL);
	size_t at = 0;
	buf[0] = '\0';
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		char path[300], target[300];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof target - 1);
		target[n > 0 ? n : 0] = '\0';
		int w = snprintf(buf + at, len - at, "%s=%s;", e->d_name, target);
		CHECK(w > 0 && (size_t)w < len - at);
		at += (size_t)w;
	}
	closedir(d);
}

static pid_t warm_tid;

static void *nothing(void *arg)
{
	warm_tid = gettid();
	return arg;
}

/* A joined thread may stay in /proc/self/task a moment longer. */
static void wait_until_gone(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%ld", (long)tid);
	for (int waits = 0; access(path, F_OK) == 0 && waits < 1000; waits++)
		usleep(1000);
}

/* Threads of this process (the uffd backend's handler is one); one was
 * started and joined first, since ThreadSanitizer starts a helper thread
 * of its own with the first. */
static long count_threads(void)
{
	static bool warm;
	pthread_t t;
	if (!warm && pthread_create(&t, NULL, nothing, NULL) == 0) {
		warm = pthread_join(t, NULL) == 0;
		wait_until_gone(warm_tid);
	}
	DIR *d = opendir("/proc/self/task");
	CHECK(d != NULL);
	long n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* A region, a clone and a snapshot, each written, then all destroyed. */
static void use_and_destroy_a_family(unsigned seed)
{
	ucow_region *src = make_filled(PAGES, PAGES, seed);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src), *snap = ucow_snapshot(src);
	CHECK(clone != NULL && snap != NULL);
	fill_pages(ucow_base(clone), 0, 1, seed + 1);
	fill_pages(ucow_base(src), 1, 1, seed + 2);
	CHECK(pages_match(ucow_base(snap), 0, PAGES, seed));
	CHECK(pages_match(ucow_base(clone), 0, 1, seed + 1));
	ucow_destroy(snap);
	ucow_destroy(clone);
	ucow_destroy(src);
}

/*
 * Once the last region is destroyed the process has the descriptors (and
 * threads) it had before the first one, under every backend; ucow works
 * again after, and its global counters go on from where they were.
 */
static int descriptors_come_back(void)
{
	char before[4096], after[4096];
	list_fds(before, sizeof before);
	long threads = count_threads();
	uint64_t faults = 0;
	for (unsigned round = 0; round < 2; round++) {
		use_and_destroy_a_family(10 * round + 1);
		list_fds(after, sizeof after);
		if (strcmp(before, after) != 0)
			fprintf(stderr, "before: %s\nafter:  %s\n", before, after);
		CHECK(strcmp(before, after) == 0);
		CHECK(count_threads() == threads);
		CHECK(global_stats().faults > faults);
		faults = global_stats().faults;
	}
	return 0;
}

/* The page the program's own fork child handler writes, if any. */
static char *volatile child_writes;

static void program_child_handler(void)
{
	if (child_writes)
		child_writes[0] = 'C';
}

/* A child whose fork handler writes `page`: the write must fault (the
 * region is PROT_NONE in the child) and the child die of it. */
static void fork_writing(char *page)
{
	child_writes = page;
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(0); /* the handler wrote without a fault */
	child_writes = NULL;
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
}

/*
 * A child fork handler that the program registered before its first ucow
 * call runs after ucow's: it cannot write the parent's regions, neither a
 * page the region owns alone nor one it shares with a clone.
 */
static int fork_handler_registered_first(void)
{
	CHECK(pthread_atfork(NULL, NULL, program_child_handler) == 0);
	ucow_region *src = make_filled(2, 2, 30);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	fill_pages(ucow_base(src), 0, 1, 31); /* page 0: src's alone now */
	fork_writing(page_of(src, 0));
	fork_writing(page_of(src, 1));   /* shared with the clone */
	fork_writing(page_of(clone, 1)); /* the same frame */
	CHECK(pages_match(ucow_base(src), 0, 1, 31));
	CHECK(pages_match(ucow_base(src), 1, 1, 30));
	CHECK(pages_match(ucow_base(clone), 0, 2, 30));
	ucow_destroy(clone);
	ucow_destroy(src);
	return 0;
}

static void set_file_size_limit(rlim_t bytes)
{
	struct rlimit lim;
	CHECK(getrlimit(RLIMIT_FSIZE, &lim) == 0);
	lim.rlim_cur = bytes;
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
}

/*
 * Under a file size limit (RLIMIT_FSIZE) the frame store fits beneath it:
 * ucow works, and never raises SIGXFSZ (which would kill the process).
 * Below the smallest store (2^20 pages) ucow_create fails with EFBIG.
 */
static int file_size_limit(void)
{
	set_file_size_limit((rlim_t)page_size() << 20 | page_size());
	use_and_destroy_a_family(40);
	set_file_size_limit((rlim_t)page_size() << 19);
	errno = 0;
	CHECK(ucow_create(page_size()) == NULL && errno == EFBIG);
	set_file_size_limit(RLIM_INFINITY);
	use_and_destroy_a_family(50);
	return 0;
}

/* Bytes of address space the process uses (VmSize), or 0. */
static rlim_t address_space_used(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long kib = 0;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmSize: %lu kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return (rlim_t)kib << 10;
}

/*
 * A first call that fails for want of address space (RLIMIT_AS) leaves
 * nothing behind: once the limit is raised, ucow starts.
 */
static int address_space_limit(void)
{
	struct rlimit old, lim;
	CHECK(getrlimit(RLIMIT_AS, &old) == 0);
	rlim_t used = address_space_used();
	CHECK(used > 0);
	lim = (struct rlimit){used + ((rlim_t)64 << 20), old.rlim_max};
	CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
	errno = 0;
	ucow_region *r = ucow_create(page_size());
	int err = errno;
	const char *backend = ucow_backend();
	CHECK(setrlimit(RLIMIT_AS, &old) == 0);
	CHECK(r == NULL && err == ENOMEM && backend == NULL);
	CHECK(ucow_backend() != NULL);
	use_and_destroy_a_family(60);
	return 0;
}

/* ucow_create(size) fails with err and leaves the descriptors and threads
 * as they were. */
static void create_fails(size_t size, int err)
{
	char before[4096], after[4096];
	list_fds(before, sizeof before);
	long threads = count_threads();
	errno = 0;
	CHECK(ucow_create(size) == NULL && errno == err);
	CHECK(count_threads() == threads);
	list_fds(after, sizeof after);
	CHECK(strcmp(before, after) == 0);
}

/*
 * A ucow_create that fails when no region exists (the uffd backend had
 * started its handler thread for it) leaves no thread and no descriptor;
 * one that fails beside a live region leaves that region working.
 */
static int failed_create_leaves_nothing(void)
{
	set_file_size_limit((rlim_t)page_size() << 19); /* no frame store */
	create_fails(page_size(), EFBIG);
	set_file_size_limit(RLIM_INFINITY);
	size_t too_many_pages = (size_t)1 << 46; /* more than the store has */
	create_fails(too_many_pages, ENOMEM);
	ucow_region *src = make_filled(PAGES, PAGES, 70);
	CHECK(src != NULL);
	errno = 0;
	CHECK(ucow_create(too_many_pages) == NULL && errno == ENOMEM);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	fill_pages(ucow_base(clone), 0, PAGES, 71);
	CHECK(pages_match(ucow_base(src), 0, PAGES, 70));
	ucow_destroy(clone);
	ucow_destroy(src);
	return 0;
}

/*
 * The uffd backend out of descriptors says so (EMFILE, and its text on
 * stderr), not that the kernel lacks userfaultfd; it starts once one is
 * free.
 */
static int uffd_out_of_descriptors(void)
{
	CHECK(ucow_set_backend("uffd") == 0);
	struct rlimit old, lim;
	CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
	lim = (struct rlimit){64, old.rlim_max};
	CHECK(setrlimit(RLIMIT_NOFILE, &lim) == 0);
	struct stderr_capture capture;
	char said[512];
	stderr_capture_begin(&capture);
	int fds[64], n = 0;
	while (n < 64 && (fds[n] = dup(STDIN_FILENO)) >= 0)
		n++;
	errno = 0;
	ucow_region *r = ucow_create(page_size());
	int err = errno;
	while (n > 0)
		close(fds[--n]);
	stderr_capture_end(&capture, said, sizeof said);
	CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
	CHECK(r == NULL && err == EMFILE);
	CHECK(strstr(said, strerror(EMFILE)) != NULL);
	CHECK(strstr(said, "has no userfaultfd") == NULL);
	use_and_destroy_a_family(80);
	return 0;
}

/*
 * ucow_global_stats as the process's first ucow call: the mapping budget is
 * there already (it was 0 until some other call started ucow).
 */
static int global_stats_first(void)
{
	struct ucow_global_stats first, later;
	CHECK(ucow_global_stats(&first) == 0);
	CHECK(first.regions == 0 && first.frames == 0 && first.mappings == 0);
	CHECK(first.mapping_budget >= 64);
	ucow_region *r = ucow_create(page_size());
	CHECK(r != NULL);
	CHECK(ucow_global_stats(&later) == 0);
	CHECK(later.mapping_budget == first.mapping_budget);
	ucow_destroy(r);
	return 0;
}

const struct child_scenario lifecycle_scenarios[] = {
	{"global-stats-first", global_stats_first},
	{"uffd-out-of-descriptors", uffd_out_of_descriptors},
	{"failed-create-leaves-nothing", failed_create_leaves_nothing},
	{"address-space-limit", address_space_limit},
	{"file-size-limit", file_size_limit},
	{"descriptors-come-back", descriptors_come_back},
	{"fork-handler-registered-first", fork_handler_registered_first},
	{NULL, NULL},
};

static void test_last_destroy_gives_back_every_descriptor(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("descriptors-come-back"), 0));
}

static void test_earlier_fork_handler_cannot_write_regions(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("fork-handler-registered-first"), 0));
}

static void test_file_size_limit_is_respected(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("file-size-limit"), 0));
}

static void test_failed_start_is_tried_again(void)
{
	/* The sanitizers' and valgrind's own mappings need the space. */
	SKIP_UNDER("asan", "its allocator fails under RLIMIT_AS");
	SKIP_UNDER("tsan", "its allocator fails under RLIMIT_AS");
	SKIP_UNDER("valgrind", "it fails under RLIMIT_AS");
	CU_ASSERT(CHILD_EXITED(run_scenario("address-space-limit"), 0));
}

static void test_failed_create_leaves_no_thread(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("failed-create-leaves-nothing"), 0));
}

static void test_global_stats_as_first_call_has_the_budget(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("global-stats-first"), 0));
}

static void test_uffd_out_of_descriptors_says_so(void)
{
	SKIP_UNDER("valgrind", "the uffd backend");
	CU_ASSERT(CHILD_EXITED(run_scenario("uffd-out-of-descriptors"), 0));
}

void add_lifecycle_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_last_destroy_gives_back_every_descriptor),
		TEST(test_earlier_fork_handler_cannot_write_regions),
		TEST(test_file_size_limit_is_respected),
		TEST(test_failed_start_is_tried_again),
		TEST(test_failed_create_leaves_no_thread),
		TEST(test_uffd_out_of_descriptors_says_so),
		TEST(test_global_stats_as_first_call_has_the_budget),
		{NULL, NULL},
	};
	add_suite("lifecycle", tests);
}
