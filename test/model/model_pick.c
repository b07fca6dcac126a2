/* Which regions an operation of the model works on. */
#include "model_internal.h"

/* The k-th slot (in slot order) for which keep() holds, NULL if none. */
static struct slot *nth(struct model *m, bool (*keep)(const struct slot *,
						      const void *),
			const void *arg)
{
	unsigned n = 0;
	for (unsigned i = 0; i < MODEL_SLOTS; i++)
		n += keep(&m->slot[i], arg);
	if (!n)
		return NULL;
	unsigned k = (unsigned)choose(m->ch, n);
	for (unsigned i = 0; i < MODEL_SLOTS; i++)
		if (keep(&m->slot[i], arg) && k-- == 0)
			return &m->slot[i];
	return NULL;
}

static bool is_live(const struct slot *s, const void *unused)
{
	(void)unused;
	return s->r != NULL;
}

static bool is_writable(const struct slot *s, const void *unused)
{
	(void)unused;
	return s->r && !s->snapshot;
}

static bool is_free(const struct slot *s, const void *unused)
{
	(void)unused;
	return !s->r;
}

static bool has_size(const struct slot *s, const void *size)
{
	return s->r && s->size == *(const size_t *)size;
}

struct slot *pick_live(struct model *m)
{
	return nth(m, is_live, NULL);
}

struct slot *pick_writable(struct model *m)
{
	return nth(m, is_writable, NULL);
}

struct slot *pick_free(struct model *m)
{
	/* The first free slot: the choice would only spend input bytes. */
	for (unsigned i = 0; i < MODEL_SLOTS; i++)
		if (is_free(&m->slot[i], NULL))
			return &m->slot[i];
	return NULL;
}

struct slot *pick_partner(struct model *m, const struct slot *other)
{
	if (chance(m->ch, 85))
		return nth(m, has_size, &other->size);
	return pick_live(m);
}
