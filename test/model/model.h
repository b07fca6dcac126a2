/*
 * Model-based tests of ucow: random operations on many regions, each region
 * checked byte for byte against a plain-memory copy (its shadow) of what it
 * must hold. Shared by the CUnit suite "model", the soak program and the
 * fuzz harness.
 *
 * A failed check prints what failed, the last operations, the seed and how
 * to reproduce the run, then aborts: a test runs the model in a child.
 * The model needs a process (or forked child) with no other live region,
 * since it checks ucow's process-wide counters. With UCOW_MODEL_TRACE set in
 * the environment every operation is printed as it starts.
 */
#ifndef UCOW_TEST_MODEL_H
#define UCOW_TEST_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "choices.h"

struct model_config {
	uint64_t seed;          /* printed on failure (0 for a fuzz input) */
	unsigned long max_ops;  /* an input may end before */
	const char *reproduce;  /* how to rerun this, printed on failure */
};

/* Runs operations decided by `ch` until max_ops or the end of its input. */
void model_run(const struct model_config *cfg, struct choices *ch);

/* model_run from a seed, and from a fuzz input (at most MODEL_INPUT_OPS). */
void model_run_seed(uint64_t seed, unsigned long ops, const char *reproduce);
enum { MODEL_INPUT_OPS = 4096 };
void model_run_input(const void *data, size_t len, const char *reproduce);

/*
 * The threaded variant: `writers` threads do random writes to regions of
 * their own, take snapshots of them and revert to those snapshots, while
 * the calling thread clones and snapshots their regions and checks each
 * copy is a point-in-time image of its writer's history.
 */
struct threads_config {
	uint64_t seed;
	unsigned writers;
	unsigned long ops_per_writer;
	const char *reproduce;
};
void model_threads_run(const struct threads_config *cfg);

#endif
