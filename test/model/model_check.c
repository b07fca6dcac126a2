/*
 * Checks of the model: region content against shadows, and the invariants
 * the per-region and process-wide counters must keep.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <string.h>

#include "model_internal.h"

/* Lists up to 8 pages of [from, to) where the region and shadow differ. */
static void list_pages(const struct model *m, const struct slot *s,
		       size_t from, size_t to, char *out, size_t n)
{
	const unsigned char *p = ucow_base(s->r);
	size_t listed = 0, used = 0;
	out[0] = '\0';
	for (size_t pg = from / m->ps; pg * m->ps < to && listed < 8; pg++) {
		size_t lo = pg * m->ps, hi = min_size(lo + m->ps, to);
		if (memcmp(p + lo, s->shadow + lo, hi - lo) == 0 || used >= n)
			continue;
		used += (size_t)snprintf(out + used, n - used, " %zu", pg);
		listed++;
	}
}

static _Noreturn void report_mismatch(const struct model *m,
				      const struct slot *s, size_t from,
				      size_t to)
{
	const unsigned char *p = ucow_base(s->r);
	size_t first = from;
	while (p[first] == s->shadow[first])
		first++;
	char pages[128];
	list_pages(m, s, from, to, pages, sizeof pages);
	model_fail(m,
		   "region #%u (%s, %zu pages) differs from its shadow at byte "
		   "%zu (page %zu): holds 0x%02x, must hold 0x%02x; pages that "
		   "differ in [%zu, %zu):%s",
		   s->id, s->snapshot ? "snapshot" : "writable", s->size / m->ps,
		   first, first / m->ps, p[first], s->shadow[first], from, to,
		   pages);
}

static void check_bytes(const struct model *m, const struct slot *s,
			size_t from, size_t to)
{
	const unsigned char *p = ucow_base(s->r);
	MCHECK(m, p != NULL);
	if (from < to && memcmp(p + from, s->shadow + from, to - from) != 0)
		report_mismatch(m, s, from, to);
}

void check_slot(const struct model *m, const struct slot *s)
{
	check_bytes(m, s, 0, s->size);
}

void check_all(const struct model *m)
{
	for (unsigned i = 0; i < MODEL_SLOTS; i++)
		if (m->slot[i].r)
			check_slot(m, &m->slot[i]);
}

void check_range_everywhere(const struct model *m, size_t from, size_t to)
{
	from -= from % m->ps;
	to += (m->ps - to % m->ps) % m->ps;
	for (unsigned i = 0; i < MODEL_SLOTS; i++) {
		const struct slot *s = &m->slot[i];
		if (s->r)
			check_bytes(m, s, min_size(from, s->size),
				    min_size(to, s->size));
	}
}

static bool all_zero(const unsigned char *p, size_t len)
{
	return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

static size_t zero_shadow_pages(const struct model *m, const struct slot *s)
{
	size_t n = 0;
	for (size_t off = 0; off < s->size; off += m->ps)
		n += all_zero(s->shadow + off, m->ps);
	return n;
}

struct ucow_stats check_stats(const struct model *m, const struct slot *s)
{
	struct ucow_stats st;
	MCHECK(m, ucow_stats(s->r, &st) == 0);
	MCHECK(m, st.pages == s->size / m->ps);
	MCHECK(m, st.zero_pages + st.shared_pages + st.private_pages == st.pages);
	/* A page written without a fault must be its frame's only user. */
	MCHECK(m, st.writable_pages <= st.private_pages);
	if (s->snapshot)
		MCHECK(m, st.writable_pages == 0);
	/* A page holding a non-zero byte cannot be the zero page. */
	MCHECK(m, st.zero_pages <= zero_shadow_pages(m, s));
	return st;
}

void check_global(const struct model *m)
{
	size_t private_pages = 0, shared_pages = 0;
	for (unsigned i = 0; i < MODEL_SLOTS; i++) {
		if (!m->slot[i].r)
			continue;
		struct ucow_stats st = check_stats(m, &m->slot[i]);
		private_pages += st.private_pages;
		shared_pages += st.shared_pages;
	}
	struct ucow_global_stats g;
	MCHECK(m, ucow_global_stats(&g) == 0);
	MCHECK(m, g.regions == m->live);
	/* Every frame in use is mapped: once if private, at least twice if
	 * shared. More frames than that is a leak. */
	MCHECK(m, g.frames >= private_pages);
	MCHECK(m, g.frames <= private_pages + shared_pages / 2);
}

void check_shares_all(const struct model *m, const struct slot *copy,
		      const struct slot *src)
{
	struct ucow_stats c = check_stats(m, copy), s = check_stats(m, src);
	MCHECK(m, c.zero_pages == s.zero_pages);
	MCHECK(m, c.private_pages == 0);
	MCHECK(m, s.private_pages == 0);
}
