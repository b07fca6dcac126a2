/*
 * ucow bench, figures 1 and 5: the first write to a shared page.
 *
 * 1. Per page, in random and in ascending order: ucow (a clone of a populated
 *    region) under each fault backend, each in a helper process of its own
 *    (bench_backend.c), the kernel's fork() copy-on-write (a child writes the
 *    pages of its parent's populated heap and times itself), a MAP_PRIVATE
 *    mapping of a populated memfd, and the floor: copying one page with
 *    memcpy.
 * 5. Throughput of two threads writing disjoint halves of a clone against
 *    one thread writing all of it; the kernel's two threads beside them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

struct fault_setup {
	struct bench *b;
	size_t size, pages, page;
	bool ready;             /* the heaps below and the fork() heap are set up */
	bool backends_ready;    /* figure 1's backend processes have their regions */
	ucow_region *orig;      /* figure 5's; populated, each round writes a clone */
	int memfd;              /* populated; each round maps it MAP_PRIVATE */
	char *src, *dst;        /* the floor's buffers, populated */
	size_t *perm;           /* the random order */
	char floor_name[48], ref_name[48];
};

static const char *const order_name[2] = { "ascending", "random" };
static const char *const alt_fork = "fork() CoW, in the child";
static const char *const alt_memfd = "MAP_PRIVATE memfd";

/* ---- one round of each contender; secs is the time for all the pages ---- */

static int memfd_round(struct fault_setup *s, const size_t *order, double *secs)
{
	char *p = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, s->memfd, 0);
	if (p == MAP_FAILED)
		return bench_lib_error("mmap MAP_PRIVATE memfd", errno);
	double t0 = cli_now();
	bench_touch(p, s->page, order, s->pages);
	*secs = cli_now() - t0;
	munmap(p, s->size);
	return 0;
}

static double floor_round(struct fault_setup *s, const size_t *order)
{
	double t0 = cli_now();
	for (size_t i = 0; i < s->pages; i++) {
		size_t off = (order ? order[i] : i) * s->page;
		memcpy(s->dst + off, s->src + off, s->page);
	}
	/* The copies are never read: keep the compiler from dropping them. */
	__asm__ __volatile__("" : : "r"(s->dst) : "memory");
	return cli_now() - t0;
}

/* ---- setup ---- */

static char *map_populated(size_t size, size_t page)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	bench_touch(p, page, NULL, size / page);
	return p;
}

static int memfd_populated(size_t size, size_t page)
{
	int fd = memfd_create("ucow-bench", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	char *p = MAP_FAILED;
	if (ftruncate(fd, (off_t)size) == 0)
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		close(fd);
		return -1;
	}
	bench_touch(p, page, NULL, size / page);
	munmap(p, size);
	return fd;
}

static void teardown(struct fault_setup *s)
{
	ucow_destroy(s->orig);
	if (s->memfd >= 0)
		close(s->memfd);
	if (s->src)
		munmap(s->src, s->size);
	if (s->dst)
		munmap(s->dst, s->size);
	free(s->perm);
}

/* Once, by the first figure that runs (after its step has begun). */
static int setup(struct fault_setup *s)
{
	if (s->ready)
		return 0;
	s->ready = true;
	bench_progress(s->b, "populating memfd, memcpy and fork() heaps");
	s->memfd = memfd_populated(s->size, s->page);
	if (s->memfd < 0)
		return bench_lib_error("memfd", errno);
	s->src = map_populated(s->size, s->page);
	s->dst = map_populated(s->size, s->page);
	s->perm = bench_permutation(s->pages, s->b->seed);
	if (!s->src || !s->dst || !s->perm)
		return bench_lib_error("mmap", ENOMEM);
	return kern_alloc(s->b, s->size);
}

/* Once, by figure 1's first step: its names and its backends' regions. */
static int setup_figure1(struct fault_setup *s)
{
	if (s->backends_ready)
		return 0;
	s->backends_ready = true;
	bench_progress(s->b, "populating a ucow region under each backend");
	snprintf(s->floor_name, sizeof(s->floor_name), "%zu KiB memcpy (the floor)",
		 s->page / 1024);
	snprintf(s->ref_name, sizeof(s->ref_name), "ucow, %s backend", s->b->backend[0].name);
	return be_setup(s->b, s->size);
}

static int setup_orig(struct fault_setup *s)
{
	if (s->orig)
		return 0;
	bench_progress(s->b, "populating a ucow region");
	s->orig = ucow_create(s->size);
	if (!s->orig)
		return bench_lib_error("ucow_create", errno);
	return bench_populate(s->orig, s->page);
}

/* ---- figure 1 ---- */

/*
 * A row per backend. The reference (backend 0, the signal backend) stands
 * beside the kernel and the floor; each other backend beside the reference
 * (its ratio to it is issue 6's target) and fork().
 */
static struct bench_row *backend_row(struct fault_setup *s, unsigned k, bool random)
{
	const struct bench_backend *be = &s->b->backend[k];
	char measure[48];
	snprintf(measure, sizeof(measure), "%s order, %s", order_name[random], be->name);
	struct bench_row *row = bench_row_new(s->b, 1, measure, s->size, UNIT_PER_PAGE);
	if (!row)
		return NULL;
	snprintf(row->backend, sizeof(row->backend), "%s", be->name);
	if (!be->available) {
		snprintf(row->unavailable, sizeof(row->unavailable), "%s", be->why);
		return row;
	}
	row->has_counters = true;
	if (k == 0) {
		bench_row_alt(row, alt_fork);
		bench_row_alt(row, alt_memfd);
		bench_row_alt(row, s->floor_name);
	} else {
		bench_row_alt(row, s->ref_name);
		bench_row_alt(row, alt_fork);
	}
	return row;
}

