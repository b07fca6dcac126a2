/*
 * fork(): regions are not inherited. The child sees the parent's ranges
 * PROT_NONE and its handles as -ECHILD; it may create regions of its own.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

enum { PAGES = 4 };

/*
 * A parent region with a clone, so that its pages are shared. The bases are
 * taken in the parent: in the child, ucow_base() of these handles may be NULL.
 */
struct family {
	ucow_region *src, *clone;
	char *src_base, *clone_base;
};

static struct family make_family(unsigned seed)
{
	struct family f = { make_filled(PAGES, PAGES, seed), NULL, NULL, NULL };
	if (f.src)
		f.clone = ucow_clone(f.src);
	f.src_base = ucow_base(f.src);
	f.clone_base = ucow_base(f.clone);
	return f;
}

static void destroy_family(struct family f)
{
	ucow_destroy(f.clone);
	ucow_destroy(f.src);
}

static void write_parent_region(void *base)
{
	*(volatile char *)base = 'x';
}

static void read_parent_region(void *base)
{
	/* Exit with what was read, if the read is let through. */
	_exit(*(volatile unsigned char *)base | 1);
}

static void test_child_write_to_parent_region_is_sigsegv(void)
{
	struct family f = make_family(1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	struct ucow_stats before = stats_of(f.src);

	CU_ASSERT(CHILD_SIGNALED(run_in_child(write_parent_region, f.src_base),
				 SIGSEGV));
	CU_ASSERT(CHILD_SIGNALED(run_in_child(write_parent_region, f.clone_base),
				 SIGSEGV));

	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 1));
	CU_ASSERT(pages_match(ucow_base(f.clone), 0, PAGES, 1));
	struct ucow_stats after = stats_of(f.src);
	CU_ASSERT(stats_equal(&before, &after));
	destroy_family(f);
}

static void test_child_read_of_parent_region_is_sigsegv(void)
{
	struct family f = make_family(2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	CU_ASSERT(CHILD_SIGNALED(run_in_child(read_parent_region, f.src_base),
				 SIGSEGV));
	destroy_family(f);
}

static void check_range_is_prot_none(void *base)
{
	char perms[5];
	for (size_t p = 0; p < PAGES; p++) {
		CHECK(mapping_perms((char *)base + p * page_size(), perms));
		CHECK(strncmp(perms, "---", 3) == 0);
	}
}

static void test_parent_range_is_prot_none_in_child(void)
{
	struct family f = make_family(3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	CU_ASSERT(CHILD_EXITED(run_in_child(check_range_is_prot_none, f.src_base), 0));
	CU_ASSERT(CHILD_EXITED(run_in_child(check_range_is_prot_none, f.clone_base), 0));
	destroy_family(f);
}

static void use_inherited_handles(void *arg)
{
	struct family *f = arg;
	struct ucow_stats s;
	CHECK(ucow_stats(f->src, &s) == -ECHILD);
	errno = 0;
	CHECK(ucow_clone(f->src) == NULL && errno == ECHILD);
	errno = 0;
	CHECK(ucow_snapshot(f->src) == NULL && errno == ECHILD);
	CHECK(ucow_revert(f->clone, f->src) == -ECHILD);
	CHECK(ucow_is_snapshot(f->src) == -ECHILD);
}

static void test_inherited_handles_report_echild(void)
{
	struct family f = make_family(4);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	CU_ASSERT(CHILD_EXITED(run_in_child(use_inherited_handles, &f), 0));
	destroy_family(f);
}

static void destroy_inherited_handles(void *arg)
{
	struct family *f = arg;
	char perms[5];
	CHECK(mapping_perms(f->src_base, perms));
	ucow_destroy(f->src);
	ucow_destroy(f->clone);
	CHECK(!mapping_perms(f->src_base, perms));
	CHECK(!mapping_perms(f->clone_base, perms));
}

static void test_child_destroying_inherited_handles_leaves_parent_alone(void)
{
	struct family f = make_family(5);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	struct ucow_stats before = stats_of(f.src);
	struct ucow_global_stats g = global_stats();

	CU_ASSERT(CHILD_EXITED(run_in_child(destroy_inherited_handles, &f), 0));

	struct ucow_stats after = stats_of(f.src);
	CU_ASSERT(stats_equal(&before, &after));
	CU_ASSERT_EQUAL(global_stats().frames, g.frames);
	CU_ASSERT_EQUAL(global_stats().regions, g.regions);
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 5));
	CU_ASSERT(pages_match(ucow_base(f.clone), 0, PAGES, 5));
	destroy_family(f);
}

static void cow_in_child(void *arg)
{
	(void)arg;
	ucow_region *src = make_filled(PAGES, PAGES, 6);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	fill_pages(ucow_base(clone), 0, 1, 7);
	CHECK(stats_of(clone).cow_copies == 1);
	CHECK(pages_match(ucow_base(clone), 0, 1, 7));
	CHECK(pages_match(ucow_base(src), 0, PAGES, 6));
	ucow_region *snap = ucow_snapshot(clone);
	CHECK(snap != NULL);
	CHECK(ucow_revert(clone, src) == 0);
	CHECK(pages_match(ucow_base(clone), 0, PAGES, 6));
	CHECK(pages_match(ucow_base(snap), 0, 1, 7));
	ucow_destroy(snap);
	ucow_destroy(clone);
	ucow_destroy(src);
}

