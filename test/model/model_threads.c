/* The threaded model: writers and a checker, from start to teardown. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "model_threads.h"

void threads_fail(const struct threads_config *cfg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ucow threads model: FAILED (backend %s): ",
		ucow_backend() ? ucow_backend() : "?");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	fprintf(stderr, "ucow threads model: seed %llu; reproduce: %s\n",
		(unsigned long long)cfg->seed, cfg->reproduce);
	fflush(stderr);
	abort();
}

static void check_nothing_held(const struct threads_config *cfg)
{
	struct ucow_global_stats g;
	TCHECK(cfg, ucow_global_stats(&g) == 0);
	TCHECK(cfg, g.regions == 0);
	TCHECK(cfg, g.frames == 0);
}

void model_threads_run(const struct threads_config *cfg)
{
	TCHECK(cfg, cfg->writers >= 1 && cfg->writers <= MAX_WRITERS);
	check_nothing_held(cfg);
	struct writer w[MAX_WRITERS];
	struct replica rep[MAX_WRITERS];
	for (unsigned i = 0; i < cfg->writers; i++) {
		writer_setup(&w[i], i, cfg);
		replica_init(&rep[i], &w[i]);
	}
	for (unsigned i = 0; i < cfg->writers; i++)
		TCHECK(cfg, pthread_create(&w[i].thread, NULL, writer_main,
					   &w[i]) == 0);
	checker_run(w, rep, cfg->writers, cfg);
	for (unsigned i = 0; i < cfg->writers; i++) {
		TCHECK(cfg, pthread_join(w[i].thread, NULL) == 0);
		writer_verify(&w[i]);
		writer_teardown(&w[i]);
		replica_free(&rep[i]);
	}
	check_nothing_held(cfg);
}
