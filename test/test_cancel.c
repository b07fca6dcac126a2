/*
 * Threads cancelled while they are inside ucow: a cancel must never leave
 * ucow's global lock, a region's fault count or a pte lock held. A failure
 * is a hang of a later call, so each scenario runs in a child with a
 * watchdog thread of its own: a thread stuck in ucow holds its signals back,
 * and an alarm() would wait for it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

#define CHILD_HUNG 98

static void *watchdog(void *arg)
{
	struct timespec limit = {(time_t)(uintptr_t)arg, 0};
	while (nanosleep(&limit, &limit) != 0)
		;
	static const char msg[] = "cancel: the child hung\n";
	ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
	(void)w;
	_exit(CHILD_HUNG);
}

static void start_watchdog(unsigned seconds)
{
	pthread_t t;
	CHECK(pthread_create(&t, NULL, watchdog, (void *)(uintptr_t)seconds) == 0);
	CHECK(pthread_detach(t) == 0);
}

/* ---- asynchronous cancellation during write faults and unshare -------- */

enum { ASYNC_PAGES = 1024, ASYNC_ROUNDS = 300 };

/* Every other page: each one is a fault of its own (no fault-around). */
static void *async_writer(void *arg)
{
	char *p = arg;
	size_t ps = page_size();
	CHECK(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL) == 0);
	for (;;)
		for (size_t i = 0; i < ASYNC_PAGES; i += 2)
			((volatile char *)p)[i * ps] = 1;
	return NULL;
}

static void *async_unsharer(void *arg)
{
	char *p = arg;
	size_t ps = page_size();
	CHECK(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL) == 0);
	for (;;)
		for (size_t i = 0; i < ASYNC_PAGES; i += 2)
			CHECK(ucow_unshare(p + i * ps, ps) == 0);
	return NULL;
}

/* glibc's cancellation signal, SIGCANCEL; sigismember accepts it. */
static bool segv_handler_holds_back_cancel(void)
{
	struct sigaction sa;
	CHECK(sigaction(SIGSEGV, NULL, &sa) == 0);
	return sigismember(&sa.sa_mask, __SIGRTMIN) == 1;
}

/* A thread cancelled at some point of its faults (or unshares); then every
 * page of the clone is written and the clone is copied. */
static void async_cancel_round(ucow_region *src, unsigned round)
{
	size_t ps = page_size();
	ucow_region *c = ucow_clone(src);
	CHECK(c != NULL);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, round % 2 ? async_unsharer : async_writer,
			     ucow_base(c)) == 0);
	struct timespec gap = {0, 100000 + (round % 7) * 37000};
	nanosleep(&gap, NULL);
	/* No check of the thread's result: glibc 2.36 leaves it NULL when
	 * the cancel is acted on as cancellation is enabled again. */
	CHECK(pthread_cancel(t) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	char *p = ucow_base(c);
	for (size_t i = 0; i < ASYNC_PAGES; i++)
		p[i * ps] = 2;
	ucow_region *s = ucow_snapshot(c);
	CHECK(s != NULL);
	const char *q = ucow_base(s);
	for (size_t i = 0; i < ASYNC_PAGES; i++)
		CHECK(q[i * ps] == 2);
	ucow_destroy(s);
	ucow_destroy(c);
}

static void async_cancel_scenario(void *unused)
{
	(void)unused;
	start_watchdog(60);
	ucow_region *src = make_filled(ASYNC_PAGES, ASYNC_PAGES, 3);
	CHECK(src != NULL);
	if (backend_is("sigsegv"))
		CHECK(segv_handler_holds_back_cancel());
	unsigned rounds = sanitizer_is("valgrind") ? 20 : ASYNC_ROUNDS;
	for (unsigned round = 0; round < rounds; round++)
		async_cancel_round(src, round);
	CHECK(pages_match(ucow_base(src), 0, ASYNC_PAGES, 3));
	ucow_destroy(src);
}

static void test_async_cancel_during_faults_and_unshare(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(async_cancel_scenario, NULL), 0));
}

/* ---- a deferred cancel pending across calls that take the lock --------- */

static volatile int destroy_returned;

/*
 * The first create of the process (the uffd backend reads /proc files
 * then) and the destroy of its last region (it stops the uffd handler
 * thread: write(2), pthread_join) hold ucow's lock over cancellation
 * points. The cancel is acted on at the thread's own next one.
 */
static void *cancelled_user(void *unused)
{
	(void)unused;
	CHECK(pthread_cancel(pthread_self()) == 0);
	ucow_region *r = ucow_create(page_size());
	CHECK(r != NULL);
	*(char *)ucow_base(r) = 1;
	ucow_destroy(r);
	destroy_returned = 1;
	pthread_testcancel();
	return NULL;
}

static void deferred_cancel_scenario(void *unused)
{
	(void)unused;
	start_watchdog(30);
	pthread_t t;
	void *res;
	CHECK(pthread_create(&t, NULL, cancelled_user, NULL) == 0);
	CHECK(pthread_join(t, &res) == 0);
	CHECK(res == PTHREAD_CANCELED && destroy_returned);
	ucow_region *r = make_filled(4, 4, 5);
	CHECK(r != NULL);
	ucow_region *c = ucow_clone(r);
	CHECK(c != NULL);
	fill_pages(ucow_base(c), 0, 4, 6);
	CHECK(pages_match(ucow_base(r), 0, 4, 5));
	ucow_destroy(c);
	ucow_destroy(r);
}

static void test_deferred_cancel_in_first_create_and_last_destroy(void)
{
	CU_ASSERT(CHILD_EXITED(run_in_child(deferred_cancel_scenario, NULL), 0));
}

void add_cancel_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_async_cancel_during_faults_and_unshare),
		TEST(test_deferred_cancel_in_first_create_and_last_destroy),
		{ NULL, NULL },
	};
	add_suite("cancel", tests);
}
