/*
 * ucow bench, figure 4: copies of a sparse region.
 *
 * A region of which 1% of the pages were written, in runs of 16 pages at
 * random places (a heap's live data comes in runs, not single pages), is
 * copied: by ucow_clone, and by a deep copy (a fresh anonymous mapping and a
 * memcpy of the whole region). Then the copy's user writes 1% of it — the
 * same pages. Memory per copy is the growth of ucow's frame_bytes after those
 * writes, against the growth of the process's resident memory for the deep
 * copy.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"
#include "cli.h"

#define RUN_PAGES 16

struct sparse {
	struct bench *b;
	size_t size, pages, page;
	size_t *written, nwritten;  /* the pages written, run by run */
	ucow_region *src;
};

/* Picks 1% of the pages as runs of RUN_PAGES at random places. */
static int pick_runs(struct sparse *s)
{
	size_t run = s->pages < RUN_PAGES ? 1 : RUN_PAGES;
	size_t slots = s->pages / run;
	size_t nruns = (bench_one_percent(s->pages) + run - 1) / run;
	size_t *starts = bench_sample(slots, nruns, s->b->seed);
	s->written = malloc(nruns * run * sizeof(*s->written));
	if (!starts || !s->written) {
		free(starts);
		return bench_lib_error("malloc", ENOMEM);
	}
	s->nwritten = 0;
	for (size_t i = 0; i < nruns; i++)
		for (size_t k = 0; k < run; k++)
			s->written[s->nwritten++] = starts[i] * run + k;
	free(starts);
	return 0;
}

/* Reads every page once, so that no round pays for mapping the zero page. */
static void read_all(const char *base, size_t pages, size_t page)
{
	const volatile char *p = base;
	char sum = 0;
	for (size_t i = 0; i < pages; i++)
		sum += p[i * page];
	__asm__ __volatile__("" : : "r"(sum));
}

static int setup(struct sparse *s)
{
	bench_progress(s->b, "writing 1%% of the source region");
	if (pick_runs(s))
		return 1;
	s->src = ucow_create(s->size);
	if (!s->src)
		return bench_lib_error("ucow_create", errno);
	bench_touch(ucow_base(s->src), s->page, s->written, s->nwritten);
	read_all(ucow_base(s->src), s->pages, s->page);
	return 0;
}

static int ucow_round(struct sparse *s, double *secs, double *bytes, struct bench_counters *c)
{
	size_t before = bench_frame_bytes();
	double t0 = cli_now();
	ucow_region *clone = ucow_clone(s->src);
	*secs = cli_now() - t0;
	if (!clone)
		return bench_lib_error("ucow_clone", errno);
	bench_touch(ucow_base(clone), s->page, s->written, s->nwritten);
	*bytes = (double)bench_frame_bytes() - (double)before;
	int rc = bench_counters(clone, c);
	ucow_destroy(clone);
	return rc;
}

static int deep_round(struct sparse *s, double *secs, double *bytes)
{
	struct cli_mem m0, m1;
	cli_read_mem(&m0);
	char *dst = mmap(NULL, s->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		return bench_lib_error("mmap", errno);
	double t0 = cli_now();
	memcpy(dst, ucow_base(s->src), s->size);
	*secs = cli_now() - t0;
	bench_touch(dst, s->page, s->written, s->nwritten);
	cli_read_mem(&m1);
	*bytes = 1024.0 * (double)(m1.rss_kb - m0.rss_kb);
	munmap(dst, s->size);
	return 0;
}

static int rounds(struct sparse *s, struct bench_row *time, struct bench_row *mem)
{
	struct bench *b = s->b;
	double t = 0.0, bytes = 0.0;
	for (unsigned r = 0; r < b->rounds; r++) {
		bench_progress(b, "round %u/%u", r + 1, b->rounds);
		if (ucow_round(s, &t, &bytes, &mem->counters))
			return 1;
		bench_add(&time->ucow, t);
		bench_add(&mem->ucow, bytes);
		if (deep_round(s, &t, &bytes))
			return 1;
		bench_add(&time->alt[0], t);
		bench_add(&mem->alt[0], bytes);
	}
	return 0;
}

int bench_sparse(struct bench *b)
{
	struct sparse s = { .b = b, .size = b->sparse_size, .page = b->page };
	s.pages = s.size / s.page;
	char sz[32], what[64];
	snprintf(what, sizeof(what), "figure 4 at %s", bench_fmt_size(sz, s.size));
	if (!bench_fits(b, 1.1 * (double)s.size, what)) {
		b->step++;
		return 0;
	}
	bench_step(b, "clone of a sparse region, %s", sz);
	struct bench_row *time = bench_row_new(b, 4, "clone, 1% written", s.size, UNIT_SECONDS);
	struct bench_row *mem = bench_row_new(b, 4, "memory per copy, 1% written", s.size,
					      UNIT_BYTES);
	if (!time || !mem)
		return bench_lib_error("malloc", ENOMEM);
	bench_row_alt(time, "deep copy (mmap + memcpy)");
	bench_row_alt(mem, "deep copy (resident growth)");
	mem->has_counters = true;
	int rc = setup(&s) || rounds(&s, time, mem);
	ucow_destroy(s.src);
	free(s.written);
	return rc;
}