/* Adds v to the alternative named `name` in every row that shows it. */
static void add_alt(struct bench_row **rows, const char *name, double v)
{
	for (unsigned k = 0; k < BENCH_BACKENDS; k++)
		for (unsigned a = 0; a < rows[k]->nalt; a++)
			if (strcmp(rows[k]->alt[a].name, name) == 0)
				bench_add(&rows[k]->alt[a], v);
}

static int backends_round(struct fault_setup *s, struct bench_row **rows, bool random,
			  unsigned round)
{
	double n = (double)s->pages, t;
	/* The first place alternates too: neither backend always runs right
	 * after the kernel's rounds (and the memory they have just freed). */
	for (unsigned j = 0; j < BENCH_BACKENDS; j++) {
		unsigned k = (round + j) % BENCH_BACKENDS;
		if (!s->b->backend[k].available)
			continue;
		if (be_round(s->b, k, random, &t, &rows[k]->counters))
			return 1;
		bench_add(&rows[k]->ucow, t / n);
		if (k == 0)
			add_alt(rows, s->ref_name, t / n);
	}
	return 0;
}

static int kernel_round(struct fault_setup *s, struct bench_row **rows, bool random)
{
	const size_t *order = random ? s->perm : NULL;
	double n = (double)s->pages, t;
	if (kern_fork_cow(s->b, random, 1, s->b->seed, &t))
		return 1;
	add_alt(rows, alt_fork, t / n);
	if (memfd_round(s, order, &t))
		return 1;
	add_alt(rows, alt_memfd, t / n);
	add_alt(rows, s->floor_name, floor_round(s, order) / n);
	return 0;
}

static int figure1_order(struct fault_setup *s, bool random)
{
	struct bench *b = s->b;
	char sz[32];
	bench_step(b, "first write, %s order, %s", order_name[random],
		   bench_fmt_size(sz, s->size));
	if (setup(s) || setup_figure1(s))
		return 1;
	struct bench_row *rows[BENCH_BACKENDS];
	for (unsigned k = 0; k < BENCH_BACKENDS; k++)
		if (!(rows[k] = backend_row(s, k, random)))
			return bench_lib_error("malloc", ENOMEM);
	for (unsigned r = 0; r < b->rounds; r++) {
		bench_progress(b, "round %u/%u", r + 1, b->rounds);
		if (backends_round(s, rows, random, r) || kernel_round(s, rows, random))
			return 1;
	}
	return 0;
}

/* ---- figure 5 ---- */

static int ucow_threads_round(struct fault_setup *s, unsigned nthreads, double *rate,
			      struct bench_counters *c)
{
	ucow_region *clone = ucow_clone(s->orig);
	if (!clone)
		return bench_lib_error("ucow_clone", errno);
	double t = bench_touch_threads(ucow_base(clone), s->page, s->pages, s->perm, nthreads);
	int rc = t < 0 ? bench_lib_error("pthread_create", EAGAIN) : bench_counters(clone, c);
	ucow_destroy(clone);
	*rate = (double)s->pages / t;
	return rc;
}

static int figure5(struct fault_setup *s)
{
	struct bench *b = s->b;
	char sz[32];
	bench_step(b, "two threads against one, %s", bench_fmt_size(sz, s->size));
	if (setup(s) || setup_orig(s))
		return 1;
	struct bench_row *row = bench_row_new(b, 5, "fault throughput, 2 threads", s->size,
					      UNIT_RATE);
	if (!row)
		return bench_lib_error("malloc", ENOMEM);
	bench_row_alt(row, "ucow, 1 thread");
	bench_row_alt(row, "fork() CoW child, 2 threads");
	row->has_counters = true;
	struct bench_counters one;
	double v;
	for (unsigned r = 0; r < b->rounds; r++) {
		bench_progress(b, "round %u/%u", r + 1, b->rounds);
		if (ucow_threads_round(s, 2, &v, &row->counters))
			return 1;
		bench_add(&row->ucow, v);
		if (ucow_threads_round(s, 1, &v, &one))
			return 1;
		bench_add(&row->alt[0], v);
		if (kern_fork_cow(b, true, 2, b->seed, &v))
			return 1;
		bench_add(&row->alt[1], (double)s->pages / v);
	}
	return 0;
}

/* Memory held at once: the memfd, the floor's two buffers and the fork()
 * heap; figure 1's two backend regions (released before figure 5) or figure
 * 5's region; and one copy at a time: a clone, the memfd's private mapping
 * or the fork() child's. 8 x leaves room. */
static int fits(struct fault_setup *s)
{
	char sz[32], what[64];
	snprintf(what, sizeof(what), "figures 1 and 5 at %s", bench_fmt_size(sz, s->size));
	return bench_fits(s->b, 8.0 * (double)s->size, what);
}

int bench_fault(struct bench *b)
{
	struct fault_setup s = { .b = b, .size = b->fault_size, .page = b->page, .memfd = -1 };
	s.pages = s.size / s.page;
	if (!fits(&s)) {
		b->step += bench_wants(b, 1) * 2 + bench_wants(b, 5);
		return 0;
	}
	int rc = 0;
	if (bench_wants(b, 1))
		rc = figure1_order(&s, true) || figure1_order(&s, false);
	be_stop(b);
	if (!rc && bench_wants(b, 5))
		rc = figure5(&s);
	teardown(&s);
	if (!rc && s.ready)
		rc = kern_free(b);
	return rc;
}
