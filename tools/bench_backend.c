/*
 * ucow bench, figure 1's backends: one helper process per fault backend, each
 * measuring ucow's first writes under its own backend. A process chooses its
 * backend once, before its first region, so the two cannot share the bench's
 * process: the helpers are forked before the bench's first call into ucow,
 * and the bench alternates them round by round as it alternates ucow and the
 * kernel. Requests and replies are bench_kernel.c's: one fixed-size request,
 * one reply, over a socketpair.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

static const char *const backend_names[BENCH_BACKENDS] = { "sigsegv", "uffd" };

enum be_op { BE_SETUP, BE_ROUND, BE_QUIT };

struct be_req {
	int op;
	bool random;
	size_t size;
	uint64_t seed;
};

struct be_rep {
	int err;                /* errno, 0 on success */
	bool unavailable;       /* the backend cannot be had: not an error */
	double secs;
	struct bench_counters c;
	char why[BENCH_WHY_LEN];
};

/* ---- the helper process ---- */

struct be_proc {
	const char *name;
	size_t page, pages;
	ucow_region *orig;      /* populated; each round writes a clone of it */
	size_t *perm;           /* the random order, the same as the bench's */
};

static int fail(struct be_rep *r, int err, const char *call)
{
	r->err = err;
	snprintf(r->why, sizeof(r->why), "%s: %s", call, strerror(err));
	return -1;
}

static int unavailable(struct be_rep *r, int err, const char *call, const char *said)
{
	fail(r, err, call);
	r->unavailable = true;
	snprintf(r->why, sizeof(r->why), "%s failed (%s)%s%s", call, strerror(err),
		 *said ? ": " : "", said);
	return -1;
}

/* What was written to fd, without the library's "ucow: " and the newline. */
static void read_said(int fd, char *said, size_t len)
{
	ssize_t n = pread(fd, said, len - 1, 0);
	said[n > 0 ? n : 0] = '\0';
	said[strcspn(said, "\n")] = '\0';
	if (strncmp(said, "ucow: ", 6) == 0)
		memmove(said, said + 6, strlen(said + 6) + 1);
}

/*
 * The library names the reason a backend cannot be had in one line on
 * stderr: catch it for the table (the helper's stderr is the terminal the
 * progress lines go to). Whatever it says on success is passed on.
 */
static ucow_region *create_catching(size_t size, char *said, size_t len)
{
	int tmp = memfd_create("ucow-bench-stderr", MFD_CLOEXEC);
	int saved = tmp < 0 ? -1 : dup(STDERR_FILENO);
	if (saved >= 0)
		dup2(tmp, STDERR_FILENO);
	ucow_region *r = ucow_create(size);
	int err = errno;
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
	if (tmp >= 0) {
		read_said(tmp, said, len);
		close(tmp);
	}
	if (r && *said)
		fprintf(stderr, "ucow: %s\n", said);
	errno = err;
	return r;
}

static int proc_setup(struct be_proc *p, const struct be_req *q, struct be_rep *r)
{
	char said[BENCH_WHY_LEN] = "";
	int rc = ucow_set_backend(p->name);
	if (rc < 0)
		return unavailable(r, -rc, "ucow_set_backend", said);
	p->orig = create_catching(q->size, said, sizeof(said));
	if (!p->orig)
		return unavailable(r, errno, "ucow_create", said);
	p->pages = q->size / p->page;
	p->perm = bench_permutation(p->pages, q->seed);
	if (!p->perm)
		return fail(r, ENOMEM, "malloc");
	/* A frame per page by system call, not by a fault per page (setup). */
	rc = ucow_unshare(ucow_base(p->orig), q->size);
	if (rc < 0)
		return fail(r, -rc, "ucow_unshare");
	bench_touch(ucow_base(p->orig), p->page, NULL, p->pages);
	return 0;
}

static int proc_round(struct be_proc *p, bool random, struct be_rep *r)
{
	if (!p->orig)
		return fail(r, EINVAL, "round before setup");
	ucow_region *clone = ucow_clone(p->orig);
	if (!clone)
		return fail(r, errno, "ucow_clone");
	double t0 = cli_now();
	bench_touch(ucow_base(clone), p->page, random ? p->perm : NULL, p->pages);
	r->secs = cli_now() - t0;
	int rc = bench_counters(clone, &r->c) ? fail(r, EIO, "ucow_stats") : 0;
	ucow_destroy(clone);
	return rc;
}

static void be_main(int fd, void *arg)
{
	const struct bench_backend *be = arg;
	struct be_proc p = { .name = be->name, .page = ucow_page_size() };
	struct be_req q;
	while (bench_io(fd, &q, sizeof(q), false) == 0 && q.op != BE_QUIT) {
		struct be_rep r;
		memset(&r, 0, sizeof(r));
		if (q.op == BE_SETUP && !p.orig)
			proc_setup(&p, &q, &r);
		else if (q.op == BE_ROUND)
			proc_round(&p, q.random, &r);
		else
			fail(&r, EINVAL, "unexpected request");
		if (bench_io(fd, &r, sizeof(r), true) < 0)
			break;
	}
}

/* ---- the bench side ---- */

int be_start(struct bench *b)
{
	for (unsigned k = 0; k < BENCH_BACKENDS; k++) {
		struct bench_backend *be = &b->backend[k];
		be->name = backend_names[k];
		if (bench_spawn(b, be_main, be, &be->pid, &be->fd))
			return 1;
	}
	return 0;
}

void be_stop(struct bench *b)
{
	for (unsigned k = 0; k < BENCH_BACKENDS; k++) {
		struct bench_backend *be = &b->backend[k];
		if (be->pid <= 0)
			continue;
		struct be_req q = { .op = BE_QUIT };
		bench_io(be->fd, &q, sizeof(q), true);
		close(be->fd);
		bench_wait(be->pid);
		be->pid = 0;
	}
}

/* 0 also where the backend is unavailable (r->unavailable says so). */
static int be_call(struct bench_backend *be, const struct be_req *q, struct be_rep *r)
{
	if (bench_io(be->fd, (void *)q, sizeof(*q), true) < 0 ||
	    bench_io(be->fd, r, sizeof(*r), false) < 0) {
		fprintf(stderr, "ucow bench: the %s backend's process died\n", be->name);
		return 1;
	}
	r->why[sizeof(r->why) - 1] = '\0';
	if (r->err && !r->unavailable) {
		fprintf(stderr, "ucow bench: %s backend: %s\n", be->name, r->why);
		return 1;
	}
	return 0;
}

int be_setup(struct bench *b, size_t size)
{
	for (unsigned k = 0; k < BENCH_BACKENDS; k++) {
		struct bench_backend *be = &b->backend[k];
		struct be_req q = { .op = BE_SETUP, .size = size, .seed = b->seed };
		struct be_rep r;
		if (be->pid <= 0 || be_call(be, &q, &r))
			return 1;
		be->available = !r.unavailable;
		snprintf(be->why, sizeof(be->why), "%s", r.unavailable ? r.why : "");
	}
	return 0;
}

int be_round(struct bench *b, unsigned k, bool random, double *secs,
	     struct bench_counters *c)
{
	struct bench_backend *be = &b->backend[k];
	struct be_req q = { .op = BE_ROUND, .random = random };
	struct be_rep r;
	if (be_call(be, &q, &r))
		return 1;
	*secs = r.secs;
	*c = r.c;
	return 0;
}
