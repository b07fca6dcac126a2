/*
 * The threaded model's state, shared by model_threads.c (the run),
 * model_writer.c (the writers), model_checker.c (the thread that copies
 * their regions) and model_cut.c (the checker's replay of each writer).
 *
 * Each writer logs its operations before doing them: log[i] is written,
 * then `started` becomes i + 1, the operation runs, then `done` becomes
 * i + 1 (release stores). A copy of the writer's region taken while
 * `done` >= d0 and `started` <= d1 must be a state somewhere between the
 * end of op d0 - 1 and the end of op d1 - 1, a write caught halfway
 * included: writes store bytes in increasing address order.
 */
#ifndef UCOW_TEST_MODEL_THREADS_H
#define UCOW_TEST_MODEL_THREADS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ucow.h>

#include "model.h"

enum { WRITER_SNAPS = 3, MAX_WRITERS = 8 };

enum wop_kind { WOP_WRITE, WOP_SNAPSHOT, WOP_REVERT };

struct wop {
	enum wop_kind kind;
	unsigned slot;   /* SNAPSHOT, REVERT: which of the writer's snapshots */
	bool in_place;   /* REVERT: ucow_revert_in_place */
	size_t off, len; /* WRITE */
	uint64_t values; /* WRITE: what the bytes derive from */
};

struct writer {
	unsigned id;
	const struct threads_config *cfg;
	pthread_t thread;
	struct choices ch;
	ucow_region *r;
	size_t size;
	unsigned char *shadow, *values;
	ucow_region *snap[WRITER_SNAPS];
	unsigned char *snap_shadow[WRITER_SNAPS];
	struct wop *log;
	unsigned long started, done; /* atomics: see above */
};

/* The checker's replay of one writer's history, from its log. */
struct replica {
	size_t size;
	unsigned char *mem, *values;
	unsigned char *snap[WRITER_SNAPS];
	unsigned long pos; /* operations applied */
};

_Noreturn void threads_fail(const struct threads_config *cfg,
			    const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define TCHECK(cfg, cond)                                                      \
	do {                                                                   \
		if (!(cond))                                                   \
			threads_fail((cfg), "%s:%d: check failed: %s",         \
				     __FILE__, __LINE__, #cond);               \
	} while (0)

/* model_writer.c */
void writer_setup(struct writer *w, unsigned id,
		  const struct threads_config *cfg);
void *writer_main(void *arg);
/* The writer's region and snapshots against its shadows. */
void writer_verify(const struct writer *w);
void writer_teardown(struct writer *w);
/* The bytes a write stores, from op->values. */
void wop_values(const struct wop *op, unsigned char *buf);

/* model_cut.c */
void replica_init(struct replica *rep, const struct writer *w);
void replica_free(struct replica *rep);
/*
 * Whether `img`, a copy of w's region taken while done >= d0 and
 * started <= d1, is a state of its history. Moves the replica forward to
 * the earliest state that matches (later copies cannot be earlier).
 */
bool replica_find_cut(struct replica *rep, const struct writer *w,
		      const unsigned char *img, unsigned long d0,
		      unsigned long d1);

/* model_checker.c: copies the writers' regions until they are all done. */
void checker_run(struct writer *w, struct replica *rep, unsigned n,
		 const struct threads_config *cfg);

#endif
