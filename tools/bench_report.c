/*
 * ucow bench: the results as an aligned table (for people) or as JSON (for
 * machines). Both show the medians and the ratio ucow / alternative; the
 * JSON adds every round's sample. Both begin with the machine's description.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

#ifdef PACKAGE_VERSION
#define BENCH_VERSION PACKAGE_VERSION
#else
#define BENCH_VERSION "0.1.0"
#endif

static const char *const figure_title[BENCH_FIGURES + 1] = {
	NULL,
	"first write to a shared page: cost per page, under each fault backend",
	"snapshot of a populated region vs fork() of a process with the same heap",
	"revert after 1% of the pages changed vs a fork server's reset",
	"copy of a sparse region (1% written, in runs of 16 pages) vs a deep copy",
	"two threads writing disjoint halves of a clone (random order) vs one",
};

static const char *const unit_json[] = {
	[UNIT_SECONDS] = "seconds",
	[UNIT_PER_PAGE] = "seconds per page",
	[UNIT_BYTES] = "bytes",
	[UNIT_RATE] = "pages per second",
};

static double ratio(const struct bench_row *row, unsigned k)
{
	double u = bench_median(&row->ucow), a = bench_median(&row->alt[k]);
	return u >= 0 && a > 0 ? u / a : NAN;
}

/* ---- the machine ---- */

/* The rest of the first line of `path` that starts with `key`, trimmed. */
static void read_field(const char *path, const char *key, char *out, size_t len)
{
	FILE *f = fopen(path, "r");
	char line[256];
	size_t n = strlen(key);
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, n) != 0)
			continue;
		const char *v = line + n;
		while (*v == ' ' || *v == '\t' || *v == ':')
			v++;
		int vlen = (int)strcspn(v, "\n");
		snprintf(out, len, "%.*s", vlen, v);
		break;
	}
	if (f)
		fclose(f);
}

/* The selected word of a sysfs setting: "always [madvise] never" gives madvise. */
static void read_selected(const char *path, char *out, size_t len)
{
	char line[128] = "";
	FILE *f = fopen(path, "r");
	if (f && fgets(line, sizeof(line), f)) {
		char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
		if (close) {
			*close = '\0';
			snprintf(out, len, "%s", open + 1);
		}
	}
	if (f)
		fclose(f);
}

void bench_machine(struct bench_machine *m)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->cpu, sizeof(m->cpu), "unknown CPU");
	read_field("/proc/cpuinfo", "model name", m->cpu, sizeof(m->cpu));
	m->cpus = sysconf(_SC_NPROCESSORS_ONLN);
	m->mem_bytes = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
	struct utsname u;
	if (uname(&u) == 0)
		snprintf(m->kernel, sizeof(m->kernel), "%.40s %.100s", u.sysname, u.release);
	snprintf(m->thp, sizeof(m->thp), "unknown");
	read_selected("/sys/kernel/mm/transparent_hugepage/enabled", m->thp, sizeof(m->thp));
	char buf[32] = "-1";
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	if (f && fgets(buf, sizeof(buf), f))
		m->max_map_count = atol(buf);
	else
		m->max_map_count = -1;
	if (f)
		fclose(f);
}

/* ---- the table ---- */

static const char *fmt_value(char buf[32], enum bench_unit unit, double v)
{
	if (v < 0)
		snprintf(buf, 32, "-");
	else if (unit == UNIT_BYTES)
		cli_fmt_bytes(buf, v);
	else if (unit == UNIT_PER_PAGE)
		snprintf(buf, 32, "%.2f us/page", v * 1e6);
	else if (unit == UNIT_RATE)
		snprintf(buf, 32, v >= 1e6 ? "%.2f Mpage/s" : "%.1f kpage/s",
			 v >= 1e6 ? v / 1e6 : v / 1e3);
	else if (v < 1e-3)
		snprintf(buf, 32, "%.1f us", v * 1e6);
	else if (v < 1.0)
		snprintf(buf, 32, "%.2f ms", v * 1e3);
	else
		snprintf(buf, 32, "%.2f s", v);
	return buf;
}

static const char *fmt_ratio(char buf[32], double r)
{
	if (!isfinite(r))
		snprintf(buf, 32, "-");
	else
		snprintf(buf, 32, r >= 1000 ? "%.0f" : "%.3g", r);
	return buf;
}

static bool any_row(const struct bench *b, int figure)
{
	for (size_t i = 0; i < b->nrows; i++)
		if (b->rows[i].figure == figure)
			return true;
	return false;
}

