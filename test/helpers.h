/* Shared helpers of the ucow CUnit suites. */
#ifndef UCOW_TEST_HELPERS_H
#define UCOW_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>

#include <ucow.h>

/* Suites: each test file registers its own. */
void add_api_suite(void);
void add_cow_suite(void);
void add_snapshot_suite(void);
void add_threads_suite(void);
void add_cancel_suite(void);
void add_signals_suite(void);
void add_fork_suite(void);
void add_scale_suite(void);
void add_diff_suite(void);
void add_uffd_suite(void);
void add_model_suite(void);
void add_failure_suite(void);
void add_cpus_suite(void);
void add_lifecycle_suite(void);

/*
 * Scenarios that need a process where ucow was never used: main.c runs them
 * when the test binary is started as `<binary> --child-scenario NAME`.
 * Each returns the exit status of the process (0: all checks passed).
 */
struct child_scenario {
	const char *name;
	int (*run)(void);
};
extern const struct child_scenario signal_scenarios[]; /* ends with {NULL} */
extern const struct child_scenario backend_scenarios[];
extern const struct child_scenario failure_scenarios[];
extern const struct child_scenario lifecycle_scenarios[];
extern const struct child_scenario scale_scenarios[];

struct test_case {
	const char *name;
	void (*fn)(void);
};
#define TEST(fn) { #fn, fn }
/* Registers a suite of tests ending with {NULL}; exits if CUnit fails. */
void add_suite(const char *name, const struct test_case *tests);

/*
 * Runs fn(arg) in a forked child that _exit(0)s when fn returns, under a
 * watchdog alarm so that a deadlock fails instead of hanging the run.
 * Returns the wait status, or -errno if the fork failed.
 */
int run_in_child(void (*fn)(void *), void *arg);
/* Runs `<this binary> --child-scenario name` and returns its wait status. */
int run_scenario(const char *name);

/* Functions, not macros: `st` is often the run_in_child() call itself. */
static inline bool child_exited(int st, int code)
{
	return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == code;
}
static inline bool child_signaled(int st, int sig)
{
	return st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == sig;
}
#define CHILD_EXITED(st, code) child_exited((st), (code))
#define CHILD_SIGNALED(st, sig) child_signaled((st), (sig))
#define CHILD_FAILED_CHECK 99

/* In a child, CUnit cannot record failures: print the failed check and exit. */
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			check_failed(__FILE__, __LINE__, #cond);               \
	} while (0)
_Noreturn void check_failed(const char *file, int line, const char *expr);

/*
 * In a child: sends stderr into a pipe until stderr_capture_end(), which
 * restores it and returns what was written (at most len - 1 bytes, NUL
 * terminated) in buf. For checking ucow's one-line messages.
 */
struct stderr_capture {
	int saved, rd;
};
void stderr_capture_begin(struct stderr_capture *c);
void stderr_capture_end(struct stderr_capture *c, char *buf, size_t len);

/* The first number in a file (a /proc setting), or -1. */
long read_long(const char *path);
/* Lines in a file (/proc/self/maps: the process's mappings), or -1. */
long count_lines(const char *path);
size_t page_size(void);
/* Whether ucow_backend() is `name` (false if ucow_backend() fails). */
bool backend_is(const char *name);
/* Whether the suite runs under this tool (UCOW_TEST_SANITIZER: asan, tsan,
 * valgrind). */
bool sanitizer_is(const char *name);
/* Returns from a test that cannot run under `tool`, saying why. */
#define SKIP_UNDER(tool, why)                                                  \
	do {                                                                   \
		if (sanitizer_is(tool)) {                                      \
			printf("(not under %s: %s) ", tool, why);              \
			return;                                                \
		}                                                              \
	} while (0)

/* Page p of [base, ...) gets bytes derived from (seed, p) only. */
void fill_pages(void *base, size_t first, size_t count, unsigned seed);
bool pages_match(const void *base, size_t first, size_t count, unsigned seed);
bool is_zero(const void *p, size_t len);
/* A region of `pages` pages whose first `filled` pages hold fill_pages(seed). */
ucow_region *make_filled(size_t pages, size_t filled, unsigned seed);
/* Address of page p of r. */
char *page_of(const ucow_region *r, size_t p);

/* The region's stats; every field is all ones if ucow_stats() failed. */
struct ucow_stats stats_of(const ucow_region *r);
struct ucow_global_stats global_stats(void);
bool stats_equal(const struct ucow_stats *a, const struct ucow_stats *b);

/* Permissions ("rw-p", ...) of the mapping holding addr in /proc/self/maps. */
bool mapping_perms(const void *addr, char perms[5]);
/* Kernel mappings that hold part of the region of len bytes at addr, or -1:
 * its pages and the zeros past them to the end of its last 2 MiB chunk. */
long mappings_in(const void *addr, size_t len);
/* Inode of the file mapped at addr (0: anonymous memory), or -1. */
long mapping_inode(const void *addr);
/* Offset in its file of the byte mapped at addr, or -1. */
long long mapping_offset(const void *addr);
/* Whether a file descriptor of this process is a memfd. */
bool has_memfd_open(void);

#endif
