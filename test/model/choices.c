/* The byte stream behind the model's decisions (see choices.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "choices.h"

void choices_seeded(struct choices *c, uint64_t seed)
{
	memset(c, 0, sizeof *c);
	rng_seed(&c->rng, seed);
}

void choices_input(struct choices *c, const void *data, size_t len)
{
	memset(c, 0, sizeof *c);
	c->input = data;
	c->input_len = len;
}

void choices_start_recording(struct choices *c)
{
	c->record_len = 0;
	c->record_failed = false;
	if (!c->record_cap) {
		c->record_cap = 4096;
		c->record = malloc(c->record_cap);
		c->record_failed = !c->record;
	}
}

void choices_free(struct choices *c)
{
	free(c->record);
	c->record = NULL;
	c->record_cap = c->record_len = 0;
}

static void record_byte(struct choices *c, unsigned char b)
{
	if (!c->record_cap || c->record_failed)
		return;
	if (c->record_len == c->record_cap) {
		unsigned char *p = realloc(c->record, c->record_cap * 2);
		if (!p) {
			c->record_failed = true;
			return;
		}
		c->record = p;
		c->record_cap *= 2;
	}
	c->record[c->record_len++] = b;
}

static unsigned bytes_for(uint64_t max)
{
	unsigned k = 1;
	while (k < 8 && (max >> (8 * k)))
		k++;
	return k;
}

/* k bytes, little-endian: the seeded stream takes them from one draw. */
static uint64_t take_bytes(struct choices *c, unsigned k)
{
	uint64_t drawn = c->input ? 0 : rng_next(&c->rng), v = 0;
	for (unsigned i = 0; i < k; i++) {
		unsigned char b = (unsigned char)(drawn >> (8 * i));
		if (c->input) {
			c->exhausted |= c->pos >= c->input_len;
			b = c->exhausted ? 0 : c->input[c->pos++];
		}
		record_byte(c, b);
		v |= (uint64_t)b << (8 * i);
	}
	return v;
}

uint64_t choose(struct choices *c, uint64_t n)
{
	if (n <= 1)
		return 0;
	return take_bytes(c, bytes_for(n - 1)) % n;
}

bool chance(struct choices *c, unsigned percent)
{
	return choose(c, 100) < percent;
}

bool choices_done(const struct choices *c)
{
	return c->input && (c->exhausted || c->pos >= c->input_len);
}
