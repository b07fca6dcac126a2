/*
 * ucow demo: the life of a copy-on-write heap, one step per line.
 *
 * A heap is filled, cloned and snapshotted; the clone and then the original
 * rewrite a share of their pages; the clone is reverted to the snapshot.
 * Each step prints its time and the page counters of the region it acted on,
 * and the end compares the memory held with what three deep copies would hold.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ucow.h>

#include "cli.h"

/* Which write a page's content comes from: the fill, the clone's or the original's. */
enum { GEN_FILL = 1, GEN_CLONE = 2, GEN_ORIG = 3 };

struct demo {
	size_t size, page, pages, nwrite;
	double percent;
	uint64_t seed, rng;
	size_t *order;          /* a permutation of the pages; its head is the pages to write */
	ucow_region *orig, *clone, *snap;
	size_t frames_at_start;
	struct cli_mem mem_at_start;
	int failed;             /* a check failed */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ucow demo [--size SIZE] [--write-percent P] [--seed N]\n"
		"\n"
		"Shows copy-on-write at work on a heap, one line per step:\n"
		"  create+fill     create a heap of SIZE bytes and write every page\n"
		"  clone           make a writable copy: it shares every page\n"
		"  snapshot        make a read-only copy of the original\n"
		"  write clone     rewrite P%% of the clone's pages, chosen at random:\n"
		"                  each first write copies the shared page\n"
		"  write original  rewrite P%% of the original's pages; checks that the\n"
		"                  snapshot still holds their old content\n"
		"  revert clone    make the clone equal to the snapshot again; checks it\n"
		"  destroy         destroy all three; checks every frame is given back\n"
		"Each line shows the step's time and the counters of the region it acted on:\n"
		"pages shared with another region, pages with a frame of their own, and\n"
		"write faults that copied a page, kept it (a page shared with snapshots of\n"
		"the region alone: the writer keeps its frame, they take the copy),\n"
		"reused it or gave a never-written page a frame (fault counters are totals\n"
		"since the region was created).\n"
		"At the end, the memory the frames hold against 3 x SIZE (what\n"
		"deep copies would cost).\n"
		"\n"
		"Options:\n"
		"  -s, --size SIZE          heap size, with suffix K, M, G or T (binary:\n"
		"                           256M = 256 MiB); default 256M\n"
		"  -w, --write-percent P    share of the pages to write, 0 to 100; default 10\n"
		"      --seed N             seed of the page choice; default 1\n"
		"  -h, --help               show this help\n"
		"\n"
		"Exit status: 0 all checks passed, 1 a check or a library call failed,\n"
		"2 bad options.\n");
}

static int parse_options(struct demo *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "write-percent", required_argument, NULL, 'w' },
		{ "seed", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:w:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (cli_parse_size("--size", optarg, &d->size) < 0)
				return 2;
			if (d->size == 0) {
				fprintf(stderr, "ucow: --size: must be at least 1 byte\n");
				return 2;
			}
			break;
		case 'w':
			if (cli_parse_percent("--write-percent", optarg, &d->percent) < 0)
				return 2;
			break;
		case 'S':
			if (cli_parse_u64("--seed", optarg, UINT64_MAX, &d->seed) < 0)
				return 2;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default: /* getopt has said what is wrong */
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
		return 2;
	}
	return -1;
}

/* splitmix64: small, seedable, and the same sequence on every machine. */
static uint64_t next_random(struct demo *d)
{
	uint64_t z = (d->rng += 0x9e3779b97f4a7c15);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
	return z ^ (z >> 31);
}

/* Moves nwrite pages chosen at random to the head of d->order (partial Fisher-Yates). */
static void pick_pages(struct demo *d)
{
	for (size_t i = 0; i < d->nwrite; i++) {
		size_t j = i + (size_t)(next_random(d) % (d->pages - i));
		size_t t = d->order[i];
		d->order[i] = d->order[j];
		d->order[j] = t;
	}
}

static uint64_t tag(int gen, size_t page)
{
	return ((uint64_t)gen << 48 | page) * 0x9e3779b97f4a7c15;
}

static void fill_page(void *p, size_t len, uint64_t t)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / sizeof(*w); i++)
		w[i] = t + i;
}

static int page_holds(const void *p, size_t len, uint64_t t)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / sizeof(*w); i++)
		if (w[i] != t + i)
			return 0;
	return 1;
}

static unsigned char *page_addr(ucow_region *r, struct demo *d, size_t page)
{
	return (unsigned char *)ucow_base(r) + page * d->page;
}

static int lib_error(const char *call, int err)
{
	fprintf(stderr, "ucow demo: %s: %s\n", call, strerror(err));
	return 1;
}

static void print_header(void)
{
	printf("%-15s %12s  %-9s %9s %9s %9s %7s %9s %10s\n", "step", "time",
	       "region", "shared", "private", "copied", "kept", "reused",
	       "zero-fills");
}

