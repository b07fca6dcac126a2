/*
 * Library initialisation and the choice of fault backend.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct backend *ucow_backend_ops;

static const struct backend *const backends[] = {&signal_backend};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_error;

static const struct backend *backend_by_name(const char *name)
{
	if (!name || !*name)
		return backends[0];
	for (size_t k = 0; k < sizeof backends / sizeof *backends; k++)
		if (strcmp(backends[k]->name, name) == 0)
			return backends[k];
	return NULL;
}

/* In a forked child, with the global lock held. */
static void atfork_child(void)
{
	region_atfork_child();
	frame_store_forget();
	if (ucow_backend_ops && ucow_backend_ops->atfork_child)
		ucow_backend_ops->atfork_child();
}

static void init(void)
{
	os_init();
	vma_init();
	const struct backend *b = backend_by_name(getenv("UCOW_BACKEND"));
	if (!b) {
		os_write_error("unknown UCOW_BACKEND", getenv("UCOW_BACKEND"), 0);
		init_error = -EINVAL;
		return;
	}
	if ((init_error = region_table_init()) != 0)
		return;
	ucow_backend_ops = b;
	ucow_atfork_init(atfork_child);
}

int ucow_init(void)
{
	pthread_once(&init_once, init);
	return init_error;
}

/*
 * The fault handler is installed by the first ucow_create(), not before, so
 * that a program's SIGSEGV handler installed until then is the one ucow
 * chains to. The frame store is made then too, and again in a forked child.
 */
int ucow_start(void)
{
	static bool backend_started;
	if (!backend_started) {
		int err = ucow_backend_ops->init();
		if (err)
			return err;
		backend_started = true;
	}
	return frames.memfd < 0 ? frame_store_init() : 0;
}

const char *ucow_backend(void)
{
	if (ucow_init() != 0) {
		errno = -init_error;
		return NULL;
	}
	return ucow_backend_ops->name;
}

size_t ucow_page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}
