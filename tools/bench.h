/*
 * Shared pieces of `ucow bench`: the results table, the run's settings and
 * the helpers every figure uses. One figure family per file:
 *   bench.c           options, plan, progress
 *   bench_util.c      statistics, page orders, page touching, ucow helpers
 *   bench_kernel.c    the kernel side: a fork server process with a plain heap;
 *                     the request/reply plumbing of such helper processes
 *   bench_backend.c   one helper process per fault backend (figure 1)
 *   bench_fault.c     1. first write to a shared page; 5. two threads
 *   bench_snapshot.c  2. snapshot vs fork(); 3. revert vs fork()+exit+wait
 *   bench_sparse.c    4. clone of a sparse region vs a deep copy
 *   bench_report.c    the table and the JSON, the machine description
 *   bench_plot.c      the SVG plot
 */
#ifndef UCOW_BENCH_H
#define UCOW_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <ucow.h>

#define BENCH_MAX_SIZES 16
#define BENCH_MAX_ALTS 3
#define BENCH_MAX_ROUNDS 1000
#define BENCH_FIGURES 5
#define BENCH_MAX_THREADS 8
#define BENCH_BACKENDS 2        /* sigsegv (the reference) and uffd */
#define BENCH_WHY_LEN 200

/* How a row's values read: the JSON gives seconds, bytes or pages per second. */
enum bench_unit {
	UNIT_SECONDS,   /* time of one operation */
	UNIT_PER_PAGE,  /* seconds per page */
	UNIT_BYTES,
	UNIT_RATE,      /* pages per second: higher is better */
};

struct bench_series {
	char name[48];
	double *v;      /* one sample per round */
	unsigned n, cap;
};

struct bench_counters {
	uint64_t copies, kept, reuses, zero_fills, coalesced, fault_around;
};

/* One measure at one size: ucow against up to BENCH_MAX_ALTS alternatives. */
struct bench_row {
	int figure;
	char measure[48];
	size_t size;
	enum bench_unit unit;
	unsigned rounds;        /* room in each series */
	struct bench_series ucow;
	struct bench_series alt[BENCH_MAX_ALTS];
	unsigned nalt;
	bool has_counters;
	struct bench_counters counters; /* ucow's write faults, last round */
	char backend[16];       /* set where ucow ran under a backend of its own */
	char unavailable[BENCH_WHY_LEN]; /* set: the backend could not be had, why */
};

/* A helper process that measures ucow under one backend (bench_backend.c). */
struct bench_backend {
	const char *name;
	pid_t pid;
	int fd;                 /* socket to it */
	bool available;         /* its region could be created */
	char why[BENCH_WHY_LEN]; /* if not, the reason */
};

struct bench {
	/* settings */
	unsigned rounds;
	size_t sizes[BENCH_MAX_SIZES];
	unsigned nsizes;
	size_t fault_size, sparse_size;
	unsigned figures;       /* bit f set: run figure f (1..5) */
	bool json;
	const char *plot;
	uint64_t seed;
	size_t page;

	/* results */
	struct bench_row *rows;
	size_t nrows, cap;
	char skipped[BENCH_MAX_SIZES * 2][160];
	unsigned nskipped;

	/* progress */
	unsigned step, nsteps;
	bool tty;

	/* the kernel side (bench_kernel.c) */
	pid_t helper;
	int to_helper;          /* socket to it */

	/* figure 1's backends, [0] the signal backend (bench_backend.c) */
	struct bench_backend backend[BENCH_BACKENDS];
};

static inline bool bench_wants(const struct bench *b, int figure)
{
	return b->figures & (1u << figure);
}

/* ---- bench.c ---- */

