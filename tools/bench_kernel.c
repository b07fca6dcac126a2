/*
 * ucow bench, the kernel side: a helper process that holds a plain private
 * anonymous heap and forks on request. It is forked from `ucow bench` before
 * the first call into ucow, so that neither its fork()s nor its children pay
 * for ucow: no fork handlers registered, no region mappings to copy.
 *
 * The protocol, here and in bench_backend.c's helpers, is one fixed-size
 * request and one reply at a time over a socketpair (both ends are this same
 * binary).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

enum kern_op { K_ALLOC, K_FREE, K_FORK, K_WRITE, K_FORK_COW, K_FORK_SERVER, K_QUIT };

struct kern_req {
	int op;
	bool random;
	unsigned nthreads;
	size_t size, count;
	uint64_t seed;
};

struct kern_rep {
	int err;        /* errno, 0 on success */
	double secs;
};

struct heap {
	char *base;
	size_t size, pages, page;
};

int bench_io(int fd, void *buf, size_t len, bool out)
{
	char *p = buf;
	while (len) {
		ssize_t n = out ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- the helper process ---- */

static void heap_free(struct heap *h)
{
	if (h->base)
		munmap(h->base, h->size);
	h->base = NULL;
	h->size = h->pages = 0;
}

static int heap_alloc(struct heap *h, size_t size)
{
	heap_free(h);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return errno;
	h->base = p;
	h->size = size;
	h->pages = size / h->page;
	bench_touch(h->base, h->page, NULL, h->pages);
	return 0;
}

int bench_wait(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : ECHILD;
}

static int serve_fork_time(double *secs)
{
	double t0 = cli_now();
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	*secs = cli_now() - t0;
	return pid < 0 ? errno : bench_wait(pid);
}

static int serve_write(struct heap *h, size_t count, uint64_t seed)
{
	size_t *pages = bench_sample(h->pages, count, seed);
	if (!pages)
		return ENOMEM;
	bench_touch(h->base, h->page, pages, count);
	free(pages);
	return 0;
}

/* The child writes every page of the heap and reports its own time. */
static int serve_fork_cow(struct heap *h, const struct kern_req *q, double *secs)
{
	size_t *order = q->random ? bench_permutation(h->pages, q->seed) : NULL;
	int fd[2];
	if ((q->random && !order) || pipe2(fd, O_CLOEXEC) < 0) {
		free(order);
		return ENOMEM;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(fd[0]);
		double t = bench_touch_threads(h->base, h->page, h->pages, order, q->nthreads);
		_exit(write(fd[1], &t, sizeof(t)) == sizeof(t) && t >= 0 ? 0 : 1);
	}
	close(fd[1]);
	int err = pid < 0 ? errno : 0;
	if (!err && read(fd[0], secs, sizeof(*secs)) != sizeof(*secs))
		err = EIO;
	close(fd[0]);
	if (pid > 0 && bench_wait(pid) && !err)
		err = ECHILD;
	free(order);
	return err;
}

/* A fuzzing fork server's reset: the whole life of a child that writes 1%. */
static int serve_fork_server(struct heap *h, size_t count, uint64_t seed, double *secs)
{
	size_t *pages = bench_sample(h->pages, count, seed);
	if (!pages)
		return ENOMEM;
	double t0 = cli_now();
	pid_t pid = fork();
	if (pid == 0) {
		bench_touch(h->base, h->page, pages, count);
		_exit(0);
	}
	int err = pid < 0 ? errno : bench_wait(pid);
	*secs = cli_now() - t0;
	free(pages);
	return err;
}

static int serve(struct heap *h, const struct kern_req *q, double *secs)
{
	switch (q->op) {
	case K_ALLOC:
		return heap_alloc(h, q->size);
	case K_FREE:
		heap_free(h);
		return 0;
	case K_FORK:
		return serve_fork_time(secs);
	case K_WRITE:
		return serve_write(h, q->count, q->seed);
	case K_FORK_COW:
		return serve_fork_cow(h, q, secs);
	case K_FORK_SERVER:
		return serve_fork_server(h, q->count, q->seed, secs);
	default:
		return EINVAL;
	}
}

static void helper_main(int fd, void *page)
{
	struct heap h = { .page = *(const size_t *)page };
	struct kern_req q;
	while (bench_io(fd, &q, sizeof(q), false) == 0 && q.op != K_QUIT) {
		struct kern_rep r = { 0, 0.0 };
		r.err = serve(&h, &q, &r.secs);
		if (bench_io(fd, &r, sizeof(r), true) < 0)
			break;
	}
	_exit(0);
}

/* ---- the bench side ---- */

/* The ends the parent holds of the helpers started before this one. */
static void close_inherited(const struct bench *b)
{
	if (b->helper > 0)
		close(b->to_helper);
	for (unsigned k = 0; k < BENCH_BACKENDS; k++)
		if (b->backend[k].pid > 0)
			close(b->backend[k].fd);
}

int bench_spawn(struct bench *b, void (*serve)(int fd, void *arg), void *arg,
		pid_t *pid, int *fd)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("ucow bench: socketpair");
		return 1;
	}
	fflush(NULL);
	pid_t child = fork();
	if (child < 0) {
		perror("ucow bench: fork");
		close(sv[0]);
		close(sv[1]);
		return 1;
	}
	if (child == 0) {
		close(sv[0]);
		close_inherited(b);
		serve(sv[1], arg);
		_exit(0);
	}
	close(sv[1]);
	*pid = child;
	*fd = sv[0];
	return 0;
}

