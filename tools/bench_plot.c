/*
 * ucow bench --plot: figures 2 and 3 as an SVG, cost against size on log
 * scales. The SVG is written directly rather than through gnuplot, so that
 * the plot needs nothing the build does not already have.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define W 860
#define H 520
#define LEFT 80
#define RIGHT 290   /* room for the legend */
#define TOP 60
#define BOTTOM 60

struct line {
	int figure;
	const char *const *measure;
	int alt;                /* -1: ucow's series, else the alternative's index */
	const char *label, *color, *dash;
};

static const struct line lines[] = {
	{ 2, &bench_m_snap_first, -1, "ucow snapshot, first", "#1f77b4", "" },
	{ 2, &bench_m_snap_after, -1, "ucow snapshot after 1% changed", "#1f77b4", "6,4" },
	{ 2, &bench_m_snap_chain, -1, "ucow 10th snapshot, 1% before each", "#1f77b4", "2,3" },
	{ 2, &bench_m_snap_first, 0, "fork() (parent, until it returns)", "#d62728", "" },
	{ 3, &bench_m_revert, -1, "ucow revert after 1% changed", "#2ca02c", "" },
	{ 3, &bench_m_cycle, -1, "ucow write 1% + revert", "#2ca02c", "6,4" },
	{ 3, &bench_m_revert_in_place, -1, "ucow revert in place, same 1% each time", "#9467bd", "" },
	{ 3, &bench_m_revert, 0, "fork()+exit+wait, child writes 1%", "#ff7f0e", "" },
};
#define NLINES (sizeof(lines) / sizeof(lines[0]))

/* log10 without libm: ln by range reduction and the atanh series. */
static double log10_of(double x)
{
	const double ln2 = 0.69314718055994531, ln10 = 2.30258509299404568;
	int e = 0;
	while (x >= 2.0) {
		x /= 2.0;
		e++;
	}
	while (x < 1.0) {
		x *= 2.0;
		e--;
	}
	double y = (x - 1.0) / (x + 1.0), y2 = y * y, term = y, sum = 0.0;
	for (int k = 1; k < 41; k += 2, term *= y2)
		sum += term / k;
	return (2.0 * sum + e * ln2) / ln10;
}

/* Text from the machine (the CPU's name) may hold XML's special characters. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '&')
			fputs("&amp;", f);
		else if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else
			fputc(*s, f);
	}
}

static double point(const struct bench *b, const struct line *l, size_t size)
{
	for (size_t i = 0; i < b->nrows; i++) {
		const struct bench_row *r = &b->rows[i];
		if (r->figure != l->figure || r->size != size || strcmp(r->measure, *l->measure))
			continue;
		if (l->alt >= (int)r->nalt)
			return NAN;
		double v = bench_median(l->alt < 0 ? &r->ucow : &r->alt[l->alt]);
		return v > 0 ? v : NAN;
	}
	return NAN;
}

struct axes {
	double xlo, xhi, ylo, yhi; /* log2 of bytes, log10 of seconds */
};

static double px(const struct axes *a, size_t size)
{
	return LEFT + (W - LEFT - RIGHT) * (log10_of((double)size) / log10_of(2.0) - a->xlo) /
		      (a->xhi - a->xlo);
}

static double py(const struct axes *a, double secs)
{
	return H - BOTTOM - (H - TOP - BOTTOM) * (log10_of(secs) - a->ylo) / (a->yhi - a->ylo);
}

/* Decades around every point; 0 if there is none. */
static int find_axes(const struct bench *b, struct axes *a)
{
	double lo = INFINITY, hi = -INFINITY;
	for (size_t l = 0; l < NLINES; l++)
		for (unsigned i = 0; i < b->nsizes; i++) {
			double v = point(b, &lines[l], b->sizes[i]);
			if (isfinite(v)) {
				lo = v < lo ? v : lo;
				hi = v > hi ? v : hi;
			}
		}
	if (!isfinite(lo))
		return 0;
	a->ylo = (double)(long)(log10_of(lo) + 100.0) - 100.0;
	a->yhi = -((double)(long)(-log10_of(hi) + 100.0) - 100.0);
	if (a->yhi <= a->ylo)
		a->yhi = a->ylo + 1.0;
	size_t smin = b->sizes[0], smax = b->sizes[0];
	for (unsigned i = 1; i < b->nsizes; i++) {
		smin = b->sizes[i] < smin ? b->sizes[i] : smin;
		smax = b->sizes[i] > smax ? b->sizes[i] : smax;
	}
	a->xlo = log10_of((double)smin) / log10_of(2.0) - 0.5;
	a->xhi = log10_of((double)smax) / log10_of(2.0) + 0.5;
	return 1;
}

static const char *decade_label(char buf[32], int k)
{
	static const char *units[] = { "ns", "us", "ms", "s" };
	int u = k < -9 ? 0 : k >= 0 ? 3 : (k + 9) / 3;
	int e = k - (u - 3) * 3;
	double v = 1.0;
	for (int i = 0; i < e; i++)
		v *= 10.0;
	for (int i = 0; i > e; i--)
		v /= 10.0;
	snprintf(buf, 32, "%g %s", v, units[u]);
	return buf;
}