/* Starts the next step: "[3/12] snapshot 1 GiB". */
void bench_step(struct bench *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A progress line on stderr within the current step ("round 2/5", "populating"). */
void bench_progress(struct bench *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Records a size or figure left out, with the reason (shown under the table). */
void bench_skip(struct bench *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- bench_util.c ---- */

/* Room for n rows, made once before the figures run; -1 on ENOMEM. */
int bench_reserve_rows(struct bench *b, size_t n);
/* A new row with room for b->rounds samples per series; NULL if none is left. */
struct bench_row *bench_row_new(struct bench *b, int figure, const char *measure,
				size_t size, enum bench_unit unit);
/* Adds an alternative to the row and returns its index. */
unsigned bench_row_alt(struct bench_row *row, const char *name);
void bench_add(struct bench_series *s, double v);
double bench_median(const struct bench_series *s);
void bench_free_rows(struct bench *b);

uint64_t bench_random(uint64_t *state);
/* A random permutation of [0, pages); NULL on ENOMEM. */
size_t *bench_permutation(size_t pages, uint64_t seed);
/* `count` distinct pages of [0, pages) in random order; NULL on ENOMEM. */
size_t *bench_sample(size_t pages, size_t count, uint64_t seed);
/* 1% of the pages, at least one. */
size_t bench_one_percent(size_t pages);

/* Writes one byte to each page of order[0..n) (order NULL: pages 0..n-1). */
void bench_touch(char *base, size_t page, const size_t *order, size_t n);
/*
 * Writes one byte to every one of `pages` pages from `nthreads` threads, each
 * taking the pages of its own slice of the range, in the order `order` (NULL:
 * ascending) gives them. Returns the wall time from the first thread's start
 * to the last one's end, or a negative value if a thread could not start.
 */
double bench_touch_threads(char *base, size_t page, size_t pages,
			   const size_t *order, unsigned nthreads);

/* Gives every page of a new region a frame of its own (setup, untimed). */
int bench_populate(ucow_region *r, size_t page);
int bench_counters(const ucow_region *r, struct bench_counters *out);
/* frame_bytes of ucow_global_stats, or 0 with a message. */
size_t bench_frame_bytes(void);
/* Says on stderr why a ucow call failed; returns 1 (the exit status). */
int bench_lib_error(const char *call, int err);
/* 1 if `need` bytes fit in MemAvailable (or it is unknown); else records a skip. */
int bench_fits(struct bench *b, double need, const char *what);
/* "64 MiB", "1 GiB": sizes in the table and in progress lines. */
const char *bench_fmt_size(char buf[32], size_t size);

/* ---- bench_kernel.c: helper processes, and the kernel side ---- */

/*
 * Forks a helper process that runs serve(fd, arg) on its end of a new
 * socketpair and exits; the parent keeps the other end in *fd. The child
 * closes the ends of the helpers started before it. 0, or 1 with a message.
 */
int bench_spawn(struct bench *b, void (*serve)(int fd, void *arg), void *arg,
		pid_t *pid, int *fd);
/* Sends (out) or receives all of len bytes; -1 on error or end of file. */
int bench_io(int fd, void *buf, size_t len, bool out);
/* Waits for a child: 0 if it exited with status 0, else an errno value. */
int bench_wait(pid_t pid);


int kern_start(struct bench *b);
void kern_stop(struct bench *b);
/* A populated private anonymous heap of `size` bytes (replaces the last one). */
int kern_alloc(struct bench *b, size_t size);
int kern_free(struct bench *b);
/* fork() timed in the parent until it returns; the child exits at once. */
int kern_fork(struct bench *b, double *secs);
/* Writes `count` random pages of the heap (sample seed), untimed. */
int kern_write(struct bench *b, size_t count, uint64_t seed);
/*
 * Forks a child that writes one byte to every page of the heap from nthreads
 * threads, in random order (permutation seed) or ascending (random false),
 * and reports its own wall time.
 */
int kern_fork_cow(struct bench *b, bool random, unsigned nthreads, uint64_t seed,
		  double *secs);
/* fork() + the child writes `count` random pages and exits + waitpid, timed. */
int kern_fork_server(struct bench *b, size_t count, uint64_t seed, double *secs);

/* ---- bench_backend.c: ucow under each backend, in processes of its own ---- */

/*
 * Forks one process per backend. Call before the first call into ucow (other
 * than ucow_page_size), so that each child still may choose its backend.
 */
int be_start(struct bench *b);
void be_stop(struct bench *b);
/*
 * Each process creates and populates a region of `size` bytes. A backend
 * that cannot be had is marked unavailable (with the reason), not an error.
 */
int be_setup(struct bench *b, size_t size);
/* Writes one byte to every page of a new clone, in random or ascending order. */
int be_round(struct bench *b, unsigned k, bool random, double *secs,
	     struct bench_counters *c);

/* ---- the figures ---- */

int bench_fault(struct bench *b);    /* figures 1 and 5 */
int bench_snapshot(struct bench *b); /* figures 2 and 3 */
int bench_sparse(struct bench *b);   /* figure 4 */

/* The measures of figures 2 and 3, by which the plot finds its lines. */
extern const char *const bench_m_snap_first, *const bench_m_snap_after;
extern const char *const bench_m_snap_chain;
extern const char *const bench_m_revert, *const bench_m_cycle;
extern const char *const bench_m_revert_in_place, *const bench_m_cycle_in_place;

/* ---- output ---- */

void bench_print_table(const struct bench *b, FILE *f);
void bench_print_json(const struct bench *b, FILE *f);
/* Before the run: whether the plot can be made and its file written (an
 * error said on stderr: -1). */
int bench_check_plot(const struct bench *b, const char *path);
int bench_write_plot(const struct bench *b, const char *path);

/* Machine description for the table header and the JSON (bench_report.c). */
struct bench_machine {
	char cpu[96];
	long cpus;
	double mem_bytes;
	char kernel[160];
	char thp[32];
	long max_map_count;
};
void bench_machine(struct bench_machine *m);

#endif /* UCOW_BENCH_H */