static void print_header(const struct bench *b, FILE *f)
{
	struct bench_machine m;
	bench_machine(&m);
	char mem[CLI_BYTES_LEN];
	fprintf(f, "ucow bench %s: backend %s%s, page %zu B, median of %u round%s, seed %llu\n",
		BENCH_VERSION, ucow_backend() ? ucow_backend() : "?",
		any_row(b, 1) ? " (figure 1: each backend)" : "", b->page, b->rounds,
		b->rounds == 1 ? "" : "s", (unsigned long long)b->seed);
	fprintf(f, "machine: %s, %ld CPUs, %s RAM, %s, THP %s, vm.max_map_count %ld\n",
		m.cpu, m.cpus, cli_fmt_bytes(mem, m.mem_bytes), m.kernel, m.thp,
		m.max_map_count);
}

#define ROW_FMT "%-33s %-8s %-14s %-34s %-14s %8s  %s\n"

static void print_row(const struct bench_row *row, FILE *f)
{
	char size[32], u[32], a[32], r[32], c[64] = "";
	if (row->unavailable[0]) {
		fprintf(f, "%-33s %-8s unavailable: %s\n", row->measure,
			bench_fmt_size(size, row->size), row->unavailable);
		return;
	}
	if (row->has_counters)
		snprintf(c, sizeof(c), "%llu/%llu/%llu/%llu/%llu/%llu",
			 (unsigned long long)row->counters.copies,
			 (unsigned long long)row->counters.kept,
			 (unsigned long long)row->counters.reuses,
			 (unsigned long long)row->counters.zero_fills,
			 (unsigned long long)row->counters.coalesced,
			 (unsigned long long)row->counters.fault_around);
	for (unsigned k = 0; k < row->nalt; k++)
		fprintf(f, ROW_FMT, k ? "" : row->measure, k ? "" : bench_fmt_size(size, row->size),
			k ? "" : fmt_value(u, row->unit, bench_median(&row->ucow)), row->alt[k].name,
			fmt_value(a, row->unit, bench_median(&row->alt[k])),
			fmt_ratio(r, ratio(row, k)), k ? "" : c);
}

static bool any_counters(const struct bench *b, int figure)
{
	for (size_t i = 0; i < b->nrows; i++)
		if (b->rows[i].figure == figure && b->rows[i].has_counters)
			return true;
	return false;
}

static void print_legend(FILE *f)
{
	fprintf(f,
		"\nucow/alt: ratio of the medians. For times and memory below 1 means ucow costs\n"
		"  less; for throughput (figure 5) above 1 means ucow does more.\n"
		"ucow c/k/r/z/co/fa: ucow's counters for the writes of its last round:\n"
		"  faults that copied a shared page / kept the frame of a page shared with\n"
		"  the region's snapshots alone (they took the copy) / made one\n"
		"  writable in place (reused) /\n"
		"  gave a never-written page a frame (zero-filled); pages made private by\n"
		"  coalescing; pages copied ahead of a sequential writer (fault-around).\n"
		"Writes touch one byte per page: the first write to a page takes the whole\n"
		"  fault, and what is written does not change its cost.\n"
		"The fork() side runs in a helper process forked before ucow started: a plain\n"
		"  populated private anonymous heap, no ucow region, no fork handlers.\n"
		"  fork() is timed in the parent until it returns (the child exits at once,\n"
		"  waitpid untimed); figures 1 and 5 time the child's own writes; figure 3\n"
		"  times fork() to the end of waitpid(), the child's writes and exit included.\n"
		"  ucow's 'write 1%% + revert' row is the same cycle on ucow's side.\n"
		"Figure 1 runs ucow under each fault backend (sigsegv, uffd) in a process of\n"
		"  its own, forked before ucow started; the backend named on top is the one\n"
		"  of figures 2 to 5. Each round runs both backends (which goes first\n"
		"  alternates), then fork(), MAP_PRIVATE and memcpy. A uffd row's first ratio\n"
		"  is uffd / sigsegv: the uffd backend's target is at most 3 for random writes.\n"
		"Figure 2 snapshots a new region each round; 1%% = pages chosen at random.\n"
		"  Its '10th' row: the region written (a new 1%%) and snapshotted again 8\n"
		"  times after the 'after 1%%' snapshot, each snapshot replacing the one\n"
		"  before (a checkpoint each period); the last one is timed. Its 'write'\n"
		"  row: the 1%% written after the first snapshot, per page (the region\n"
		"  keeps its frames, the snapshot takes the copies), against as many\n"
		"  random pages written to a clone of the region (each copied). Its '2\n"
		"  alive' row: then ten more snapshots, 0.1%% changed before each, each\n"
		"  destroying the one before the previous (two alive at a time).\n");
}

