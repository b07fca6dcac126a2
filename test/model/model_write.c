/* A write of the model: where it goes, and how its bytes are stored. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <unistd.h>

#include "model_internal.h"

void choose_run(struct choices *ch, size_t size, size_t ps, size_t *off,
		size_t *len)
{
	size_t pages = size / ps;
	switch (choose(ch, 4)) {
	case 0: /* a few bytes anywhere */
		*off = choose(ch, size);
		*len = 1 + choose(ch, 16);
		break;
	case 1: /* across a page boundary */
		if (pages > 1) {
			size_t boundary = (1 + choose(ch, pages - 1)) * ps;
			*off = boundary - 1 - choose(ch, 64);
			*len = 2 + choose(ch, 128);
		} else {
			*off = choose(ch, size);
			*len = 1 + choose(ch, 128);
		}
		break;
	case 2: /* up to four pages from anywhere */
		*off = choose(ch, size);
		*len = 1 + choose(ch, 4 * ps);
		break;
	default: { /* whole pages */
		size_t first = choose(ch, pages);
		*off = first * ps;
		*len = (1 + choose(ch, min_size(MODEL_MAX_WRITE_PAGES,
						  pages - first))) * ps;
	}
	}
	*len = min_size(*len, size - *off);
}

void store_ascending(void *dst, const void *src, size_t len)
{
	volatile unsigned char *d = dst;
	const unsigned char *s = src;
	for (size_t i = 0; i < len; i++)
		d[i] = s[i];
}

/* Backwards, so that faults never look sequential to ucow's fault-around. */
void store_descending(void *dst, const void *src, size_t len)
{
	volatile unsigned char *d = dst;
	const unsigned char *s = src;
	for (size_t i = len; i-- > 0;)
		d[i] = s[i];
}

/* A pipe holds 16 pages; a quarter of that never blocks the writer. */
enum { PIPE_CHUNK = 16384 };

static int read_fully(int fd, char *dst, size_t len)
{
	while (len) {
		ssize_t n = read(fd, dst, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		dst += n;
		len -= (size_t)n;
	}
	return 0;
}

int kernel_write(const int pipe[2], void *addr, const void *src, size_t len)
{
	for (size_t done = 0; done < len;) {
		size_t n = min_size(len - done, PIPE_CHUNK);
		if (write(pipe[1], (const char *)src + done, n) != (ssize_t)n)
			return -EIO;
		int err = read_fully(pipe[0], (char *)addr + done, n);
		if (err)
			return err;
		done += n;
	}
	return 0;
}