int kern_start(struct bench *b)
{
	return bench_spawn(b, helper_main, &b->page, &b->helper, &b->to_helper);
}

void kern_stop(struct bench *b)
{
	if (b->helper <= 0)
		return;
	struct kern_req q = { .op = K_QUIT };
	bench_io(b->to_helper, &q, sizeof(q), true);
	close(b->to_helper);
	bench_wait(b->helper);
	b->helper = 0;
}

static int kern_call(struct bench *b, const struct kern_req *q, double *secs)
{
	struct kern_rep r;
	if (bench_io(b->to_helper, (void *)q, sizeof(*q), true) < 0 ||
	    bench_io(b->to_helper, &r, sizeof(r), false) < 0) {
		fprintf(stderr, "ucow bench: the fork() helper process died "
				"(out of memory?)\n");
		return 1;
	}
	if (r.err) {
		fprintf(stderr, "ucow bench: fork() helper: %s\n", strerror(r.err));
		return 1;
	}
	if (secs)
		*secs = r.secs;
	return 0;
}

int kern_alloc(struct bench *b, size_t size)
{
	struct kern_req q = { .op = K_ALLOC, .size = size };
	return kern_call(b, &q, NULL);
}

int kern_free(struct bench *b)
{
	struct kern_req q = { .op = K_FREE };
	return kern_call(b, &q, NULL);
}

int kern_fork(struct bench *b, double *secs)
{
	struct kern_req q = { .op = K_FORK };
	return kern_call(b, &q, secs);
}

int kern_write(struct bench *b, size_t count, uint64_t seed)
{
	struct kern_req q = { .op = K_WRITE, .count = count, .seed = seed };
	return kern_call(b, &q, NULL);
}

int kern_fork_cow(struct bench *b, bool random, unsigned nthreads, uint64_t seed,
		  double *secs)
{
	struct kern_req q = { .op = K_FORK_COW, .random = random, .nthreads = nthreads,
			      .seed = seed };
	return kern_call(b, &q, secs);
}

int kern_fork_server(struct bench *b, size_t count, uint64_t seed, double *secs)
{
	struct kern_req q = { .op = K_FORK_SERVER, .count = count, .seed = seed };
	return kern_call(b, &q, secs);
}
