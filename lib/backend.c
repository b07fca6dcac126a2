/*
 * Library initialisation and the choice of fault backend.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct backend *ucow_backend_ops;

static const struct backend *const backends[] = {&signal_backend, &uffd_backend};

static bool initialised; /* init() succeeded */

static const struct backend *backend_by_name(const char *name)
{
	if (!name || !*name)
		return backends[0];
	for (size_t k = 0; k < sizeof backends / sizeof *backends; k++)
		if (strcmp(backends[k]->name, name) == 0)
			return backends[k];
	return NULL;
}

static bool backend_started;

/* In a forked child, with the global lock held. */
static void atfork_child(void)
{
	if (!LOAD(&initialised))
		return;
	region_atfork_child();
	frame_store_forget();
	if (ucow_backend_ops && ucow_backend_ops->atfork_child) {
		ucow_backend_ops->atfork_child();
		backend_started = false;
	}
}

/* 0, or a negative errno and nothing done but os_init (which may run
 * again). */
static int init(void)
{
	os_init();
	int err = region_table_init();
	if (err)
		return err;
	vma_init();
	frame_failpoints_init(getenv("UCOW_FAILPOINT_FILL"));
	region_failpoints_init(getenv("UCOW_FAILPOINT_MAP"),
			       getenv("UCOW_FAILPOINT_WRITABLE"));
	/* An unknown name leaves no backend: ucow_create fails until
	 * ucow_set_backend() names a known one. */
	ucow_backend_ops = backend_by_name(getenv("UCOW_BACKEND"));
	return 0;
}

/*
 * Child fork handlers run in the order they were registered. Registered
 * when the library is loaded, ucow's runs before any that the program
 * registers in main(), even before its first ucow call: by the time the
 * program's own handler runs in the child, every region there is disowned
 * (PROT_NONE), and a write to one faults instead of changing the parent's
 * frames. Until ucow is initialised the handlers have nothing to do.
 */
__attribute__((constructor)) static void register_fork_handlers(void)
{
	ucow_atfork_init(atfork_child);
}

/*
 * Only success is remembered: a start that failed (its tables need a few
 * hundred MiB of address space, which RLIMIT_AS may refuse for a while) is
 * tried again by the next call. Under the global lock, so that fork() never
 * copies a start half done.
 */
int ucow_init(void)
{
	if (LOAD(&initialised))
		return 0;
	sigset_t mask;
	ucow_lock(&mask);
	int err = LOAD_RELAXED(&initialised) ? 0 : init();
	if (!err)
		STORE(&initialised, true);
	ucow_unlock(&mask);
	return err;
}

/*
 * The fault handler is installed by the first ucow_create(), not before, so
 * that a program's SIGSEGV handler installed until then is the one ucow
 * chains to. The frame store is made then too, and again in a forked child.
 */
int ucow_start(void)
{
	if (!ucow_backend_ops)
		return -EINVAL;
	if (!backend_started) {
		int err = ucow_backend_ops->init();
		if (err)
			return err;
		backend_started = true;
	}
	if (ucow_backend_ops->busy) {
		int err = ucow_backend_ops->busy();
		if (err)
			return err;
	}
	return frames.memfd < 0 ? frame_store_init() : 0;
}

/*
 * No region is left, so no fault can be running or start: the backend and
 * the frame store give back their descriptors (and the uffd handler
 * thread), the tables kept for reuse go, and ucow_start() makes new ones
 * for the next region.
 */
void ucow_idle(void)
{
	if (ucow_backend_ops && ucow_backend_ops->idle)
		ucow_backend_ops->idle();
	frame_store_idle();
	pgtable_cache_drop();
}

int ucow_set_backend(const char *name)
{
	int err = ucow_init();
	if (err)
		return err;
	/* backend_by_name takes "" for the default (an empty UCOW_BACKEND);
	 * as a name given here it names none. */
	const struct backend *b = name && *name ? backend_by_name(name) : NULL;
	if (!b)
		return -EINVAL;
	sigset_t mask;
	ucow_lock(&mask);
	if (backend_started && b != ucow_backend_ops) {
		err = -EBUSY;
	} else {
		ucow_backend_ops = b;
		err = 0;
	}
	ucow_unlock(&mask);
	return err;
}

const char *ucow_backend(void)
{
	int err = ucow_init();
	const struct backend *b = ucow_backend_ops;
	if (err || !b) {
		errno = err ? -err : EINVAL;
		return NULL;
	}
	return b->name;
}

size_t ucow_page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}