static void test_child_regions_copy_on_write(void)
{
	struct family f = make_family(8); /* the parent has regions too */
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	CU_ASSERT(CHILD_EXITED(run_in_child(cow_in_child, NULL), 0));
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 8));
	destroy_family(f);
}

/* The child starts with no region and none of the parent's mappings: the
 * mapping budget is its own. */
static void child_counts_nothing_of_the_parent(void *unused)
{
	(void)unused;
	struct ucow_global_stats g = global_stats();
	CHECK(g.regions == 0 && g.frames == 0 && g.mappings == 0);
	CHECK(g.faults == 0 && g.foreign_faults == 0);
	ucow_region *r = make_filled(PAGES, PAGES, 11);
	CHECK(r != NULL && global_stats().mappings == stats_of(r).mappings);
	ucow_destroy(r);
	CHECK(global_stats().mappings == 0);
}

static void test_child_counts_nothing_of_the_parent(void)
{
	struct family f = make_family(9);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	fill_pages(f.clone_base, 1, 1, 10); /* a page on its own among shared */
	CU_ASSERT(global_stats().mappings > 2);
	CU_ASSERT(CHILD_EXITED(
		run_in_child(child_counts_nothing_of_the_parent, NULL), 0));
	destroy_family(f);
}

/*
 * fork() while another thread is inside a fault: the child never sees that
 * fault end, and a slot it frees and gets again must not wait for it.
 */
struct busy_clone {
	ucow_region *src, *clone;
	size_t pages;
	int stop;
};

static void *write_clone_at_random(void *arg)
{
	struct busy_clone *b = arg;
	unsigned seed = 1;
	char *p = ucow_base(b->clone);
	for (unsigned k = 0; !__atomic_load_n(&b->stop, __ATOMIC_RELAXED); k++) {
		p[(size_t)rand_r(&seed) % b->pages * page_size()] = 1;
		if (k % 64 == 63)
			CHECK(ucow_revert(b->clone, b->src) == 0);
	}
	return NULL;
}

static int snapshot_done;

static void *snapshot_and_drop(void *arg)
{
	ucow_region *s = ucow_snapshot(arg);
	CHECK(s != NULL);
	ucow_destroy(s);
	__atomic_store_n(&snapshot_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* In the child: free the inherited clone's slot, take it again (slots are
 * handed out in rotation), and snapshot the new region within 5 s. */
static void reuse_the_slot(ucow_region *inherited)
{
	ucow_destroy(inherited);
	ucow_region *r = NULL;
	for (int k = 0; k < 100000 && r != inherited; k++) {
		if (r)
			ucow_destroy(r);
		CHECK((r = ucow_create(page_size())) != NULL);
	}
	CHECK(r == inherited);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, snapshot_and_drop, r) == 0);
	for (int ms = 0; ms < 5000; ms++) {
		if (__atomic_load_n(&snapshot_done, __ATOMIC_ACQUIRE))
			break;
		usleep(1000);
	}
	CHECK(__atomic_load_n(&snapshot_done, __ATOMIC_ACQUIRE));
	CHECK(pthread_join(t, NULL) == 0);
	ucow_destroy(r);
}

static void forks_during_faults(void *unused)
{
	(void)unused;
	enum { FAULT_PAGES = 1024 };
	/* Each child takes the clone's slot again, through a rotation of
	 * thousands of slots: 8 s a round under uffd on a VM of ours, whose
	 * registrations are slow. The fault counts are the same code under
	 * either backend, and sigsegv's rounds are cheap. */
	unsigned rounds = sanitizer_is("valgrind") ? 1
			  : backend_is("uffd")     ? 3
						   : 8;
	struct busy_clone b = {make_filled(FAULT_PAGES, FAULT_PAGES, 14), NULL,
			       FAULT_PAGES, 0};
	CHECK(b.src != NULL && (b.clone = ucow_clone(b.src)) != NULL);
	pthread_t writer;
	CHECK(pthread_create(&writer, NULL, write_clone_at_random, &b) == 0);
	usleep(10000);
	for (unsigned k = 0; k < rounds; k++) {
		fflush(stdout);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			reuse_the_slot(b.clone);
			_exit(0);
		}
		int st = 0;
		CHECK(waitpid(pid, &st, 0) == pid);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	__atomic_store_n(&b.stop, 1, __ATOMIC_RELAXED);
	CHECK(pthread_join(writer, NULL) == 0);
	ucow_destroy(b.clone);
	ucow_destroy(b.src);
}

static void test_fork_during_faults_leaves_no_fault_behind(void)
{
	SKIP_UNDER("tsan", "TSan cannot start a thread in the child of a "
			   "process that forked with threads running");
	CU_ASSERT(CHILD_EXITED(run_in_child(forks_during_faults, NULL), 0));
}

