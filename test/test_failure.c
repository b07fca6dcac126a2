/*
 * A write fault that cannot be served (here: a failed page copy, injected
 * with UCOW_FAILPOINT_FILL) never continues with wrong memory: the program's
 * handler is called, or ucow says why and aborts.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define PAGES 4

static void log_path(char *buf, size_t len, pid_t parent)
{
	snprintf(buf, len, "/tmp/ucow-test-failure-%ld.log", (long)parent);
}

/* Sends this process's stderr to a file the parent reads afterwards. */
static void stderr_to_log(void)
{
	char path[64];
	log_path(path, sizeof path, getppid());
	CHECK(freopen(path, "w", stderr) != NULL);
	setvbuf(stderr, NULL, _IONBF, 0);
}

static ucow_region *clone_of_filled(ucow_region **src)
{
	*src = make_filled(PAGES, PAGES, 61);
	CHECK(*src != NULL);
	ucow_region *clone = ucow_clone(*src);
	CHECK(clone != NULL);
	return clone;
}

static int copy_failure_aborts_by_default(void)
{
	CHECK(setenv("UCOW_FAILPOINT_FILL", "1", 1) == 0);
	stderr_to_log();
	ucow_region *src, *clone = clone_of_filled(&src);
	page_of(clone, 2)[5] = 1; /* the copy fails: abort here */
	return 3;
}

/* Atomics: under uffd the handler runs on ucow's handler thread. */
static void *seen_addr;
static int seen_error, seen_calls;

static void record_error(void *addr, int error, void *arg)
{
	__atomic_store_n(&seen_addr, addr, __ATOMIC_RELAXED);
	__atomic_store_n(&seen_error, error, __ATOMIC_RELAXED);
	__atomic_add_fetch(&seen_calls, *(int *)arg, __ATOMIC_RELEASE);
}

static int copy_failure_calls_the_handler(void)
{
	CHECK(setenv("UCOW_FAILPOINT_FILL", "1", 1) == 0);
	static int one = 1;
	ucow_on_fault_error(record_error, &one);
	ucow_region *src, *clone = clone_of_filled(&src);
	char *target = page_of(clone, 2) + 5;
	*target = 42; /* fails once, the handler returns, the retry works */
	CHECK(__atomic_load_n(&seen_calls, __ATOMIC_ACQUIRE) == 1);
	CHECK(__atomic_load_n(&seen_error, __ATOMIC_RELAXED) == -ENOMEM);
	char *addr = __atomic_load_n(&seen_addr, __ATOMIC_RELAXED);
	CHECK(addr >= page_of(clone, 2) && addr < page_of(clone, 3));
	CHECK(*target == 42);
	CHECK(pages_match(ucow_base(src), 0, PAGES, 61));
	CHECK(stats_of(clone).cow_copies == 1);
	return 0;
}

const struct child_scenario failure_scenarios[] = {
	{"copy-failure-aborts-by-default", copy_failure_aborts_by_default},
	{"copy-failure-calls-the-handler", copy_failure_calls_the_handler},
	{NULL, NULL},
};

static void test_copy_failure_aborts_with_a_clear_line(void)
{
	char path[64], line[256] = "";
	log_path(path, sizeof path, getpid());
	CU_ASSERT(CHILD_SIGNALED(run_scenario("copy-failure-aborts-by-default"),
				 SIGABRT));
	FILE *f = fopen(path, "r");
	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT(fgets(line, sizeof line, f) != NULL);
	fclose(f);
	unlink(path);
	CU_ASSERT(strstr(line, "cannot serve a copy-on-write fault") != NULL);
	CU_ASSERT(strstr(line, "ENOMEM") != NULL);
	CU_ASSERT(strstr(line, " at 0x") != NULL);
}

static void test_copy_failure_calls_the_program_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("copy-failure-calls-the-handler"), 0));
}

void add_failure_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_copy_failure_aborts_with_a_clear_line),
		TEST(test_copy_failure_calls_the_program_handler),
		{NULL, NULL},
	};
	add_suite("failure", tests);
}
