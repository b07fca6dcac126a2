/*
 * What only the userfaultfd backend can do: the kernel's own writes into
 * shared pages (read(2), recv(2), readv(2), pread(2), process_vm_writev(2))
 * wait for the copy and work, and the source stays untouched. Under the
 * signal backend the same calls fail with EFAULT and change nothing.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "helpers.h"

#define PAGES 8

struct family {
	ucow_region *src, *clone;
};

static struct family family(unsigned seed)
{
	struct family f;
	f.src = make_filled(PAGES, PAGES, seed);
	f.clone = ucow_clone(f.src);
	CU_ASSERT_FATAL(f.src && f.clone);
	return f;
}

static void family_destroy(struct family *f)
{
	ucow_destroy(f->clone);
	ucow_destroy(f->src);
}

/* The result a kernel write of n bytes into a shared page must have. */
static void expect_kernel_write(ssize_t got, size_t n)
{
	if (backend_is("uffd")) {
		CU_ASSERT_EQUAL(got, (ssize_t)n);
	} else {
		CU_ASSERT_EQUAL(got, -1);
		CU_ASSERT_EQUAL(errno, EFAULT);
	}
}

static void test_read_from_pipe_into_shared_page(void)
{
	struct family f = family(41);
	int p[2];
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(write(p[1], "hello", 5) == 5);
	char *dst = page_of(f.clone, 2) + 100;
	expect_kernel_write(read(p[0], dst, 5), 5);
	if (backend_is("uffd")) {
		CU_ASSERT(memcmp(dst, "hello", 5) == 0);
		CU_ASSERT_EQUAL(stats_of(f.clone).cow_copies, 1);
	}
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 41));
	close(p[0]);
	close(p[1]);
	family_destroy(&f);
}

static void test_recv_into_shared_page(void)
{
	struct family f = family(42);
	int sv[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CU_ASSERT(send(sv[0], "socket", 6, 0) == 6);
	char *dst = page_of(f.clone, 5);
	expect_kernel_write(recv(sv[1], dst, 6, 0), 6);
	if (backend_is("uffd"))
		CU_ASSERT(memcmp(dst, "socket", 6) == 0);
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 42));
	close(sv[0]);
	close(sv[1]);
	family_destroy(&f);
}

/* One readv(2) whose buffers lie in two clones of one source. */
static void test_readv_across_two_clones(void)
{
	struct family f = family(43);
	ucow_region *second = ucow_clone(f.src);
	CU_ASSERT_FATAL(second != NULL);
	int p[2];
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(write(p[1], "abcdefgh", 8) == 8);
	struct iovec iov[2] = {{page_of(f.clone, 1) + 4000 % page_size(), 4},
			       {page_of(second, 6), 4}};
	expect_kernel_write(readv(p[0], iov, 2), 8);
	if (backend_is("uffd")) {
		CU_ASSERT(memcmp(iov[0].iov_base, "abcd", 4) == 0);
		CU_ASSERT(memcmp(iov[1].iov_base, "efgh", 4) == 0);
		CU_ASSERT(pages_match(ucow_base(second), 0, 6, 43));
	}
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 43));
	close(p[0]);
	close(p[1]);
	ucow_destroy(second);
	family_destroy(&f);
}

static void test_pread_into_shared_pages(void)
{
	struct family f = family(44);
	char path[] = "/tmp/ucow-pread-XXXXXX";
	int fd = mkstemp(path);
	CU_ASSERT_FATAL(fd >= 0);
	unlink(path);
	size_t n = 2 * page_size();
	char *data = malloc(n);
	CU_ASSERT_FATAL(data != NULL);
	memset(data, 'x', n);
	CU_ASSERT(pwrite(fd, data, n, 0) == (ssize_t)n);
	/* Straddles three shared pages. */
	char *dst = page_of(f.clone, 3) + page_size() / 2;
	expect_kernel_write(pread(fd, dst, n, 0), n);
	if (backend_is("uffd"))
		CU_ASSERT(memcmp(dst, data, n) == 0);
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 44));
	free(data);
	close(fd);
	family_destroy(&f);
}