/* One step's line: its time and the counters of region r; note (may be NULL) after. */
static int print_step(const char *step, double seconds, const char *name,
		      const ucow_region *r, const char *note)
{
	struct ucow_stats s;
	int rc = ucow_stats(r, &s);
	if (rc < 0)
		return lib_error("ucow_stats", -rc);
	printf("%-15s %9.3f ms  %-9s %9zu %9zu %9llu %7llu %9llu %10llu%s%s\n", step,
	       seconds * 1e3, name, s.shared_pages, s.private_pages,
	       (unsigned long long)s.cow_copies, (unsigned long long)s.cow_kept,
	       (unsigned long long)s.cow_reuses, (unsigned long long)s.zero_fills,
	       note ? "  " : "", note ? note : "");
	return 0;
}

static const char *per_page(char buf[64], double seconds, size_t pages)
{
	if (pages == 0)
		return NULL;
	snprintf(buf, 64, "%.2f us/page", seconds * 1e6 / (double)pages);
	return buf;
}

static void print_check(const char *what, int ok, struct demo *d)
{
	printf("  check: %s: %s\n", what, ok ? "OK" : "FAILED");
	if (!ok)
		d->failed = 1;
}

static int step_create_fill(struct demo *d)
{
	double t0 = cli_now();
	d->orig = ucow_create(d->size);
	if (!d->orig)
		return lib_error("ucow_create", errno);
	for (size_t i = 0; i < d->pages; i++)
		fill_page(page_addr(d->orig, d, i), d->page, tag(GEN_FILL, i));
	double t = cli_now() - t0;
	char note[64];
	return print_step("create+fill", t, "original", d->orig, per_page(note, t, d->pages));
}

static int step_clone(struct demo *d)
{
	double t0 = cli_now();
	d->clone = ucow_clone(d->orig);
	double t = cli_now() - t0;
	if (!d->clone)
		return lib_error("ucow_clone", errno);
	return print_step("clone", t, "clone", d->clone, NULL);
}

static int step_snapshot(struct demo *d)
{
	double t0 = cli_now();
	d->snap = ucow_snapshot(d->orig);
	double t = cli_now() - t0;
	if (!d->snap)
		return lib_error("ucow_snapshot", errno);
	return print_step("snapshot", t, "snapshot", d->snap, NULL);
}

/* Rewrites nwrite random pages of r, whole pages, with content of generation gen. */
static int step_write(struct demo *d, const char *step, const char *name,
		      ucow_region *r, int gen)
{
	pick_pages(d);
	double t0 = cli_now();
	for (size_t i = 0; i < d->nwrite; i++)
		fill_page(page_addr(r, d, d->order[i]), d->page, tag(gen, d->order[i]));
	double t = cli_now() - t0;
	char note[64];
	return print_step(step, t, name, r, per_page(note, t, d->nwrite));
}

/* After the original's writes: the snapshot must still show the pages as filled. */
static void check_snapshot(struct demo *d)
{
	int ok = 1;
	for (size_t i = 0; i < d->nwrite; i++) {
		size_t p = d->order[i];
		ok &= page_holds(page_addr(d->orig, d, p), d->page, tag(GEN_ORIG, p));
		ok &= page_holds(page_addr(d->snap, d, p), d->page, tag(GEN_FILL, p));
	}
	char what[128];
	snprintf(what, sizeof(what), "snapshot kept the old content of the %zu pages "
		 "the original rewrote", d->nwrite);
	print_check(what, ok, d);
}

static int step_revert(struct demo *d)
{
	double t0 = cli_now();
	int rc = ucow_revert(d->clone, d->snap);
	double t = cli_now() - t0;
	if (rc < 0)
		return lib_error("ucow_revert", -rc);
	if (print_step("revert clone", t, "clone", d->clone, NULL))
		return 1;
	print_check("clone equals snapshot",
		    memcmp(ucow_base(d->clone), ucow_base(d->snap), d->size) == 0, d);
	return 0;
}

static int report_memory(struct demo *d)
{
	struct ucow_global_stats g;
	int rc = ucow_global_stats(&g);
	if (rc < 0)
		return lib_error("ucow_global_stats", -rc);
	struct cli_mem m;
	cli_read_mem(&m);
	char buf[CLI_BYTES_LEN], buf2[CLI_BYTES_LEN];
	double deep = 3.0 * (double)d->size;
	size_t frames = g.frames - d->frames_at_start;
	double used = (double)frames * (double)d->page;

	printf("\nmemory: frames       %s (%zu pages) for 3 regions of %s\n",
	       cli_fmt_bytes(buf, used), frames, cli_fmt_bytes(buf2, (double)d->size));
	printf("        deep copies  %s: ucow uses %.1f%% of that, %.1fx less\n",
	       cli_fmt_bytes(buf, deep), 100.0 * used / deep, used > 0 ? deep / used : INFINITY);
	if (m.shmem_kb >= 0 && d->mem_at_start.shmem_kb >= 0) {
		/* System-wide: other processes may have given back more. */
		long long grew = m.shmem_kb - d->mem_at_start.shmem_kb;
		printf("        Shmem        %s %s in /proc/meminfo (system-wide)\n",
		       cli_fmt_bytes(buf, 1024.0 * (double)(grew < 0 ? -grew : grew)),
		       grew < 0 ? "less" : "more");
	}
	/* RssShmem counts a shared frame once per region that maps it. */
	if (m.rss_kb >= 0 && m.rss_shmem_kb >= 0)
		printf("        process RSS  %s, of which mapped shared memory %s\n",
		       cli_fmt_bytes(buf, 1024.0 * (double)m.rss_kb),
		       cli_fmt_bytes(buf2, 1024.0 * (double)m.rss_shmem_kb));
	return 0;
}

