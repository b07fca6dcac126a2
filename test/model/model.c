/*
 * The single-threaded model: its run loop, its start and end, and how a
 * failure is reported.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"

void model_note(struct model *m, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *line = m->history[m->op % MODEL_HISTORY];
	int n = snprintf(line, MODEL_NOTE, "op %lu: ", m->op);
	vsnprintf(line + n, MODEL_NOTE - (size_t)n, fmt, ap);
	va_end(ap);
	if (m->trace)
		fprintf(stderr, "ucow model: %s\n", line);
}

static void print_history(const struct model *m)
{
	fprintf(stderr, "ucow model: the last operations, oldest first:\n");
	unsigned long first = m->op >= MODEL_HISTORY ? m->op - MODEL_HISTORY + 1 : 0;
	for (unsigned long i = first; i <= m->op; i++)
		if (m->history[i % MODEL_HISTORY][0])
			fprintf(stderr, "  %s\n", m->history[i % MODEL_HISTORY]);
}

void model_fail(const struct model *m, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ucow model: FAILED at op %lu (backend %s): ", m->op,
		ucow_backend() ? ucow_backend() : "?");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	print_history(m);
	fprintf(stderr, "ucow model: seed %llu; reproduce: %s\n",
		(unsigned long long)m->cfg->seed, m->cfg->reproduce);
	fflush(stderr);
	abort();
}

static void model_init(struct model *m, const struct model_config *cfg,
		       struct choices *ch)
{
	memset(m, 0, sizeof *m);
	m->cfg = cfg;
	m->ch = ch;
	m->ps = ucow_page_size();
	m->trace = getenv("UCOW_MODEL_TRACE") != NULL;
	m->scratch = malloc(MODEL_SCRATCH_PAGES * m->ps);
	MCHECK(m, m->scratch != NULL);
	MCHECK(m, pipe(m->pipe) == 0);
	struct ucow_global_stats g;
	MCHECK(m, ucow_global_stats(&g) == 0);
	/* The counters are process-wide: nothing else may hold regions. */
	MCHECK(m, g.regions == 0 && g.frames == 0);
}

static void model_finish(struct model *m)
{
	model_note(m, "finish: check and destroy every region");
	check_all(m);
	for (unsigned i = 0; i < MODEL_SLOTS; i++)
		if (m->slot[i].r)
			check_stats(m, &m->slot[i]);
	check_global(m);
	for (unsigned i = 0; i < MODEL_SLOTS; i++)
		if (m->slot[i].r)
			model_destroy_slot(m, &m->slot[i]);
	struct ucow_global_stats g;
	MCHECK(m, ucow_global_stats(&g) == 0);
	MCHECK(m, g.regions == 0);
	MCHECK(m, g.frames == 0);
	free(m->scratch);
	close(m->pipe[0]);
	close(m->pipe[1]);
}

void model_run(const struct model_config *cfg, struct choices *ch)
{
	struct model m;
	model_init(&m, cfg, ch);
	for (; m.op < cfg->max_ops && !choices_done(ch); m.op++) {
		model_step(&m);
		if (m.op % MODEL_FULL_CHECK == MODEL_FULL_CHECK - 1)
			check_all(&m);
	}
	model_finish(&m);
}

void model_run_seed(uint64_t seed, unsigned long ops, const char *reproduce)
{
	struct model_config cfg = {seed, ops, reproduce};
	struct choices ch;
	choices_seeded(&ch, seed);
	model_run(&cfg, &ch);
	choices_free(&ch);
}

void model_run_input(const void *data, size_t len, const char *reproduce)
{
	struct model_config cfg = {0, MODEL_INPUT_OPS, reproduce};
	struct choices ch;
	choices_input(&ch, data, len);
	model_run(&cfg, &ch);
}