static void test_process_vm_writev_into_shared_page(void)
{
	struct family f = family(45);
	char msg[] = "from another address space";
	char *dst = page_of(f.clone, 7);
	struct iovec local = {msg, sizeof msg}, remote = {dst, sizeof msg};
	ssize_t got = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
	expect_kernel_write(got, sizeof msg);
	if (backend_is("uffd"))
		CU_ASSERT(memcmp(dst, msg, sizeof msg) == 0);
	CU_ASSERT(pages_match(ucow_base(f.src), 0, PAGES, 45));
	family_destroy(&f);
}

/* A kernel write into a never-written page takes a frame, no copy. */
static void test_read_into_zero_page(void)
{
	ucow_region *r = ucow_create(PAGES * page_size());
	CU_ASSERT_FATAL(r != NULL);
	int p[2];
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(write(p[1], "zz", 2) == 2);
	expect_kernel_write(read(p[0], page_of(r, 4), 2), 2);
	if (backend_is("uffd")) {
		CU_ASSERT_EQUAL(stats_of(r).zero_fills, 1);
		CU_ASSERT(memcmp(page_of(r, 4), "zz", 2) == 0);
	}
	close(p[0]);
	close(p[1]);
	ucow_destroy(r);
}

static void *write_forever(void *arg)
{
	volatile char *base = arg;
	for (size_t i = 0;; i = (i + 1) % PAGES)
		base[i * page_size()]++;
	return NULL;
}

/* Keeps the writer faulting: each snapshot write-protects the clone again. */
static void churn(struct family *f, bool last)
{
	for (int k = 0; k < 8; k++) {
		if (last) {
			ucow_region *s = ucow_snapshot(f->clone);
			CHECK(s != NULL);
			ucow_destroy(s);
		} else {
			CHECK(ucow_revert(f->clone, f->src) == 0);
		}
		sched_yield();
	}
}

/*
 * A region destroyed while another thread keeps faulting on it: the writer
 * gets a genuine SIGSEGV (its use after destroy), it never hangs in a fault
 * that nobody will serve, even when the region was the last one (and the
 * uffd handler thread stops).
 */
static void destroy_while_faulting(void *arg)
{
	bool last = arg != NULL;
	/* CHECK, not CU_ASSERT: this runs in a child process. */
	struct family f = {make_filled(PAGES, PAGES, 48), NULL};
	CHECK(f.src != NULL);
	CHECK((f.clone = ucow_clone(f.src)) != NULL);
	if (last)
		ucow_destroy(f.src);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, write_forever, ucow_base(f.clone)) == 0);
	churn(&f, last);
	ucow_destroy(f.clone);
	pthread_join(t, NULL); /* the writer's SIGSEGV ends the process */
}

static void test_destroy_while_a_fault_waits_is_sigsegv(void)
{
	static int last = 1;
	/* valgrind turns the writer's fatal SIGSEGV into an exit of each
	 * thread in turn, which a thread that never leaves its loop never
	 * takes: the child would spin forever. */
	SKIP_UNDER("valgrind", "a looping thread outlives the fatal signal");
	for (int k = 0; k < 20; k++) {
		CU_ASSERT(CHILD_SIGNALED(run_in_child(destroy_while_faulting, NULL),
					 SIGSEGV));
		CU_ASSERT(CHILD_SIGNALED(run_in_child(destroy_while_faulting, &last),
					 SIGSEGV));
	}
}

static void test_set_backend_bad_input(void)
{
	CU_ASSERT_EQUAL(ucow_set_backend(NULL), -EINVAL);
	CU_ASSERT_EQUAL(ucow_set_backend("no-such-backend"), -EINVAL);
	const char *other = backend_is("uffd") ? "sigsegv" : "uffd";
	/* Regions exist in this process already: the choice is made. */
	CU_ASSERT_EQUAL(ucow_set_backend(other), -EBUSY);
	CU_ASSERT_EQUAL(ucow_set_backend(ucow_backend()), 0);
}

