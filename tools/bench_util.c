/*
 * ucow bench: statistics, page orders, page touching and the ucow helpers
 * every figure shares.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"

/* ---- rows and statistics ---- */

static int series_init(struct bench_series *s, const char *name, unsigned rounds)
{
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->n = 0;
	s->v = calloc(rounds, sizeof(*s->v));
	s->cap = s->v ? rounds : 0;
	return s->v ? 0 : -1;
}

struct bench_row *bench_row_new(struct bench *b, int figure, const char *measure,
				size_t size, enum bench_unit unit)
{
	/* Rows never move (figures keep pointers to theirs): room is made once. */
	if (b->nrows == b->cap)
		return NULL;
	struct bench_row *row = &b->rows[b->nrows];
	memset(row, 0, sizeof(*row));
	row->figure = figure;
	snprintf(row->measure, sizeof(row->measure), "%s", measure);
	row->size = size;
	row->unit = unit;
	row->rounds = b->rounds;
	if (series_init(&row->ucow, "ucow", b->rounds) < 0)
		return NULL;
	b->nrows++;
	return row;
}

unsigned bench_row_alt(struct bench_row *row, const char *name)
{
	unsigned k = row->nalt;
	if (k == BENCH_MAX_ALTS || series_init(&row->alt[k], name, row->rounds) < 0)
		return BENCH_MAX_ALTS;
	row->nalt++;
	return k;
}

void bench_add(struct bench_series *s, double v)
{
	if (s->n < s->cap)
		s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double bench_median(const struct bench_series *s)
{
	if (!s->n)
		return -1.0;
	double *v = malloc(s->n * sizeof(*v));
	if (!v)
		return s->v[0];
	memcpy(v, s->v, s->n * sizeof(*v));
	qsort(v, s->n, sizeof(*v), cmp_double);
	double m = s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2.0;
	free(v);
	return m;
}

int bench_reserve_rows(struct bench *b, size_t n)
{
	b->rows = calloc(n, sizeof(*b->rows));
	b->cap = b->rows ? n : 0;
	return b->rows ? 0 : -1;
}

void bench_free_rows(struct bench *b)
{
	for (size_t i = 0; i < b->nrows; i++) {
		free(b->rows[i].ucow.v);
		for (unsigned k = 0; k < b->rows[i].nalt; k++)
			free(b->rows[i].alt[k].v);
	}
	free(b->rows);
	b->rows = NULL;
	b->nrows = b->cap = 0;
}

/* ---- page orders ---- */

/* splitmix64: seedable, and the same sequence on every machine. */
uint64_t bench_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
	return z ^ (z >> 31);
}

size_t *bench_sample(size_t pages, size_t count, uint64_t seed)
{
	size_t *v = malloc((pages ? pages : 1) * sizeof(*v));
	if (!v)
		return NULL;
	for (size_t i = 0; i < pages; i++)
		v[i] = i;
	uint64_t rng = seed;
	/* Partial Fisher-Yates: the head is a uniform sample in random order. */
	for (size_t i = 0; i < count && i < pages; i++) {
		size_t j = i + (size_t)(bench_random(&rng) % (pages - i));
		size_t t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
	return v;
}

size_t *bench_permutation(size_t pages, uint64_t seed)
{
	return bench_sample(pages, pages, seed);
}

size_t bench_one_percent(size_t pages)
{
	size_t n = (pages + 50) / 100;
	return n ? n : 1;
}

/* ---- touching pages ---- */

void bench_touch(char *base, size_t page, const size_t *order, size_t n)
{
	volatile char *p = base;
	if (order)
		for (size_t i = 0; i < n; i++)
			p[order[i] * page] = 1;
	else
		for (size_t i = 0; i < n; i++)
			p[i * page] = 1;
}

/* Threads wait for `go` so that none starts before all exist. */
struct start_gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool go;
};

struct toucher {
	char *base;
	size_t page;
	size_t *list, n;
	struct start_gate *gate;
	double t0, t1;
};

static void *toucher_run(void *arg)
{
	struct toucher *t = arg;
	pthread_mutex_lock(&t->gate->lock);
	while (!t->gate->go)
		pthread_cond_wait(&t->gate->cond, &t->gate->lock);
	pthread_mutex_unlock(&t->gate->lock);
	t->t0 = cli_now();
	bench_touch(t->base, t->page, t->list, t->n);
	t->t1 = cli_now();
	return NULL;
}

static size_t slice_start(size_t pages, unsigned k, unsigned nthreads)
{
	return pages * k / nthreads; /* pages < 2^52: no overflow */
}

