/*
 * The checker's replay of a writer's history, and the test that a copy of
 * its region is one of the states of that history (see model_threads.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "model_threads.h"

void replica_init(struct replica *rep, const struct writer *w)
{
	memset(rep, 0, sizeof *rep);
	rep->size = w->size;
	rep->mem = malloc(w->size);
	rep->values = malloc(MODEL_MAX_WRITE_PAGES * ucow_page_size());
	TCHECK(w->cfg, rep->mem && rep->values);
	memcpy(rep->mem, w->shadow, w->size);
	for (unsigned s = 0; s < WRITER_SNAPS; s++) {
		rep->snap[s] = malloc(w->size);
		TCHECK(w->cfg, rep->snap[s] != NULL);
	}
}

void replica_free(struct replica *rep)
{
	free(rep->mem);
	free(rep->values);
	for (unsigned s = 0; s < WRITER_SNAPS; s++)
		free(rep->snap[s]);
}

static void apply(struct replica *rep, const struct wop *op)
{
	switch (op->kind) {
	case WOP_WRITE:
		wop_values(op, rep->values);
		memcpy(rep->mem + op->off, rep->values, op->len);
		break;
	case WOP_SNAPSHOT:
		memcpy(rep->snap[op->slot], rep->mem, rep->size);
		break;
	case WOP_REVERT:
		memcpy(rep->mem, rep->snap[op->slot], rep->size);
		break;
	}
	rep->pos++;
}

/*
 * img holds the replica's state with a prefix (maybe empty or whole) of
 * op's bytes stored: outside the op's range it is the replica; inside it,
 * up to the last byte that differs from the replica, it is the op's bytes.
 */
static bool is_partial_write(struct replica *rep, const struct wop *op,
			     const unsigned char *img)
{
	size_t end = op->off + op->len;
	if (memcmp(img, rep->mem, op->off) != 0 ||
	    memcmp(img + end, rep->mem + end, rep->size - end) != 0)
		return false;
	size_t last = op->len;
	while (last > 0 && img[op->off + last - 1] == rep->mem[op->off + last - 1])
		last--;
	wop_values(op, rep->values);
	return memcmp(img + op->off, rep->values, last) == 0;
}

bool replica_find_cut(struct replica *rep, const struct writer *w,
		      const unsigned char *img, unsigned long d0,
		      unsigned long d1)
{
	while (rep->pos < d0)
		apply(rep, &w->log[rep->pos]);
	for (;;) {
		const struct wop *op = rep->pos < d1 ? &w->log[rep->pos] : NULL;
		if (op && op->kind == WOP_WRITE ? is_partial_write(rep, op, img)
						: memcmp(img, rep->mem, rep->size) == 0)
			return true;
		if (!op)
			return false;
		apply(rep, op);
	}
}