static int step_destroy(struct demo *d)
{
	double t0 = cli_now();
	ucow_destroy(d->snap);
	ucow_destroy(d->clone);
	ucow_destroy(d->orig);
	double t = cli_now() - t0;
	d->snap = d->clone = d->orig = NULL;

	struct ucow_global_stats g;
	int rc = ucow_global_stats(&g);
	if (rc < 0)
		return lib_error("ucow_global_stats", -rc);
	printf("\n%-15s %9.3f ms  frames %zu (%zu at start), regions %zu\n", "destroy",
	       t * 1e3, g.frames, d->frames_at_start, g.regions);
	print_check("every frame given back", g.frames == d->frames_at_start, d);
	return 0;
}

/* The fill and the two rounds of writes make frames: refuse rather than be OOM-killed. */
static int enough_memory(struct demo *d)
{
	double need = (double)d->size + 2.0 * (double)d->nwrite * (double)d->page +
		      (double)d->pages * sizeof(*d->order);
	double avail = 1024.0 * (double)d->mem_at_start.available_kb;
	if (d->mem_at_start.available_kb < 0 || need <= avail)
		return 1;
	char n[CLI_BYTES_LEN], a[CLI_BYTES_LEN];
	fprintf(stderr, "ucow demo: needs about %s of memory, only %s is available: "
			"choose a smaller --size\n", cli_fmt_bytes(n, need), cli_fmt_bytes(a, avail));
	return 0;
}

static int run(struct demo *d)
{
	struct ucow_global_stats g;
	int rc = ucow_global_stats(&g);
	if (rc < 0)
		return lib_error("ucow_global_stats", -rc);
	d->frames_at_start = g.frames;

	const char *backend = ucow_backend();
	if (!backend)
		return lib_error("ucow_backend", errno);
	char size[CLI_BYTES_LEN];
	printf("ucow demo: %s heap = %zu pages of %zu bytes; write %g%% of them (%zu pages); "
	       "seed %llu; backend %s\n\n", cli_fmt_bytes(size, (double)d->size), d->pages,
	       d->page, d->percent, d->nwrite, (unsigned long long)d->seed, backend);
	print_header();

	if (step_create_fill(d) || step_clone(d) || step_snapshot(d) ||
	    step_write(d, "write clone", "clone", d->clone, GEN_CLONE) ||
	    step_write(d, "write original", "original", d->orig, GEN_ORIG))
		return 1;
	check_snapshot(d);
	if (step_revert(d) || report_memory(d) || step_destroy(d))
		return 1;
	printf("\n%s\n", d->failed ? "FAILED" : "OK");
	return d->failed;
}

int cmd_demo(int argc, char **argv)
{
	struct demo d = { .size = (size_t)256 << 20, .percent = 10.0, .seed = 1 };
	int rc = parse_options(&d, argc, argv);
	if (rc >= 0) {
		if (rc == 2)
			fprintf(stderr, "Try 'ucow demo --help'.\n");
		return rc;
	}

	d.page = ucow_page_size();
	if (d.size > SIZE_MAX - d.page) {
		fprintf(stderr, "ucow demo: --size: too large\n");
		return 2;
	}
	d.pages = d.size / d.page + (d.size % d.page != 0);
	d.size = d.pages * d.page; /* ucow_create rounds up likewise */
	d.nwrite = (size_t)((double)d.pages * d.percent / 100.0 + 0.5);
	if (d.nwrite > d.pages)
		d.nwrite = d.pages;
	d.rng = d.seed;
	cli_read_mem(&d.mem_at_start);
	if (!enough_memory(&d))
		return 1;
	d.order = malloc(d.pages * sizeof(*d.order));
	if (!d.order)
		return lib_error("malloc", errno);
	for (size_t i = 0; i < d.pages; i++)
		d.order[i] = i;

	rc = run(&d);
	/* On an early failure some regions are left; ucow_destroy(NULL) is a no-op. */
	ucow_destroy(d.snap);
	ucow_destroy(d.clone);
	ucow_destroy(d.orig);
	free(d.order);
	return rc;
}
