/*
 * ucow bench: ucow against the kernel's copy-on-write, side by side.
 *
 * Every figure alternates ucow and its alternatives round by round in one
 * process tree, and reports medians and the ratio ucow / alternative. The
 * figures themselves are in tools/bench_*.c (see tools/bench.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

#define ALL_FIGURES 0x3eu /* bits 1 to 5 */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ucow bench [--quick] [--rounds N] [--sizes LIST] [--figures LIST]\n"
		"                  [--fault-size SIZE] [--sparse-size SIZE] [--seed N]\n"
		"                  [--json] [--plot FILE]\n"
		"\n"
		"Measures ucow against the kernel, alternating them round by round, and\n"
		"prints the median of each and the ratio ucow / alternative:\n"
		"  1. first write to a shared page, per page, random and ascending order:\n"
		"     ucow (a clone) under each fault backend, sigsegv and uffd (each in a\n"
		"     process of its own), vs fork() copy-on-write (in a forked child) vs\n"
		"     a MAP_PRIVATE memfd mapping (a one-page memcpy is the floor), and\n"
		"     uffd vs sigsegv; a backend that cannot be had is shown unavailable\n"
		"  2. snapshot of a populated region, the first and one after 1%% of the\n"
		"     pages changed, and the 10th of a row with 1%% changed before each\n"
		"     (each replaces the previous one), vs fork() of a process with the\n"
		"     same heap; the 10th of a row keeping two alive, 0.1%% changed\n"
		"     before each; and the 1%% written after a snapshot (the region\n"
		"     keeps its frames), per page, vs as many pages written to a clone\n"
		"  3. revert after 1%% of the pages changed, ucow_revert and\n"
		"     ucow_revert_in_place, vs a fork server's reset\n"
		"     (fork + the child writes 1%% + exit + waitpid)\n"
		"  4. clone of a sparse region (1%% written) and its memory once 1%% of it\n"
		"     is written vs a deep copy (memcpy)\n"
		"  5. two threads writing disjoint pages of a clone vs one thread\n"
		"Figures 2 to 5 run under the backend UCOW_BACKEND names (default sigsegv).\n"
		"Progress goes to stderr. No result is checked against a target: the\n"
		"numbers are reported as they are.\n"
		"\n"
		"Options:\n"
		"  -r, --rounds N         rounds per figure, 1 to %d; default 5\n"
		"  -s, --sizes LIST       sizes for figures 2 and 3, comma-separated, with\n"
		"                         suffix K, M, G or T; default 64M,1G,4G\n"
		"      --fault-size SIZE  region size for figures 1 and 5; default 64M\n"
		"      --sparse-size SIZE region size for figure 4; default the largest of\n"
		"                         --sizes\n"
		"  -f, --figures LIST     run only these figures, e.g. 1,5; default all\n"
		"  -q, --quick            a smoke run: sizes 64M, 3 rounds (under ~30 s);\n"
		"                         explicit options still apply\n"
		"  -j, --json             print the results as JSON on stdout, no table\n"
		"  -p, --plot FILE        write an SVG plot of figures 2 and 3 (cost against\n"
		"                         size) to FILE\n"
		"      --seed N           seed of the random page orders; default 1\n"
		"  -h, --help             show this help\n"
		"\n"
		"Memory held at once: figures 2 and 3 about 2.1 x the size (a ucow region\n"
		"and the fork() heap), figure 4 1.1 x its size, figures 1 and 5 8 x the\n"
		"fault size. Each is checked against MemAvailable first, and skipped (and\n"
		"said so) if it does not fit.\n"
		"Exit status: 0 done, 1 a library or system call failed, 2 bad options.\n",
		BENCH_MAX_ROUNDS);
}

/* ---- options ---- */

struct explicit_opts {
	bool rounds, sizes, sparse;
};

static int parse_sizes(struct bench *b, const char *arg)
{
	char *copy = strdup(arg);
	if (!copy)
		return -1;
	b->nsizes = 0;
	int rc = 0;
	for (char *tok = copy, *next; tok && !rc; tok = next) {
		size_t v;
		if ((next = strchr(tok, ',')) != NULL)
			*next++ = '\0';
		if (!*tok) {
			fprintf(stderr, "ucow: --sizes: '%s': an empty size\n", arg);
			rc = -1;
		} else if (b->nsizes == BENCH_MAX_SIZES) {
			fprintf(stderr, "ucow: --sizes: at most %d sizes\n", BENCH_MAX_SIZES);
			rc = -1;
		} else if (cli_parse_size("--sizes", tok, &v) < 0) {
			rc = -1;
		} else if (v < b->page) {
			fprintf(stderr, "ucow: --sizes: '%s' is less than a page\n", tok);
			rc = -1;
		} else {
			b->sizes[b->nsizes++] = v / b->page * b->page;
		}
	}
	free(copy);
	if (!rc && b->nsizes == 0) {
		fprintf(stderr, "ucow: --sizes: no size given\n");
		rc = -1;
	}
	return rc;
}

