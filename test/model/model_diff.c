/*
 * ucow_diff against the shadows. Diff reports pages whose frames differ,
 * which may include pages with equal bytes (not right after an in-place
 * revert: check_no_diff); what must hold is that every page whose bytes
 * differ is reported, in page-aligned, ordered, maximal
 * (so never touching) runs, the same whichever region comes first.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

enum { STOP_VALUE = 7 };

struct ranges {
	size_t n, cap;
	size_t *off, *len;
	size_t stop_at; /* return STOP_VALUE from this call on; 0: never */
};

static int collect(size_t offset, size_t length, void *arg)
{
	struct ranges *r = arg;
	if (r->n < r->cap) {
		r->off[r->n] = offset;
		r->len[r->n] = length;
	}
	r->n++;
	return r->stop_at && r->n >= r->stop_at ? STOP_VALUE : 0;
}

static void ranges_init(const struct model *m, struct ranges *r, size_t pages,
			size_t stop_at)
{
	r->n = 0;
	r->cap = pages + 1;
	r->stop_at = stop_at;
	r->off = malloc(r->cap * sizeof *r->off);
	r->len = malloc(r->cap * sizeof *r->len);
	MCHECK(m, r->off && r->len);
}

static void ranges_free(struct ranges *r)
{
	free(r->off);
	free(r->len);
}

static void check_shape(const struct model *m, const struct ranges *r,
			size_t size)
{
	MCHECK(m, r->n <= r->cap);
	for (size_t i = 0; i < r->n; i++) {
		MCHECK(m, r->off[i] % m->ps == 0 && r->len[i] % m->ps == 0);
		MCHECK(m, r->len[i] > 0 && r->off[i] + r->len[i] <= size);
		if (i > 0)
			MCHECK(m, r->off[i] > r->off[i - 1] + r->len[i - 1]);
	}
}

static void check_covered(const struct model *m, const struct slot *a,
			  const struct slot *b, const struct ranges *r)
{
	size_t next = 0; /* the next reported range */
	for (size_t off = 0; off < a->size; off += m->ps) {
		while (next < r->n && r->off[next] + r->len[next] <= off)
			next++;
		if (next < r->n && r->off[next] <= off)
			continue;
		if (memcmp(a->shadow + off, b->shadow + off, m->ps) != 0)
			model_fail(m, "ucow_diff(#%u, #%u) does not report page "
				   "%zu, whose bytes differ", a->id, b->id,
				   off / m->ps);
	}
}

static bool same_ranges(const struct ranges *x, const struct ranges *y,
			size_t n)
{
	return memcmp(x->off, y->off, n * sizeof *x->off) == 0 &&
	       memcmp(x->len, y->len, n * sizeof *x->len) == 0;
}

/* A non-zero return from the callback stops the walk and is returned. */
static void check_stop(const struct model *m, const struct slot *a,
		       const struct slot *b, const struct ranges *all)
{
	struct ranges r;
	ranges_init(m, &r, a->size / m->ps, 1 + choose(m->ch, all->n));
	MCHECK(m, ucow_diff(a->r, b->r, collect, &r) == STOP_VALUE);
	MCHECK(m, r.n == r.stop_at);
	MCHECK(m, same_ranges(&r, all, r.n));
	ranges_free(&r);
}

void check_diff(const struct model *m, const struct slot *a,
		const struct slot *b)
{
	size_t pages = a->size / m->ps;
	struct ranges ab, ba;
	ranges_init(m, &ab, pages, 0);
	ranges_init(m, &ba, pages, 0);
	MCHECK(m, ucow_diff(a->r, b->r, collect, &ab) == 0);
	check_shape(m, &ab, a->size);
	check_covered(m, a, b, &ab);
	MCHECK(m, ucow_diff(b->r, a->r, collect, &ba) == 0);
	MCHECK(m, ba.n == ab.n && same_ranges(&ab, &ba, ab.n));
	if (a == b)
		MCHECK(m, ab.n == 0);
	if (ab.n)
		check_stop(m, a, b, &ab);
	ranges_free(&ab);
	ranges_free(&ba);
}

void check_no_diff(const struct model *m, const struct slot *a,
		   const struct slot *b)
{
	struct ranges r;
	ranges_init(m, &r, a->size / m->ps, 0);
	MCHECK(m, ucow_diff(a->r, b->r, collect, &r) == 0);
	if (r.n)
		model_fail(m, "ucow_diff(#%u, #%u) reports %zu ranges, from "
			   "byte %zu, between regions of equal content",
			   a->id, b->id, r.n, r.off[0]);
	ranges_free(&r);
}