struct forker {
	bool block; /* whether this thread blocks SIGUSR1 */
	unsigned wrong;
};

static bool mask_is(bool block)
{
	sigset_t now;
	pthread_sigmask(SIG_SETMASK, NULL, &now);
	return sigismember(&now, SIGUSR1) == block;
}

/* Forks again and again; counts forks after which this thread's mask, or its
 * child's, is not the thread's own. */
static void *fork_in_a_loop(void *arg)
{
	struct forker *f = arg;
	/* Two threads forking at once overlap in nearly every fork; a fork
	 * took 20 to 30 ms on a VM of ours, so a few hundred are enough. */
	unsigned forks = sanitizer_is("valgrind") ? 50 : 200;
	sigset_t own;
	sigemptyset(&own);
	if (f->block)
		sigaddset(&own, SIGUSR1);
	pthread_sigmask(SIG_SETMASK, &own, NULL);
	for (unsigned k = 0; k < forks; k++) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(mask_is(f->block) ? 0 : 1);
		int st = 0;
		bool child_ok = pid > 0 && waitpid(pid, &st, 0) == pid &&
				WIFEXITED(st) && WEXITSTATUS(st) == 0;
		if (!child_ok || !mask_is(f->block)) {
			f->wrong++;
			pthread_sigmask(SIG_SETMASK, &own, NULL);
		}
	}
	return NULL;
}

/* ucow's fork handlers block signals around fork() and restore the mask of
 * the thread that forks, even while another thread forks too. */
static void two_threads_forking(void *unused)
{
	(void)unused;
	ucow_region *r = make_filled(1, 1, 12); /* ucow's fork handlers are in */
	CHECK(r != NULL);
	struct forker f[2] = {{false, 0}, {true, 0}};
	pthread_t t[2];
	for (int k = 0; k < 2; k++)
		CHECK(pthread_create(&t[k], NULL, fork_in_a_loop, &f[k]) == 0);
	for (int k = 0; k < 2; k++)
		CHECK(pthread_join(t[k], NULL) == 0);
	CHECK(f[0].wrong == 0 && f[1].wrong == 0);
	ucow_destroy(r);
}

static void test_threads_forking_keep_their_signal_masks(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(two_threads_forking, NULL), 0));
}

static void do_nothing(void *arg)
{
	(void)arg;
}

static void test_parent_regions_copy_on_write_after_fork(void)
{
	struct family f = make_family(9);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	CU_ASSERT(CHILD_EXITED(run_in_child(do_nothing, NULL), 0));

	fill_pages(ucow_base(f.clone), 1, 1, 10);

	CU_ASSERT_EQUAL(stats_of(f.clone).cow_copies, 1);
	CU_ASSERT(pages_match(ucow_base(f.clone), 1, 1, 10));
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 9));
	destroy_family(f);
}

/*
 * Lists the fds of a shell spawned now. glibc's posix_spawn() runs no fork
 * handlers, so only close-on-exec can keep the frame store out of it.
 */
static void test_frame_store_is_close_on_exec(void)
{
	struct family f = make_family(11);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f.clone);
	CU_ASSERT_FATAL(has_memfd_open());

	int fd[2];
	CU_ASSERT_FATAL(pipe2(fd, O_CLOEXEC) == 0);
	posix_spawn_file_actions_t actions;
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_adddup2(&actions, fd[1], STDOUT_FILENO);
	char *argv[] = { "sh", "-c",
			 "for f in /proc/$$/fd/*; do readlink \"$f\" || :; done",
			 NULL };
	pid_t pid;
	CU_ASSERT_EQUAL_FATAL(posix_spawn(&pid, "/bin/sh", &actions, NULL, argv,
					  environ), 0);
	posix_spawn_file_actions_destroy(&actions);
	close(fd[1]);

	char out[8192];
	size_t len = 0;
	ssize_t n;
	while (len < sizeof(out) - 1 &&
	       (n = read(fd[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(fd[0]);
	int st;
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT(CHILD_EXITED(st, 0));

	CU_ASSERT_PTR_NOT_NULL(strstr(out, "pipe:")); /* the listing worked */
	CU_ASSERT_PTR_NULL(strstr(out, "memfd:"));
	destroy_family(f);
}

void add_fork_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_child_write_to_parent_region_is_sigsegv),
		TEST(test_child_read_of_parent_region_is_sigsegv),
		TEST(test_parent_range_is_prot_none_in_child),
		TEST(test_inherited_handles_report_echild),
		TEST(test_child_destroying_inherited_handles_leaves_parent_alone),
		TEST(test_child_regions_copy_on_write),
		TEST(test_parent_regions_copy_on_write_after_fork),
		TEST(test_frame_store_is_close_on_exec),
		TEST(test_child_counts_nothing_of_the_parent),
		TEST(test_threads_forking_keep_their_signal_masks),
		TEST(test_fork_during_faults_leaves_no_fault_behind),
		{ NULL, NULL },
	};
	add_suite("fork", tests);
}