/* A comma-separated list of figure numbers, each 1 to BENCH_FIGURES: "15"
 * is no figure, and an empty item is refused as --sizes refuses one. */
static int parse_figures(struct bench *b, const char *arg)
{
	unsigned figures = 0;
	const char *p = arg;
	do {
		size_t len = strcspn(p, ",");
		if (len == 0) {
			fprintf(stderr, "ucow: --figures: '%s': an empty figure number\n",
				arg);
			return -1;
		}
		if (len != 1 || *p < '1' || *p > '0' + BENCH_FIGURES) {
			fprintf(stderr, "ucow: --figures: '%s': give figure numbers 1 to %d, "
					"comma-separated\n", arg, BENCH_FIGURES);
			return -1;
		}
		figures |= 1u << (*p - '0');
		p += len;
	} while (*p++ == ',');
	b->figures = figures;
	return 0;
}

static int parse_page_size(struct bench *b, const char *what, const char *arg, size_t *out)
{
	if (cli_parse_size(what, arg, out) < 0)
		return -1;
	if (*out < 2 * b->page) {
		fprintf(stderr, "ucow: %s: '%s' is less than two pages\n", what, arg);
		return -1;
	}
	*out = *out / b->page * b->page;
	return 0;
}

static int parse_one(struct bench *b, struct explicit_opts *e, int c)
{
	uint64_t v;
	switch (c) {
	case 'r':
		e->rounds = true;
		if (cli_parse_u64("--rounds", optarg, BENCH_MAX_ROUNDS, &v) < 0)
			return 2;
		if (v == 0) {
			fprintf(stderr, "ucow: --rounds: at least 1\n");
			return 2;
		}
		b->rounds = (unsigned)v;
		return 0;
	case 's':
		e->sizes = true;
		return parse_sizes(b, optarg) < 0 ? 2 : 0;
	case 'F':
		return parse_page_size(b, "--fault-size", optarg, &b->fault_size) < 0 ? 2 : 0;
	case 'P':
		e->sparse = true;
		return parse_page_size(b, "--sparse-size", optarg, &b->sparse_size) < 0 ? 2 : 0;
	case 'f':
		return parse_figures(b, optarg) < 0 ? 2 : 0;
	case 'S':
		return cli_parse_u64("--seed", optarg, UINT64_MAX, &b->seed) < 0 ? 2 : 0;
	case 'j':
		b->json = true;
		return 0;
	case 'p':
		b->plot = optarg;
		return 0;
	default: /* getopt has said what is wrong */
		return 2;
	}
}

