/*
 * Deterministic pseudo-random numbers for the model tests: splitmix64 turns
 * a seed into a state, xoshiro256** draws from it. The same seed gives the
 * same numbers on every machine, so a printed seed reproduces a run.
 */
#ifndef UCOW_TEST_RNG_H
#define UCOW_TEST_RNG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t splitmix64(uint64_t *state)
{
	uint64_t x = (*state += 0x9e3779b97f4a7c15ull);
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

struct rng {
	uint64_t s[4];
};

static inline void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rng_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rng_rotl(s[3], 45);
	return result;
}

/* Fills buf with len bytes that depend on seed alone. */
static inline void rng_fill(void *buf, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	while (len) {
		uint64_t w = splitmix64(&seed);
		size_t n = len < sizeof w ? len : sizeof w;
		memcpy(p, &w, n);
		p += n;
		len -= n;
	}
}

#endif
