/*
 * make soak: the model (single-threaded and threaded runs) for a bounded
 * time under the backend UCOW_BACKEND names.
 *
 *   ucow_soak [--seconds N] [--seed N]
 *       Runs seeded from N (default: from the time), one after another,
 *       until N seconds have passed. Run 0 uses the seed itself, so the seed
 *       printed with a failed run reproduces it as --seed.
 *   ucow_soak --seed N --ops N --record FILE
 *       One single-threaded run; writes the bytes it decided from to FILE,
 *       a fuzz input that replays the run (how test/fuzz/corpus was made).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ucow.h>

#include "input_file.h"
#include "model.h"

enum {
	MODEL_OPS = 20000,
	THREAD_OPS = 4000,
	PROGRESS_SECONDS = 30,
};

struct options {
	unsigned long seconds, ops;
	uint64_t seed;
	const char *record;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t seed_from_time(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t x = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^
		     ((uint64_t)getpid() << 40);
	return splitmix64(&x) >> 1; /* fits a signed shell number too */
}

static bool parse(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{"seconds", required_argument, NULL, 't'},
		{"seed", required_argument, NULL, 's'},
		{"ops", required_argument, NULL, 'n'},
		{"record", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0},
	};
	*o = (struct options){300, MODEL_OPS, seed_from_time(), NULL};
	int c;
	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		if (c == 't')
			o->seconds = strtoul(optarg, NULL, 0);
		else if (c == 's')
			o->seed = strtoull(optarg, NULL, 0);
		else if (c == 'n')
			o->ops = strtoul(optarg, NULL, 0);
		else if (c == 'r')
			o->record = optarg;
		else
			return false;
	}
	return optind == argc;
}

static int record(const struct options *o)
{
	struct choices ch;
	choices_seeded(&ch, o->seed);
	choices_start_recording(&ch);
	struct model_config cfg = {o->seed, o->ops, "ucow_soak --record"};
	model_run(&cfg, &ch);
	int err = ch.record_failed ? -1 : write_input(o->record, ch.record,
						      ch.record_len);
	printf("%s: %zu bytes, %lu ops from seed %llu%s\n", o->record,
	       ch.record_len, o->ops, (unsigned long long)o->seed,
	       err ? ": FAILED to write" : "");
	choices_free(&ch);
	return err ? 1 : 0;
}

/* One run; returns how many operations it did. */
static unsigned long soak_run(uint64_t seed, const char *reproduce)
{
	if (seed % 3 == 0) {
		struct threads_config cfg = {seed, 2 + (unsigned)(seed / 3 % 2),
					     THREAD_OPS, reproduce};
		model_threads_run(&cfg);
		return cfg.writers * cfg.ops_per_writer;
	}
	model_run_seed(seed, MODEL_OPS, reproduce);
	return MODEL_OPS;
}

static void soak(const struct options *o)
{
	const char *backend = ucow_backend() ? ucow_backend() : "(unknown)";
	printf("ucow soak: backend %s, seed %llu, %lu s (reproduce: make soak "
	       "SOAK_SEED=%llu SOAK_BACKENDS=%s)\n", backend,
	       (unsigned long long)o->seed, o->seconds,
	       (unsigned long long)o->seed, backend);
	fflush(stdout);
	double start = now(), last = start;
	uint64_t state = o->seed, seed = o->seed;
	unsigned long runs = 0, ops = 0;
	for (; now() - start < (double)o->seconds; runs++) {
		char reproduce[200];
		snprintf(reproduce, sizeof reproduce,
			 "make soak SOAK_SEED=%llu SOAK_BACKENDS=%s (it was run "
			 "%lu of SOAK_SEED=%llu)", (unsigned long long)seed,
			 backend, runs, (unsigned long long)o->seed);
		ops += soak_run(seed, reproduce);
		seed = splitmix64(&state) >> 1;
		if (now() - last >= PROGRESS_SECONDS) {
			last = now();
			printf("ucow soak: %.0f s: %lu runs, %lu operations\n",
			       last - start, runs + 1, ops);
			fflush(stdout);
		}
	}
	printf("ucow soak: backend %s, seed %llu: %lu runs, %lu operations in "
	       "%.0f s, no failure\n", backend, (unsigned long long)o->seed,
	       runs, ops, now() - start);
}

int main(int argc, char **argv)
{
	struct options o;
	if (!parse(argc, argv, &o)) {
		fprintf(stderr, "usage: %s [--seconds N] [--seed N] | --seed N "
			"--ops N --record FILE\n", argv[0]);
		return 2;
	}
	if (o.record)
		return record(&o);
	soak(&o);
	return 0;
}
