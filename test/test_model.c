/*
 * Suite "model": short runs of the model-based tests (model.h) with fixed
 * seeds and one seed from the time, and a replay of every fuzz input kept
 * in test/fuzz/corpus and test/fuzz/regressions. Each run is a child
 * process: a failed check aborts it after printing the seed.
 *
 * UCOW_MODEL_SEED=N replaces the seed from the time (to rerun a failure).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"
#include "model/input_file.h"
#include "model/model.h"

enum { MODEL_OPS = 1500, THREAD_WRITERS = 2, THREAD_OPS = 1500 };

static const uint64_t fixed_seeds[] = {1, 2, 20251125};

struct run {
	uint64_t seed;
	char reproduce[4096];
	const unsigned char *data; /* a fuzz input, or NULL */
	size_t len;
};

static void set_reproduce(struct run *r)
{
	snprintf(r->reproduce, sizeof r->reproduce,
		 "UCOW_BACKEND=%s UCOW_MODEL_SEED=%llu build/test/ucow_test model",
		 ucow_backend() ? ucow_backend() : "?",
		 (unsigned long long)r->seed);
}

static uint64_t time_seed(void)
{
	const char *env = getenv("UCOW_MODEL_SEED");
	if (env && *env)
		return strtoull(env, NULL, 0);
	uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	return splitmix64(&x) >> 1;
}

static void model_child(void *arg)
{
	struct run *r = arg;
	model_run_seed(r->seed, MODEL_OPS, r->reproduce);
}

static void threads_child(void *arg)
{
	struct run *r = arg;
	struct threads_config cfg = {r->seed, THREAD_WRITERS, THREAD_OPS,
				     r->reproduce};
	model_threads_run(&cfg);
}

static void run_seed(void (*child)(void *), uint64_t seed)
{
	struct run r = {.seed = seed};
	set_reproduce(&r);
	int st = run_in_child(child, &r);
	if (!CHILD_EXITED(st, 0))
		fprintf(stderr, "\nmodel: seed %llu FAILED; reproduce: %s\n",
			(unsigned long long)seed, r.reproduce);
	CU_ASSERT(CHILD_EXITED(st, 0));
}

static void test_model_fixed_seeds(void)
{
	for (size_t i = 0; i < sizeof fixed_seeds / sizeof *fixed_seeds; i++)
		run_seed(model_child, fixed_seeds[i]);
}

/* A seed from the clock (or UCOW_MODEL_SEED), printed before the run. */
static void run_seed_from_time(void (*child)(void *))
{
	uint64_t seed = time_seed();
	printf("(seed %llu) ", (unsigned long long)seed);
	fflush(stdout);
	run_seed(child, seed);
}

static void test_model_seed_from_time(void)
{
	run_seed_from_time(model_child);
}

static void test_threads_model_fixed_seed(void)
{
	run_seed(threads_child, fixed_seeds[0]);
}

static void test_threads_model_seed_from_time(void)
{
	run_seed_from_time(threads_child);
}

/* A seeded run, recorded, is an input that makes the same choices. */
static void test_recorded_choices_replay_as_input(void)
{
	struct choices seeded, input;
	choices_seeded(&seeded, 42);
	choices_start_recording(&seeded);
	uint64_t want[1000];
	for (unsigned i = 0; i < 1000; i++)
		want[i] = choose(&seeded, 1 + ((uint64_t)1 << (i % 64)) + i);
	CU_ASSERT_FATAL(!seeded.record_failed);
	choices_input(&input, seeded.record, seeded.record_len);
	for (unsigned i = 0; i < 1000; i++)
		CU_ASSERT_EQUAL(choose(&input, 1 + ((uint64_t)1 << (i % 64)) + i),
				want[i]);
	CU_ASSERT(choices_done(&input));
	CU_ASSERT(!input.exhausted);
	choose(&input, 2);
	CU_ASSERT(input.exhausted);
	choices_free(&seeded);
}

/* ---- fuzz inputs: the corpus and every crash input found --------------- */

static void input_child(void *arg)
{
	struct run *r = arg;
	model_run_input(r->data, r->len, r->reproduce);
}

static void replay_file(const char *path)
{
	struct run r = {0};
	unsigned char *data;
	int err = read_input(path, &data, &r.len);
	CU_ASSERT_EQUAL_FATAL(err, 0);
	r.data = data;
	snprintf(r.reproduce, sizeof r.reproduce, "build/test/fuzz/ucow_fuzz %s",
		 path);
	int st = run_in_child(input_child, &r);
	if (!CHILD_EXITED(st, 0))
		fprintf(stderr, "\nmodel: fuzz input %s FAILED\n", path);
	CU_ASSERT(CHILD_EXITED(st, 0));
	free(data);
}

/*
 * test/fuzz/NAME of the source tree: the build runs the tests from its
 * own directory, where __FILE__ is this file's path as compiled.
 */
static bool fuzz_dir(const char *name, char *out, size_t n)
{
	char file[] = __FILE__;
	const char *env = getenv("UCOW_TEST_SRCDIR");
	if (env && *env)
		snprintf(out, n, "%s/test/fuzz/%s", env, name);
	else
		snprintf(out, n, "%s/fuzz/%s", dirname(file), name);
	struct stat st;
	if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
		return true;
	fprintf(stderr, "\n%s: not found (set UCOW_TEST_SRCDIR to the source "
		"tree)\n", out);
	return false;
}

static int input_entry(const struct dirent *e)
{
	return is_input_name(e->d_name);
}

/*
 * The names are read, and the directory closed, before the first input
 * runs in its forked child: a child that exits with the parent's DIR open
 * held it only through a pointer into its middle, which valgrind counts as
 * a leak (and fails the child).
 */
static unsigned replay_dir(const char *name)
{
	char dir[1024], path[2048];
	CU_ASSERT_FATAL(fuzz_dir(name, dir, sizeof dir));
	struct dirent **names = NULL;
	int n = scandir(dir, &names, input_entry, alphasort);
	CU_ASSERT_FATAL(n >= 0);
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
		free(names[i]);
		replay_file(path);
	}
	free(names);
	return (unsigned)n;
}

static void test_fuzz_corpus_replays(void)
{
	CU_ASSERT(replay_dir("corpus") > 0);
}

static void test_fuzz_regressions_replay(void)
{
	unsigned n = replay_dir("regressions");
	printf("(%u inputs) ", n);
	fflush(stdout);
}

void add_model_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_recorded_choices_replay_as_input),
		TEST(test_model_fixed_seeds),
		TEST(test_model_seed_from_time),
		TEST(test_threads_model_fixed_seed),
		TEST(test_threads_model_seed_from_time),
		TEST(test_fuzz_corpus_replays),
		TEST(test_fuzz_regressions_replay),
		{NULL, NULL},
	};
	add_suite("model", tests);
}
