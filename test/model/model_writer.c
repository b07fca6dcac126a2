/*
 * A writer of the threaded model: random writes to its own region, and
 * snapshots of it and reverts to them, checked against shadows it owns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "model_threads.h"

static const size_t writer_pages[] = {1, 3, 16, 40, 64};

enum { VERIFY_EVERY = 16 };

void writer_setup(struct writer *w, unsigned id,
		  const struct threads_config *cfg)
{
	size_t ps = ucow_page_size();
	memset(w, 0, sizeof *w);
	w->id = id;
	w->cfg = cfg;
	choices_seeded(&w->ch, cfg->seed + id);
	size_t pages = writer_pages[choose(&w->ch, sizeof writer_pages /
						      sizeof *writer_pages)];
	w->r = ucow_create(pages * ps - choose(&w->ch, ps));
	TCHECK(cfg, w->r != NULL);
	w->size = ucow_size(w->r);
	TCHECK(cfg, w->size == pages * ps);
	w->shadow = malloc(w->size);
	w->values = malloc(MODEL_MAX_WRITE_PAGES * ps);
	w->log = calloc(cfg->ops_per_writer, sizeof *w->log);
	TCHECK(cfg, w->shadow && w->values && w->log);
	for (unsigned s = 0; s < WRITER_SNAPS; s++) {
		w->snap_shadow[s] = malloc(w->size);
		TCHECK(cfg, w->snap_shadow[s] != NULL);
	}
	rng_fill(w->shadow, w->size, cfg->seed ^ (0x5eedull << 32) ^ id);
	memcpy(ucow_base(w->r), w->shadow, w->size);
}

void wop_values(const struct wop *op, unsigned char *buf)
{
	if (op->values % 4 == 0)
		memset(buf, (int)(op->values >> 8) & 0xff, op->len);
	else
		rng_fill(buf, op->len, op->values);
}

static struct wop next_op(struct writer *w)
{
	struct wop op = {WOP_WRITE, 0, false, 0, 0, 0};
	unsigned k = (unsigned)choose(&w->ch, 100);
	op.slot = (unsigned)choose(&w->ch, WRITER_SNAPS);
	if (k < 6)
		op.kind = WOP_SNAPSHOT;
	else if (k < 12 && w->snap[op.slot]) {
		op.kind = WOP_REVERT;
		op.in_place = chance(&w->ch, 50);
	}
	if (op.kind != WOP_WRITE)
		return op;
	choose_run(&w->ch, w->size, ucow_page_size(), &op.off, &op.len);
	op.values = choose(&w->ch, UINT32_MAX);
	return op;
}

static void same_bytes(const struct writer *w, const ucow_region *r,
		       const unsigned char *shadow, const char *what)
{
	const unsigned char *p = ucow_base(r);
	TCHECK(w->cfg, p != NULL);
	if (memcmp(p, shadow, w->size) == 0)
		return;
	size_t i = 0;
	while (p[i] == shadow[i])
		i++;
	threads_fail(w->cfg, "writer %u: %s differs from its shadow at byte %zu",
		     w->id, what, i);
}

static void do_op(struct writer *w, const struct wop *op)
{
	switch (op->kind) {
	case WOP_WRITE:
		wop_values(op, w->values);
		store_ascending((char *)ucow_base(w->r) + op->off, w->values,
				op->len);
		memcpy(w->shadow + op->off, w->values, op->len);
		break;
	case WOP_SNAPSHOT:
		ucow_destroy(w->snap[op->slot]);
		w->snap[op->slot] = ucow_snapshot(w->r);
		TCHECK(w->cfg, w->snap[op->slot] != NULL);
		memcpy(w->snap_shadow[op->slot], w->shadow, w->size);
		same_bytes(w, w->snap[op->slot], w->shadow, "a new snapshot");
		break;
	case WOP_REVERT:
		TCHECK(w->cfg, (op->in_place ? ucow_revert_in_place
					     : ucow_revert)(w->r, w->snap[op->slot]) == 0);
		memcpy(w->shadow, w->snap_shadow[op->slot], w->size);
		same_bytes(w, w->r, w->shadow, "its region just reverted");
		break;
	}
}

void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (unsigned long i = 0; i < w->cfg->ops_per_writer; i++) {
		w->log[i] = next_op(w);
		__atomic_store_n(&w->started, i + 1, __ATOMIC_RELEASE);
		do_op(w, &w->log[i]);
		__atomic_store_n(&w->done, i + 1, __ATOMIC_RELEASE);
		if (i % VERIFY_EVERY == VERIFY_EVERY - 1)
			writer_verify(w);
	}
	return NULL;
}

void writer_verify(const struct writer *w)
{
	same_bytes(w, w->r, w->shadow, "its region");
	for (unsigned s = 0; s < WRITER_SNAPS; s++)
		if (w->snap[s])
			same_bytes(w, w->snap[s], w->snap_shadow[s], "a snapshot");
}

void writer_teardown(struct writer *w)
{
	for (unsigned s = 0; s < WRITER_SNAPS; s++) {
		ucow_destroy(w->snap[s]);
		free(w->snap_shadow[s]);
	}
	ucow_destroy(w->r);
	free(w->shadow);
	free(w->values);
	free(w->log);
	choices_free(&w->ch);
}
