/*
 * The operations of the single-threaded model. Each one notes what it does,
 * calls ucow, applies the same change to the shadows and checks the regions
 * it touched.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static void occupy(struct model *m, struct slot *s, ucow_region *r,
		   const struct slot *src, bool snapshot)
{
	s->r = r;
	s->size = ucow_size(r);
	s->shadow = src ? malloc(s->size) : calloc(1, s->size);
	MCHECK(m, s->shadow != NULL);
	if (src)
		memcpy(s->shadow, src->shadow, s->size);
	s->snapshot = snapshot;
	s->id = m->next_id++;
	m->live++;
}

void model_destroy_slot(struct model *m, struct slot *s)
{
	ucow_destroy(s->r);
	free(s->shadow);
	s->r = NULL;
	s->shadow = NULL;
	m->live--;
}

static const size_t create_pages[] = {1, 2, 3, 5, 8, 16, 33, 64, 129, 300};

static void op_create(struct model *m)
{
	size_t pages = create_pages[choose(m->ch, sizeof create_pages /
						     sizeof *create_pages)];
	/* Odd sizes round up to the same number of pages. */
	size_t bytes = pages * m->ps - (chance(m->ch, 50) ? choose(m->ch, m->ps) : 0);
	struct slot *s = pick_free(m);
	model_note(m, "create #%u: %zu bytes%s", m->next_id, bytes,
		   s ? "" : " (no free slot: skipped)");
	if (!s)
		return;
	ucow_region *r = ucow_create(bytes);
	MCHECK(m, r != NULL);
	MCHECK(m, ucow_size(r) == pages * m->ps);
	MCHECK(m, ucow_is_snapshot(r) == 0);
	occupy(m, s, r, NULL, false);
	check_slot(m, s);
	MCHECK(m, check_stats(m, s).zero_pages == pages);
}

static void op_copy(struct model *m, bool snapshot)
{
	struct slot *src = pick_live(m), *s = pick_free(m);
	model_note(m, "%s #%u of #%u%s", snapshot ? "snapshot" : "clone",
		   m->next_id, src->id, s ? "" : " (no free slot: skipped)");
	if (!s)
		return;
	ucow_region *r = snapshot ? ucow_snapshot(src->r) : ucow_clone(src->r);
	MCHECK(m, r != NULL);
	MCHECK(m, ucow_size(r) == src->size);
	MCHECK(m, ucow_is_snapshot(r) == snapshot);
	occupy(m, s, r, src, snapshot);
	check_slot(m, src);
	check_slot(m, s);
	check_shares_all(m, s, src);
	check_no_diff(m, s, src);
}

static void op_clone(struct model *m)
{
	op_copy(m, false);
}

static void op_snapshot(struct model *m)
{
	op_copy(m, true);
}

/* The bytes of a write: zeros, one repeated byte, or pseudo-random ones. */
static const char *make_values(struct model *m, size_t len)
{
	switch (choose(m->ch, 4)) {
	case 0:
		memset(m->scratch, 0, len);
		return "zeros";
	case 1:
		memset(m->scratch, (int)choose(m->ch, 256), len);
		return "one byte";
	default:
		rng_fill(m->scratch, len, choose(m->ch, UINT32_MAX));
		return "random bytes";
	}
}

static void op_write(struct model *m)
{
	struct slot *s = pick_writable(m);
	if (!s) {
		model_note(m, "write: no writable region");
		return;
	}
	size_t off, len;
	choose_run(m->ch, s->size, m->ps, &off, &len);
	const char *values = make_values(m, len);
	bool descending = chance(m->ch, 30);
	model_note(m, "write #%u [%zu, %zu): %s, %s", s->id, off, off + len,
		   values, descending ? "descending stores" : "memcpy");
	char *base = ucow_base(s->r);
	if (descending)
		store_descending(base + off, m->scratch, len);
	else
		memcpy(base + off, m->scratch, len);
	memcpy(s->shadow + off, m->scratch, len);
	check_slot(m, s);
	check_range_everywhere(m, off, off + len);
}

/* Frames are shared only between regions of one size: check those. */
static void check_size_class(const struct model *m, size_t size)
{
	for (unsigned i = 0; i < MODEL_SLOTS; i++)
		if (m->slot[i].r && m->slot[i].size == size)
			check_slot(m, &m->slot[i]);
}

static void op_destroy(struct model *m)
{
	struct slot *s = pick_live(m);
	model_note(m, "destroy #%u", s->id);
	ucow_region *dead = s->r;
	size_t size = s->size;
	model_destroy_slot(m, s);
	/* Detected until a later region reuses the slot: none was made. */
	MCHECK(m, ucow_is_snapshot(dead) == -EBADF);
	MCHECK(m, ucow_base(dead) == NULL);
	MCHECK(m, ucow_size(dead) == 0);
	check_size_class(m, size);
	check_global(m);
}