void bench_print_table(const struct bench *b, FILE *f)
{
	print_header(b, f);
	/* Rows are stored in the order they ran (figures 2 and 3 size by size). */
	for (int fig = 1; fig <= BENCH_FIGURES; fig++) {
		if (!any_row(b, fig))
			continue;
		fprintf(f, "\n%d. %s\n", fig, figure_title[fig]);
		fprintf(f, ROW_FMT, "measure", "size", "ucow", "alternative", "alternative",
			"ucow/alt", any_counters(b, fig) ? "ucow c/k/r/z/co/fa" : "");
		for (size_t i = 0; i < b->nrows; i++)
			if (b->rows[i].figure == fig)
				print_row(&b->rows[i], f);
	}
	if (b->nskipped)
		fprintf(f, "\n");
	for (unsigned i = 0; i < b->nskipped; i++)
		fprintf(f, "skipped: %s\n", b->skipped[i]);
	print_legend(f);
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.9g", v);
	else
		fprintf(f, "null");
}

static void json_series(FILE *f, const struct bench_series *s)
{
	fprintf(f, "\"median\": ");
	json_num(f, s->n ? bench_median(s) : NAN);
	fprintf(f, ", \"samples\": [");
	for (unsigned i = 0; i < s->n; i++) {
		fputs(i ? ", " : "", f);
		json_num(f, s->v[i]);
	}
	fprintf(f, "]");
}

static void json_row(FILE *f, const struct bench_row *row)
{
	fprintf(f, "    {\"figure\": %d, \"measure\": ", row->figure);
	json_str(f, row->measure);
	if (row->backend[0]) {
		fprintf(f, ", \"backend\": ");
		json_str(f, row->backend);
	}
	fprintf(f, ", \"size\": %zu, \"unit\": \"%s\", \"higher_is_better\": %s,\n",
		row->size, unit_json[row->unit], row->unit == UNIT_RATE ? "true" : "false");
	fprintf(f, "     \"ucow\": {");
	json_series(f, &row->ucow);
	fprintf(f, "},\n");
	if (row->unavailable[0]) {
		fprintf(f, "     \"unavailable\": ");
		json_str(f, row->unavailable);
		fprintf(f, ",\n");
	}
	if (row->has_counters)
		fprintf(f, "     \"ucow_faults\": {\"cow_copies\": %llu, \"cow_kept\": %llu, "
			   "\"cow_reuses\": %llu, "
			   "\"zero_fills\": %llu, \"coalesced\": %llu, \"fault_around\": %llu},\n",
			(unsigned long long)row->counters.copies,
			(unsigned long long)row->counters.kept,
			(unsigned long long)row->counters.reuses,
			(unsigned long long)row->counters.zero_fills,
			(unsigned long long)row->counters.coalesced,
			(unsigned long long)row->counters.fault_around);
	fprintf(f, "     \"alternatives\": [");
	for (unsigned k = 0; k < row->nalt; k++) {
		fprintf(f, "%s\n       {\"name\": ", k ? "," : "");
		json_str(f, row->alt[k].name);
		fprintf(f, ", ");
		json_series(f, &row->alt[k]);
		fprintf(f, ", \"ratio\": ");
		json_num(f, ratio(row, k));
		fprintf(f, "}");
	}
	fprintf(f, "]}");
}

static void json_machine(const struct bench *b, FILE *f)
{
	struct bench_machine m;
	bench_machine(&m);
	fprintf(f, "  \"machine\": {\"cpu\": ");
	json_str(f, m.cpu);
	fprintf(f, ", \"cpus\": %ld, \"memory_bytes\": %.0f, \"kernel\": ", m.cpus, m.mem_bytes);
	json_str(f, m.kernel);
	fprintf(f, ", \"thp\": ");
	json_str(f, m.thp);
	fprintf(f, ", \"max_map_count\": %ld},\n", m.max_map_count);
	fprintf(f, "  \"backend\": ");
	json_str(f, ucow_backend() ? ucow_backend() : "");
	fprintf(f, ", \"page_size\": %zu, \"rounds\": %u, \"seed\": %llu,\n", b->page,
		b->rounds, (unsigned long long)b->seed);
}

void bench_print_json(const struct bench *b, FILE *f)
{
	fprintf(f, "{\n  \"tool\": \"ucow bench\", \"version\": \"%s\",\n", BENCH_VERSION);
	json_machine(b, f);
	fprintf(f, "  \"results\": [");
	size_t n = 0;
	for (int fig = 1; fig <= BENCH_FIGURES; fig++)
		for (size_t i = 0; i < b->nrows; i++)
			if (b->rows[i].figure == fig) {
				fprintf(f, "%s\n", n++ ? "," : "");
				json_row(f, &b->rows[i]);
			}
	fprintf(f, "\n  ],\n  \"skipped\": [");
	for (unsigned i = 0; i < b->nskipped; i++) {
		fputs(i ? ", " : "", f);
		json_str(f, b->skipped[i]);
	}
	fprintf(f, "]\n}\n");
}
