/*
 * The checker of the threaded model: while the writers run, it clones and
 * snapshots their regions, checks each copy is a point-in-time state of its
 * writer's history, and keeps a few copies, writing into the clones and
 * reverting them to each other, checked against what they must hold.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "model_threads.h"

enum { HELD = 4 };

struct held {
	ucow_region *r; /* NULL: free */
	unsigned char *expect;
	unsigned writer;
	bool snapshot;
};

struct checker {
	struct writer *w;
	struct replica *rep;
	unsigned n;
	const struct threads_config *cfg;
	struct choices ch;
	struct held held[HELD];
	unsigned char *values;
	unsigned long copies;
};

static void verify_held(const struct checker *c, const struct held *h)
{
	const unsigned char *p = ucow_base(h->r);
	TCHECK(c->cfg, p != NULL);
	if (memcmp(p, h->expect, c->w[h->writer].size) != 0)
		threads_fail(c->cfg, "a %s of writer %u's region changed after "
			     "it was taken", h->snapshot ? "snapshot" : "clone",
			     h->writer);
}

static void drop_held(struct checker *c, struct held *h)
{
	if (!h->r)
		return;
	verify_held(c, h);
	ucow_destroy(h->r);
	free(h->expect);
	h->r = NULL;
}

/* Stores into a clone while its writer goes on writing the original. */
static void write_clone(struct checker *c, struct held *h)
{
	size_t off, len, size = c->w[h->writer].size;
	choose_run(&c->ch, size, ucow_page_size(), &off, &len);
	rng_fill(c->values, len, choose(&c->ch, UINT32_MAX));
	memcpy((char *)ucow_base(h->r) + off, c->values, len);
	memcpy(h->expect + off, c->values, len);
	verify_held(c, h);
}

/* Reverts a held clone to another held copy of the same writer's region. */
static void revert_clone(struct checker *c, struct held *dst)
{
	struct held *src = &c->held[choose(&c->ch, HELD)];
	if (!src->r || src->writer != dst->writer)
		return;
	TCHECK(c->cfg, (chance(&c->ch, 50) ? ucow_revert_in_place
					    : ucow_revert)(dst->r, src->r) == 0);
	memcpy(dst->expect, src->expect, c->w[dst->writer].size);
	verify_held(c, dst);
}

static void take_copy(struct checker *c, struct held *h, unsigned i)
{
	struct writer *w = &c->w[i];
	bool snapshot = chance(&c->ch, 50);
	unsigned long d0 = __atomic_load_n(&w->done, __ATOMIC_ACQUIRE);
	ucow_region *r = snapshot ? ucow_snapshot(w->r) : ucow_clone(w->r);
	unsigned long d1 = __atomic_load_n(&w->started, __ATOMIC_ACQUIRE);
	TCHECK(c->cfg, r != NULL);
	if (!replica_find_cut(&c->rep[i], w, ucow_base(r), d0, d1))
		threads_fail(c->cfg, "a %s of writer %u's region, taken after "
			     "its op %lu ended and before op %lu started, is "
			     "no state of its history",
			     snapshot ? "snapshot" : "clone", i, d0, d1);
	*h = (struct held){r, malloc(w->size), i, snapshot};
	TCHECK(c->cfg, h->expect != NULL);
	memcpy(h->expect, ucow_base(r), w->size);
	c->copies++;
}

static bool writers_done(const struct checker *c)
{
	for (unsigned i = 0; i < c->n; i++)
		if (__atomic_load_n(&c->w[i].done, __ATOMIC_ACQUIRE) <
		    c->cfg->ops_per_writer)
			return false;
	return true;
}

static void check_round(struct checker *c)
{
	struct held *h = &c->held[choose(&c->ch, HELD)];
	drop_held(c, h);
	take_copy(c, h, (unsigned)choose(&c->ch, c->n));
	if (!h->snapshot && chance(&c->ch, 50))
		write_clone(c, h);
	if (!h->snapshot && chance(&c->ch, 20))
		revert_clone(c, h);
}

void checker_run(struct writer *w, struct replica *rep, unsigned n,
		 const struct threads_config *cfg)
{
	struct checker c;
	memset(&c, 0, sizeof c);
	c.w = w;
	c.rep = rep;
	c.n = n;
	c.cfg = cfg;
	choices_seeded(&c.ch, cfg->seed ^ 0xc0ffee);
	c.values = malloc(MODEL_MAX_WRITE_PAGES * ucow_page_size());
	TCHECK(cfg, c.values != NULL);
	while (!writers_done(&c))
		check_round(&c);
	/* Copies of every writer's final state, then nothing held. */
	for (unsigned i = 0; i < n; i++) {
		drop_held(&c, &c.held[0]);
		take_copy(&c, &c.held[0], i);
	}
	for (unsigned k = 0; k < HELD; k++)
		drop_held(&c, &c.held[k]);
	TCHECK(cfg, c.copies > n);
	free(c.values);
	choices_free(&c.ch);
}