static void op_revert(struct model *m)
{
	struct slot *dst = pick_live(m), *src = pick_partner(m, dst);
	bool in_place = chance(m->ch, 50);
	model_note(m, "revert%s #%u%s to #%u", in_place ? " in place" : "",
		   dst->id, dst->snapshot ? " (a snapshot)" : "", src->id);
	int rc = in_place ? ucow_revert_in_place(dst->r, src->r)
			  : ucow_revert(dst->r, src->r);
	if (dst->size != src->size)
		MCHECK(m, rc == -EINVAL || (dst->snapshot && rc == -EPERM));
	else
		MCHECK(m, rc == (dst->snapshot ? -EPERM : 0));
	if (rc == 0)
		memmove(dst->shadow, src->shadow, dst->size);
	check_slot(m, dst);
	check_slot(m, src);
	if (rc == 0 && dst != src && !in_place) {
		check_shares_all(m, dst, src);
		check_no_diff(m, dst, src);
	}
	if (rc == 0 && in_place)
		check_no_diff(m, dst, src);
}

static int count_calls(size_t offset, size_t length, void *arg)
{
	(void)offset;
	(void)length;
	++*(unsigned *)arg;
	return 0;
}

static void op_diff(struct model *m)
{
	struct slot *a = pick_live(m), *b = pick_partner(m, a);
	model_note(m, "diff #%u #%u", a->id, b->id);
	check_slot(m, a);
	check_slot(m, b);
	if (a->size == b->size) {
		check_diff(m, a, b);
		return;
	}
	unsigned calls = 0;
	MCHECK(m, ucow_diff(a->r, b->r, count_calls, &calls) == -EINVAL);
	MCHECK(m, calls == 0);
}

/* A kernel write into a range just unshared must work, under any backend. */
static void write_by_kernel(struct model *m, struct slot *s, size_t off,
			    size_t len)
{
	rng_fill(m->scratch, len, choose(m->ch, UINT32_MAX));
	int err = kernel_write(m->pipe, (char *)ucow_base(s->r) + off,
			       m->scratch, len);
	if (err)
		model_fail(m, "read(2) into #%u [%zu, %zu) after ucow_unshare: %s",
			   s->id, off, off + len, strerror(-err));
	memcpy(s->shadow + off, m->scratch, len);
	check_range_everywhere(m, off, off + len);
}

static void op_unshare(struct model *m)
{
	struct slot *s = pick_live(m);
	size_t off = choose(m->ch, s->size), len;
	unsigned variant = (unsigned)choose(m->ch, 10);
	if (variant == 0) /* runs past the end */
		len = s->size - off + 1 + choose(m->ch, m->ps);
	else
		len = choose(m->ch, min_size(MODEL_MAX_UNSHARE_PAGES * m->ps,
					     s->size - off) + 1);
	char *addr = variant == 1 ? (char *)m->scratch : (char *)ucow_base(s->r) + off;
	model_note(m, "unshare #%u%s [%zu, %zu)%s%s", s->id,
		   s->snapshot ? " (a snapshot)" : "", off, off + len,
		   variant == 0 ? " past the end" : "",
		   variant == 1 ? " at a foreign address" : "");
	int rc = ucow_unshare(addr, len);
	if (len == 0)
		MCHECK(m, rc == 0);
	else if (variant == 1)
		MCHECK(m, rc == -EFAULT);
	else if (variant == 0)
		MCHECK(m, rc == -EINVAL || (s->snapshot && rc == -EPERM));
	else
		MCHECK(m, rc == (s->snapshot ? -EPERM : 0));
	check_slot(m, s);
	if (rc == 0 && len > 0 && variant > 1)
		write_by_kernel(m, s, off, len);
}

static void op_stats(struct model *m)
{
	model_note(m, "stats of every region");
	check_global(m);
}

static void op_check(struct model *m)
{
	model_note(m, "check every region");
	check_all(m);
}

struct op {
	void (*run)(struct model *);
	unsigned weight;
};

static const struct op ops[] = {
	{op_write, 40},   {op_create, 5}, {op_clone, 6},   {op_snapshot, 6},
	{op_destroy, 15}, {op_revert, 10}, {op_diff, 8},  {op_unshare, 6},
	{op_stats, 3},    {op_check, 1},
};

void model_step(struct model *m)
{
	unsigned total = 0;
	for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
		total += ops[i].weight;
	unsigned k = (unsigned)choose(m->ch, total);
	size_t i = 0;
	while (k >= ops[i].weight)
		k -= ops[i++].weight;
	/* With no region every operation but create would be a no-op. */
	(m->live ? ops[i].run : op_create)(m);
}

