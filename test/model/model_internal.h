/* The single-threaded model's state, shared by model*.c. */
#ifndef UCOW_TEST_MODEL_INTERNAL_H
#define UCOW_TEST_MODEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <ucow.h>

#include "model.h"

enum {
	MODEL_SLOTS = 16,
	MODEL_HISTORY = 16,  /* operations printed on failure */
	MODEL_NOTE = 160,
	MODEL_FULL_CHECK = 32, /* every region is checked every so many ops */
};

struct slot {
	ucow_region *r;          /* NULL: a free slot */
	unsigned char *shadow;   /* what the region must hold */
	size_t size;             /* ucow_size(): whole pages */
	bool snapshot;
	unsigned id;             /* creation order, for messages */
};

struct model {
	struct slot slot[MODEL_SLOTS];
	unsigned live;
	unsigned next_id;
	struct choices *ch;
	const struct model_config *cfg;
	unsigned long op;
	char history[MODEL_HISTORY][MODEL_NOTE];
	unsigned char *scratch; /* bytes of a write: MODEL_SCRATCH_PAGES */
	int pipe[2];            /* for writes by the kernel */
	size_t ps;
	bool trace; /* UCOW_MODEL_TRACE set: every operation on stderr */
};

static inline size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ---- model.c: failures and the operation history ---------------------- */

/* Records the operation being done, printed if a later check fails. */
void model_note(struct model *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
_Noreturn void model_fail(const struct model *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define MCHECK(m, cond)                                                        \
	do {                                                                   \
		if (!(cond))                                                   \
			model_fail((m), "%s:%d: check failed: %s", __FILE__,   \
				   __LINE__, #cond);                           \
	} while (0)

/* ---- model_ops.c: one random operation --------------------------------- */

void model_step(struct model *m);
void model_destroy_slot(struct model *m, struct slot *s);

/* ---- model_pick.c: which regions an operation works on ---------------- */

struct slot *pick_live(struct model *m);
struct slot *pick_writable(struct model *m);
struct slot *pick_free(struct model *m);
/* Mostly a live region of `size` bytes (maybe `other` itself), else any. */
struct slot *pick_partner(struct model *m, const struct slot *other);

/* ---- model_check.c: regions against their shadows and the counters ----- */

void check_slot(const struct model *m, const struct slot *s);
void check_all(const struct model *m);
/* Bytes [from, to) of every live region, clamped to its size. */
void check_range_everywhere(const struct model *m, size_t from, size_t to);
struct ucow_stats check_stats(const struct model *m, const struct slot *s);
void check_global(const struct model *m);
/* After a clone, snapshot or revert made `copy` share all of `src`. */
void check_shares_all(const struct model *m, const struct slot *copy,
		      const struct slot *src);

/* ---- model_diff.c: ucow_diff against the shadows ----------------------- */

void check_diff(const struct model *m, const struct slot *a,
		const struct slot *b);
/* ucow_diff(a, b) must report nothing: a and b share every page. */
void check_no_diff(const struct model *m, const struct slot *a,
		   const struct slot *b);

/* ---- model_write.c: where a write goes and how it is stored ------------ */

enum {
	MODEL_MAX_WRITE_PAGES = 8,
	MODEL_MAX_UNSHARE_PAGES = 16, /* then written by the kernel */
	MODEL_SCRATCH_PAGES = MODEL_MAX_UNSHARE_PAGES,
};
/* A run of bytes in a region of `size` bytes: 1 <= *len <= size - *off. */
void choose_run(struct choices *ch, size_t size, size_t ps, size_t *off,
		size_t *len);
/* Stores byte by byte in increasing address order, never merged. */
void store_ascending(void *dst, const void *src, size_t len);
void store_descending(void *dst, const void *src, size_t len);
/* Writes `len` bytes into [addr, addr + len) through read(2) from a pipe. */
int kernel_write(const int pipe[2], void *addr, const void *src, size_t len);

#endif
