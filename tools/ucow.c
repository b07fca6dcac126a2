/*
 * ucow: command-line tool of libucow. `ucow <subcommand> [options]`.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ucow.h>

#include "cli.h"

#ifdef PACKAGE_VERSION
#define UCOW_TOOL_VERSION PACKAGE_VERSION
#else
#define UCOW_TOOL_VERSION "0.1.0"
#endif

static int cmd_info(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "demo", cmd_demo, "clone, snapshot, write and revert a heap; show time and memory" },
	{ "bench", cmd_bench, "measure ucow against fork(), MAP_PRIVATE and deep copies" },
	{ "info", cmd_info, "show the fault backend, page size and vm.max_map_count" },
	{ "version", cmd_version, "print the version" },
	{ "help", cmd_help, "show this help, or a subcommand's: ucow help demo" },
};

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: ucow <subcommand> [options]\n"
		   "\n"
		   "Userspace page-level copy-on-write memory regions (libucow).\n"
		   "\n"
		   "Subcommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nRun 'ucow <subcommand> --help' for its options.\n"
		   "Environment: UCOW_BACKEND picks the fault backend (default \"sigsegv\").\n");
}

static int wants_help(int argc, char **argv)
{
	return argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
}

static int cmd_help(int argc, char **argv)
{
	if (argc < 2 || wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	const struct command *c = find_command(argv[1]);
	if (!c) {
		fprintf(stderr, "ucow: unknown subcommand '%s'\n", argv[1]);
		usage(stderr);
		return 2;
	}
	if (c->run == cmd_help) {
		usage(stdout);
		return 0;
	}
	char name[64];
	snprintf(name, sizeof(name), "ucow %s", c->name);
	char *args[] = { name, "--help", NULL };
	return c->run(2, args);
}

static int cmd_version(int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf("Usage: ucow version\n\nPrints the version of the ucow tool.\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "%s: takes no arguments\n", argv[0]);
		return 2;
	}
	printf("ucow %s\n", UCOW_TOOL_VERSION);
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf("Usage: ucow info\n\n"
		       "Prints the fault backend ucow uses (set UCOW_BACKEND to change it),\n"
		       "the page size, and vm.max_map_count: a region whose pages are mapped\n"
		       "differently (shared / private) may need one kernel mapping per run of\n"
		       "pages, and the kernel refuses mappings past this limit.\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "%s: takes no arguments\n", argv[0]);
		return 2;
	}
	const char *backend = ucow_backend();
	if (!backend) {
		fprintf(stderr, "%s: ucow_backend: %s (UCOW_BACKEND=%s)\n", argv[0],
			strerror(errno), getenv("UCOW_BACKEND") ? getenv("UCOW_BACKEND") : "");
		return 1;
	}
	printf("backend          %s\n", backend);
	printf("page size        %zu bytes\n", ucow_page_size());

	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	long long count;
	if (f && fscanf(f, "%lld", &count) == 1)
		printf("vm.max_map_count %lld\n", count);
	else
		printf("vm.max_map_count unknown (/proc/sys/vm/max_map_count: %s)\n",
		       f ? "unreadable" : strerror(errno));
	if (f)
		fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	/* Line-buffered so that a demo step's line shows before the next starts. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(1, argv);

	const struct command *c = find_command(argv[1]);
	if (!c) {
		fprintf(stderr, "ucow: unknown subcommand '%s'\n"
				"Run 'ucow help' for the list.\n", argv[1]);
		return 2;
	}
	char name[64];
	snprintf(name, sizeof(name), "ucow %s", c->name);
	argv[1] = name;
	return c->run(argc - 1, argv + 1);
}

/* ---- helpers declared in cli.h ---- */

int cli_parse_u64(const char *what, const char *s, uint64_t max, uint64_t *out)
{
	char *end = NULL;
	errno = 0;
	/* strtoull would accept " -5" and wrap it: insist on a leading digit. */
	unsigned long long v = isdigit((unsigned char)s[0]) ? strtoull(s, &end, 10) : 0;
	if (!end || *end != '\0') {
		fprintf(stderr, "ucow: %s: '%s' is not a whole number\n", what, s);
		return -1;
	}
	if (errno == ERANGE || v > max) {
		fprintf(stderr, "ucow: %s: '%s' is too large (at most %" PRIu64 ")\n", what, s, max);
		return -1;
	}
	*out = v;
	return 0;
}

int cli_parse_size(const char *what, const char *s, size_t *out)
{
	static const char suffixes[] = "KMGT";
	char *end = NULL;
	errno = 0;
	unsigned long long v = isdigit((unsigned char)s[0]) ? strtoull(s, &end, 10) : 0;
	if (!end) {
		fprintf(stderr, "ucow: %s: '%s' is not a size (examples: 4096, 64K, 256M, 2G)\n",
			what, s);
		return -1;
	}
	unsigned shift = 0;
	const char *p = *end ? strchr(suffixes, toupper((unsigned char)*end)) : NULL;
	if (p) {
		shift = 10 * (unsigned)(p - suffixes + 1);
		end++;
		if (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0)
			end += strlen(end);
	}
	if (*end != '\0') {
		fprintf(stderr, "ucow: %s: '%s' is not a size: use digits with an optional "
				"suffix K, M, G or T (binary: 256M = 256 MiB)\n", what, s);
		return -1;
	}
	if (errno == ERANGE || (shift && v > (SIZE_MAX >> shift)) || v > SIZE_MAX) {
		fprintf(stderr, "ucow: %s: '%s' is too large\n", what, s);
		return -1;
	}
	*out = (size_t)v << shift;
	return 0;
}

int cli_parse_percent(const char *what, const char *s, double *out)
{
	char *end = NULL;
	double v = isdigit((unsigned char)s[0]) || s[0] == '.' ? strtod(s, &end) : NAN;
	if (!end || *end != '\0' || !(v <= 100.0)) {
		fprintf(stderr, "ucow: %s: '%s' is not a percentage from 0 to 100\n", what, s);
		return -1;
	}
	*out = v;
	return 0;
}

double cli_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *cli_fmt_bytes(char buf[CLI_BYTES_LEN], double bytes)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double mag = bytes < 0 ? -bytes : bytes;
	unsigned u = 0;
	while (mag >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		mag /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, CLI_BYTES_LEN, "%.0f B", bytes);
	else
		snprintf(buf, CLI_BYTES_LEN, "%.1f %s", bytes < 0 ? -mag : mag, units[u]);
	return buf;
}

/* The value in kB of the line "key value kB" of a /proc file, or -1. */
static long long read_kb(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char line[256];
	long long v = -1;
	size_t n = strlen(key);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, n) == 0 && sscanf(line + n, "%lld", &v) == 1)
			break;
	fclose(f);
	return v;
}

void cli_read_mem(struct cli_mem *m)
{
	m->shmem_kb = read_kb("/proc/meminfo", "Shmem:");
	m->available_kb = read_kb("/proc/meminfo", "MemAvailable:");
	m->rss_kb = read_kb("/proc/self/status", "VmRSS:");
	m->rss_shmem_kb = read_kb("/proc/self/status", "RssShmem:");
}