static const struct option long_opts[] = {
	{ "rounds", required_argument, NULL, 'r' },
	{ "sizes", required_argument, NULL, 's' },
	{ "fault-size", required_argument, NULL, 'F' },
	{ "sparse-size", required_argument, NULL, 'P' },
	{ "figures", required_argument, NULL, 'f' },
	{ "quick", no_argument, NULL, 'q' },
	{ "json", no_argument, NULL, 'j' },
	{ "plot", required_argument, NULL, 'p' },
	{ "seed", required_argument, NULL, 'S' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* --quick lowers the defaults only: options given explicitly win, in any order. */
static void apply_quick(struct bench *b, const struct explicit_opts *e)
{
	if (!e->rounds)
		b->rounds = 3;
	if (!e->sizes) {
		b->sizes[0] = (size_t)64 << 20;
		b->nsizes = 1;
	}
}

static int parse_options(struct bench *b, int argc, char **argv)
{
	struct explicit_opts e = { false, false, false };
	bool quick = false;
	int c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, "r:s:f:qjp:h", long_opts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		if (c == 'q')
			quick = true;
		else if ((rc = parse_one(b, &e, c)) != 0)
			return rc;
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
		return 2;
	}
	if (quick)
		apply_quick(b, &e);
	if (!e.sparse)
		for (unsigned i = 0; i < b->nsizes; i++)
			if (b->sizes[i] > b->sparse_size)
				b->sparse_size = b->sizes[i];
	return -1;
}

/* ---- progress ---- */

static char step_name[128];

void bench_step(struct bench *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(step_name, sizeof(step_name), fmt, ap);
	va_end(ap);
	b->step++;
	bench_progress(b, "%s", "");
}

/* On a terminal each line replaces the last; elsewhere (a log) lines add up. */
void bench_progress(struct bench *b, const char *fmt, ...)
{
	char what[128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s[%u/%u] %s%s%s...%s", b->tty ? "\r\033[K" : "", b->step,
		b->nsteps, step_name, *what ? " " : "", what, b->tty ? "" : "\n");
	fflush(stderr);
}

static void progress_done(struct bench *b)
{
	if (b->tty)
		fprintf(stderr, "\r\033[K");
}

void bench_skip(struct bench *b, const char *fmt, ...)
{
	if (b->nskipped == sizeof(b->skipped) / sizeof(b->skipped[0]))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b->skipped[b->nskipped++], sizeof(b->skipped[0]), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%sucow bench: skipped %s\n", b->tty ? "\r\033[K" : "",
		b->skipped[b->nskipped - 1]);
}

/* ---- the run ---- */

/*
 * Random writes to a clone map each private page on its own until it merges
 * with a neighbour: say so before the kernel's mapping limit makes ucow abort.
 */
static void warn_map_count(const struct bench *b)
{
	struct bench_machine m;
	bench_machine(&m);
	size_t pages = b->fault_size / b->page;
	if ((bench_wants(b, 1) || bench_wants(b, 5)) && m.max_map_count > 0 &&
	    pages > (size_t)m.max_map_count / 2) {
		char sz[32];
		fprintf(stderr, "ucow bench: warning: random writes to %s (%zu pages) may need "
				"more kernel mappings than vm.max_map_count (%ld) allows\n",
			bench_fmt_size(sz, b->fault_size), pages, m.max_map_count);
	}
}

static void plan(struct bench *b)
{
	b->nsteps = 2 * bench_wants(b, 1) + bench_wants(b, 5) + bench_wants(b, 4) +
		    b->nsizes * (bench_wants(b, 2) + bench_wants(b, 3));
	b->tty = isatty(STDERR_FILENO);
}

static int run(struct bench *b)
{
	int rc = 0;
	if (bench_wants(b, 1) || bench_wants(b, 5))
		rc = bench_fault(b);
	if (!rc && (bench_wants(b, 2) || bench_wants(b, 3)))
		rc = bench_snapshot(b);
	if (!rc && bench_wants(b, 4))
		rc = bench_sparse(b);
	progress_done(b);
	return rc;
}

static int report(struct bench *b)
{
	if (b->json)
		bench_print_json(b, stdout);
	else
		bench_print_table(b, stdout);
	if (b->plot && bench_write_plot(b, b->plot) != 0)
		return 1;
	return 0;
}

static int start(struct bench *b)
{
	/* Before any call into ucow: the helpers must not inherit its fork
	 * handlers, and figure 1's must still be free to choose a backend. */
	if (kern_start(b) || (bench_wants(b, 1) && be_start(b)))
		return 1;
	if (!ucow_backend())
		return bench_lib_error("ucow_backend", errno);
	/* Each figure makes at most two rows per size. */
	if (bench_reserve_rows(b, 2 * (size_t)(b->nsizes + 2) * BENCH_FIGURES) < 0)
		return bench_lib_error("malloc", ENOMEM);
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	struct bench b = {
		.rounds = 5, .nsizes = 3, .fault_size = (size_t)64 << 20,
		.figures = ALL_FIGURES, .seed = 1, .page = ucow_page_size(),
		.sizes = { (size_t)64 << 20, (size_t)1 << 30, (size_t)4 << 30 },
	};
	int rc = parse_options(&b, argc, argv);
	if (rc < 0 && b.plot && bench_check_plot(&b, b.plot) < 0)
		rc = 2;
	if (rc >= 0) {
		if (rc == 2)
			fprintf(stderr, "Try 'ucow bench --help'.\n");
		return rc;
	}
	plan(&b);
	warn_map_count(&b);
	rc = start(&b);
	if (!rc)
		rc = run(&b);
	be_stop(&b);
	kern_stop(&b);
	/* After a failure, what was measured until then. */
	if ((b.nrows || !rc) && report(&b))
		rc = 1;
	bench_free_rows(&b);
	return rc;
}