/* Chosen by the API before the first region, in a fresh process. */
static int set_backend_before_first_region(void)
{
	const char *want = getenv("UCOW_BACKEND") &&
				   !strcmp(getenv("UCOW_BACKEND"), "uffd")
			   ? "sigsegv"
			   : "uffd";
	CHECK(ucow_set_backend(want) == 0);
	CHECK(strcmp(ucow_backend(), want) == 0);
	ucow_region *r = ucow_create(page_size());
	CHECK(r != NULL);
	((char *)ucow_base(r))[0] = 1;
	CHECK(strcmp(ucow_backend(), want) == 0);
	ucow_destroy(r);
	return 0;
}

/* A program that faults and exits: the handler stops, exit is clean. */
static int exit_with_regions_alive(void)
{
	ucow_region *src = make_filled(PAGES, PAGES, 46);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	fill_pages(ucow_base(clone), 0, PAGES, 47);
	exit(0);
}

/*
 * The handler's spin after serving (UCOW_UFFD_HOT_US): off or invalid, the
 * backend still serves every fault; an invalid value is named on stderr.
 */
static int uffd_with_hot_time(const char *value, bool warned)
{
	CHECK(setenv("UCOW_UFFD_HOT_US", value, 1) == 0);
	CHECK(ucow_set_backend("uffd") == 0);
	struct stderr_capture capture;
	char said[512];
	stderr_capture_begin(&capture);
	ucow_region *src = make_filled(PAGES, PAGES, 48);
	stderr_capture_end(&capture, said, sizeof said);
	CHECK((strstr(said, "UCOW_UFFD_HOT_US ignored") != NULL) == warned);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	fill_pages(ucow_base(clone), 0, PAGES, 49);
	CHECK(stats_of(clone).cow_copies == PAGES);
	CHECK(pages_match(ucow_base(clone), 0, PAGES, 49));
	CHECK(pages_match(ucow_base(src), 0, PAGES, 48));
	return 0;
}

static int uffd_hot_time_off(void)
{
	return uffd_with_hot_time("0", false);
}

static int uffd_hot_time_invalid(void)
{
	return uffd_with_hot_time("50us", true);
}

const struct child_scenario backend_scenarios[] = {
	{"set-backend-before-first-region", set_backend_before_first_region},
	{"exit-with-regions-alive", exit_with_regions_alive},
	{"uffd-hot-time-off", uffd_hot_time_off},
	{"uffd-hot-time-invalid", uffd_hot_time_invalid},
	{NULL, NULL},
};

static void test_set_backend_before_first_region(void)
{
	/* The scenario switches to the uffd backend, which valgrind cannot
	 * run (see check-valgrind in the Makefile). */
	SKIP_UNDER("valgrind", "the uffd backend");
	CU_ASSERT(CHILD_EXITED(run_scenario("set-backend-before-first-region"), 0));
}

static void test_exit_with_regions_alive_is_clean(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("exit-with-regions-alive"), 0));
}

static void test_uffd_hot_time_setting(void)
{
	SKIP_UNDER("valgrind", "the uffd backend");
	CU_ASSERT(CHILD_EXITED(run_scenario("uffd-hot-time-off"), 0));
	CU_ASSERT(CHILD_EXITED(run_scenario("uffd-hot-time-invalid"), 0));
}

void add_uffd_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_read_from_pipe_into_shared_page),
		TEST(test_recv_into_shared_page),
		TEST(test_readv_across_two_clones),
		TEST(test_pread_into_shared_pages),
		TEST(test_process_vm_writev_into_shared_page),
		TEST(test_read_into_zero_page),
		TEST(test_destroy_while_a_fault_waits_is_sigsegv),
		TEST(test_set_backend_bad_input),
		TEST(test_set_backend_before_first_region),
		TEST(test_exit_with_regions_alive_is_clean),
		TEST(test_uffd_hot_time_setting),
		{NULL, NULL},
	};
	add_suite("kernel-writes", tests);
}
