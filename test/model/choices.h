/*
 * Where the model's decisions come from: a stream of bytes, drawn from a
 * seeded generator (make check, make soak) or read from a fuzz input. Both
 * are decoded the same way, so the bytes a seeded run consumed, once
 * recorded, are a fuzz input that replays that run exactly.
 */
#ifndef UCOW_TEST_CHOICES_H
#define UCOW_TEST_CHOICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

struct choices {
	const unsigned char *input; /* NULL: seeded */
	size_t input_len, pos;
	struct rng rng;
	bool exhausted;             /* an input ran out */
	unsigned char *record;      /* bytes consumed, if recording */
	size_t record_len, record_cap;
	bool record_failed;
};

void choices_seeded(struct choices *c, uint64_t seed);
void choices_input(struct choices *c, const void *data, size_t len);
/* From now on keep every byte consumed in c->record (freed by choices_free). */
void choices_start_recording(struct choices *c);
void choices_free(struct choices *c);

/*
 * A number in [0, n), from as few bytes as n needs; n <= 1 consumes nothing.
 * Past the end of an input it is 0 and choices_done() becomes true.
 */
uint64_t choose(struct choices *c, uint64_t n);
/* True with about `percent` % probability. */
bool chance(struct choices *c, unsigned percent);
/* Whether an input has been used up (never, for a seeded stream). */
bool choices_done(const struct choices *c);

#endif