static void draw_axes(const struct bench *b, const struct axes *a, FILE *f)
{
	char buf[32];
	for (int k = (int)a->ylo; k <= (int)a->yhi; k++) {
		double y = H - BOTTOM - (H - TOP - BOTTOM) * (k - a->ylo) / (a->yhi - a->ylo);
		fprintf(f, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#ddd'/>\n", LEFT, y,
			W - RIGHT, y);
		fprintf(f, "<text x='%d' y='%.1f' text-anchor='end'>%s</text>\n", LEFT - 6, y + 4,
			decade_label(buf, k));
	}
	for (unsigned i = 0; i < b->nsizes; i++) {
		double x = px(a, b->sizes[i]);
		fprintf(f, "<line x1='%.1f' y1='%d' x2='%.1f' y2='%d' stroke='#ddd'/>\n", x, TOP, x,
			H - BOTTOM);
		fprintf(f, "<text x='%.1f' y='%d' text-anchor='middle'>%s</text>\n", x,
			H - BOTTOM + 18, bench_fmt_size(buf, b->sizes[i]));
	}
	fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#444'/>\n",
		LEFT, TOP, W - LEFT - RIGHT, H - TOP - BOTTOM);
	fprintf(f, "<text x='%d' y='%d' text-anchor='middle'>heap size (log scale)</text>\n",
		LEFT + (W - LEFT - RIGHT) / 2, H - 18);
	fprintf(f, "<text x='18' y='%d' transform='rotate(-90 18 %d)' text-anchor='middle'>"
		   "time, median (log scale)</text>\n", TOP + (H - TOP - BOTTOM) / 2,
		TOP + (H - TOP - BOTTOM) / 2);
}

static void draw_line(const struct bench *b, const struct axes *a, size_t l, FILE *f)
{
	const struct line *ln = &lines[l];
	fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' stroke-dasharray='%s' "
		   "points='", ln->color, *ln->dash ? ln->dash : "none");
	for (unsigned i = 0; i < b->nsizes; i++) {
		double v = point(b, ln, b->sizes[i]);
		if (isfinite(v))
			fprintf(f, "%.1f,%.1f ", px(a, b->sizes[i]), py(a, v));
	}
	fprintf(f, "'/>\n");
	for (unsigned i = 0; i < b->nsizes; i++) {
		double v = point(b, ln, b->sizes[i]);
		if (isfinite(v))
			fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='%s'/>\n",
				px(a, b->sizes[i]), py(a, v), ln->color);
	}
	int y = TOP + 10 + 22 * (int)l, x = W - RIGHT + 16;
	fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='%s' stroke-width='2' "
		   "stroke-dasharray='%s'/>\n", x, y, x + 28, y, ln->color,
		*ln->dash ? ln->dash : "none");
	fprintf(f, "<text x='%d' y='%d'>%s</text>\n", x + 36, y + 4, ln->label);
}

int bench_check_plot(const struct bench *b, const char *path)
{
	if (!bench_wants(b, 2) && !bench_wants(b, 3)) {
		fprintf(stderr, "ucow bench: --plot: plots figures 2 and 3, and "
				"neither is asked for\n");
		return -1;
	}
	bool existed = access(path, F_OK) == 0;
	FILE *f = fopen(path, "a");
	if (!f) {
		fprintf(stderr, "ucow bench: --plot: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fclose(f);
	if (!existed)
		unlink(path);
	return 0;
}

int bench_write_plot(const struct bench *b, const char *path)
{
	struct axes a;
	if (!find_axes(b, &a)) {
		fprintf(stderr, "ucow bench: --plot: no result of figures 2 or 3 to plot\n");
		return 1;
	}
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "ucow bench: --plot: %s: %s\n", path, strerror(errno));
		return 1;
	}
	fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n"
		   "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
		   "viewBox='0 0 %d %d' font-family='sans-serif' font-size='12'>\n"
		   "<rect width='100%%' height='100%%' fill='white'/>\n", W, H, W, H);
	struct bench_machine m;
	bench_machine(&m);
	fprintf(f, "<text x='%d' y='24' font-size='15'>ucow vs fork(): snapshot and revert "
		   "cost against heap size (median of %u rounds)</text>\n", LEFT, b->rounds);
	fprintf(f, "<text x='%d' y='42' font-size='11' fill='#555'>", LEFT);
	put_escaped(f, m.cpu);
	fprintf(f, ", %ld CPUs, ", m.cpus);
	put_escaped(f, m.kernel);
	fprintf(f, ", ucow backend %s</text>\n", ucow_backend() ? ucow_backend() : "?");
	draw_axes(b, &a, f);
	for (size_t l = 0; l < NLINES; l++)
		draw_line(b, &a, l, f);
	fprintf(f, "</svg>\n");
	if (fclose(f) != 0) {
		fprintf(stderr, "ucow bench: --plot: %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (!b->json)
		printf("\nplot: %s\n", path);
	return 0;
}
