/*
 * Shared pieces of the `ucow` command-line tool: the subcommands and the
 * small helpers they use. The helpers' bodies are in tools/ucow.c.
 */
#ifndef UCOW_CLI_H
#define UCOW_CLI_H

#include <stddef.h>
#include <stdint.h>

/*
 * Subcommands: `ucow NAME args...` calls cmd_NAME(argc, argv) with argv[0]
 * set to "ucow NAME" (for getopt's messages) and the rest of the arguments
 * after it. They return the exit status: 0 success, 1 a failure (library
 * error, failed check), 2 a usage error. Add one here and one line to the
 * table in tools/ucow.c.
 */
int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/*
 * Parses a byte count: digits with an optional binary suffix K, M, G or T
 * (also KiB, KB, k, ...): "256M" is 256 MiB. On error prints a message naming
 * `what` (e.g. "--size") on stderr and returns -1; else stores it, returns 0.
 */
int cli_parse_size(const char *what, const char *s, size_t *out);

/* Parses a whole decimal number in [0, max], with errors as above. */
int cli_parse_u64(const char *what, const char *s, uint64_t max, uint64_t *out);

/* Parses a percentage in [0, 100] (fractions allowed), errors as above. */
int cli_parse_percent(const char *what, const char *s, double *out);

/* Seconds on the monotonic clock. */
double cli_now(void);

/* Formats a byte count (may be negative) as "256.0 MiB" into buf. */
#define CLI_BYTES_LEN 32
const char *cli_fmt_bytes(char buf[CLI_BYTES_LEN], double bytes);

/* Memory readings in KiB, -1 where the kernel does not report the field. */
struct cli_mem {
	long long shmem_kb;     /* system-wide Shmem: (/proc/meminfo); memfd pages count here */
	long long available_kb; /* system-wide MemAvailable: */
	long long rss_kb;       /* VmRSS: of this process */
	long long rss_shmem_kb; /* RssShmem: of this process */
};
void cli_read_mem(struct cli_mem *m);

#endif /* UCOW_CLI_H */