/* Splits the pages into nthreads slices of the range, each in `order`'s order. */
static size_t *split_pages(size_t pages, const size_t *order, unsigned nthreads,
			   struct toucher *t)
{
	size_t *lists = malloc((pages ? pages : 1) * sizeof(*lists));
	if (!lists)
		return NULL;
	for (unsigned k = 0; k < nthreads; k++) {
		t[k].list = lists + slice_start(pages, k, nthreads);
		t[k].n = 0;
	}
	for (size_t i = 0; i < pages; i++) {
		size_t p = order ? order[i] : i;
		unsigned k = 0;
		while (k + 1 < nthreads && p >= slice_start(pages, k + 1, nthreads))
			k++;
		t[k].list[t[k].n++] = p;
	}
	return lists;
}

static double wall_time(const struct toucher *t, unsigned n)
{
	double t0 = t[0].t0, t1 = t[0].t1;
	for (unsigned k = 1; k < n; k++) {
		t0 = t[k].t0 < t0 ? t[k].t0 : t0;
		t1 = t[k].t1 > t1 ? t[k].t1 : t1;
	}
	return t1 - t0;
}

static void gate_open(struct start_gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->go = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

double bench_touch_threads(char *base, size_t page, size_t pages,
			   const size_t *order, unsigned nthreads)
{
	struct toucher t[BENCH_MAX_THREADS];
	pthread_t tid[BENCH_MAX_THREADS];
	struct start_gate gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };
	if (nthreads == 0 || nthreads > BENCH_MAX_THREADS)
		return -1.0;
	size_t *lists = split_pages(pages, order, nthreads, t);
	if (!lists)
		return -1.0;
	unsigned started = 0;
	for (; started < nthreads; started++) {
		t[started].base = base;
		t[started].page = page;
		t[started].gate = &gate;
		if (pthread_create(&tid[started], NULL, toucher_run, &t[started]) != 0)
			break;
	}
	gate_open(&gate);
	for (unsigned k = 0; k < started; k++)
		pthread_join(tid[k], NULL);
	free(lists);
	return started == nthreads ? wall_time(t, nthreads) : -1.0;
}

/* ---- ucow helpers ---- */

/*
 * ucow_unshare gives each never-written page a frame without a signal per
 * page: setup costs a system call a page instead of a fault a page.
 */
int bench_populate(ucow_region *r, size_t page)
{
	int rc = ucow_unshare(ucow_base(r), ucow_size(r));
	if (rc < 0)
		return bench_lib_error("ucow_unshare", -rc);
	bench_touch(ucow_base(r), page, NULL, ucow_size(r) / page);
	return 0;
}

int bench_counters(const ucow_region *r, struct bench_counters *out)
{
	struct ucow_stats s;
	int rc = ucow_stats(r, &s);
	if (rc < 0)
		return bench_lib_error("ucow_stats", -rc);
	out->copies = s.cow_copies;
	out->kept = s.cow_kept;
	out->reuses = s.cow_reuses;
	out->zero_fills = s.zero_fills;
	out->coalesced = s.coalesced;
	out->fault_around = s.fault_around;
	return 0;
}

size_t bench_frame_bytes(void)
{
	struct ucow_global_stats g;
	int rc = ucow_global_stats(&g);
	if (rc < 0) {
		bench_lib_error("ucow_global_stats", -rc);
		return 0;
	}
	return g.frame_bytes;
}

int bench_lib_error(const char *call, int err)
{
	fprintf(stderr, "ucow bench: %s: %s\n", call, strerror(err));
	return 1;
}

int bench_fits(struct bench *b, double need, const char *what)
{
	struct cli_mem m;
	cli_read_mem(&m);
	double avail = 1024.0 * (double)m.available_kb;
	if (m.available_kb < 0 || need <= avail)
		return 1;
	char n[CLI_BYTES_LEN], a[CLI_BYTES_LEN];
	bench_skip(b, "%s: needs about %s of memory, %s is available", what,
		   cli_fmt_bytes(n, need), cli_fmt_bytes(a, avail));
	return 0;
}

const char *bench_fmt_size(char buf[32], size_t size)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned u = 0;
	while (u + 1 < sizeof(units) / sizeof(units[0]) && size >= 1024 && size % 1024 == 0) {
		size /= 1024;
		u++;
	}
	if (u == 0 && size >= 1024)
		return cli_fmt_bytes(buf, (double)size);
	snprintf(buf, 32, "%zu %s", size, units[u]);
	return buf;
}
