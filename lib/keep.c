/*
 * The writer keeps its frame: a page that a writable region shares only with
 * snapshots of itself stays the region's, made writable where it is, and the
 * snapshots take one copy. The kernel has no such case, since its copies may
 * go anywhere; ours land at memfd offsets, and a region whose written pages
 * moved to a new home after every snapshot would lie, after a few rounds, in
 * many homes, one mapping each, which every later snapshot maps and counts
 * again. Kept, they stay where they were first written: one mapping, which a
 * snapshot maps with one call. It costs a call more per fault (the
 * snapshots' pages are remapped, the writer's made writable) and more
 * mapping splits (vma_keep_fits).
 *
 * The snapshots are found through the region's chain: r->snap, its latest,
 * then each one's prev_snap, the next older. The chain is kept under the
 * global lock (a destroyed snapshot is unlinked, so the older ones stay in
 * reach), and read here without it: a slot read a moment before its
 * snapshot was destroyed may hold another region by now. So a member is
 * used only if it is live and not held, a snapshot of the same size with a
 * home, and its page maps the frame; the frame is kept only if the members
 * found are all its other users. Any such read-only region can take the
 * copy: its bytes are the same. Async-signal-safe, as memory.c.
 */
#include "internal.h"

void chain_add(ucow_region *src, ucow_region *snap)
{
	ucow_region *newest = src->snap;
	STORE(&snap->prev_snap, newest);
	snap->source = src;
	if (newest)
		newest->next_snap = snap;
	STORE(&src->snap, snap);
}

void chain_remove(ucow_region *snap)
{
	ucow_region *older = snap->prev_snap, *newer = snap->next_snap;
	if (newer)
		STORE(&newer->prev_snap, older);
	else if (snap->source)
		STORE(&snap->source->snap, older);
	if (older)
		older->next_snap = newer;
	STORE(&snap->prev_snap, NULL);
	snap->next_snap = snap->source = NULL;
}

void chain_detach(ucow_region *src)
{
	for (ucow_region *s = src->snap; s; s = s->prev_snap)
		s->source = NULL;
	STORE(&src->snap, NULL);
}

/* Snapshots of a chain that one fault looks at. */
#define KEEP_CHAIN 4

struct keepers {
	ucow_region *s[KEEP_CHAIN]; /* newest first; s[0]'s home gets the copy */
	unsigned n;
};

/*
 * A fault reference on s, if it can take copies now: live and not held (a
 * fault never waits for a holder while it holds ptes of its own: a revert
 * holds two regions), a snapshot of r's size with a home.
 */
static bool keeper_enter(const ucow_region *r, ucow_region *s)
{
	if (!region_fault_tryenter(s))
		return false;
	if (s->readonly && s->npages == r->npages && s->home)
		return true;
	region_fault_exit(s);
	return false;
}

/*
 * Locks page i of s if it maps f. Not when f is s's own copy: a copy that
 * went to s's home + i could not go there again (internal.h, "homes").
 */
static bool keeper_lock(ucow_region *s, size_t i, frame_t f)
{
	pte_t p;
	if (home_frame(s, i) == f || !pte_trylock(&s->pt, i, &p))
		return false;
	if (pte_frame(p) == f)
		return true;
	pte_unlock(&s->pt, i, p);
	return false;
}

/* Unlocks the keepers' pages [i, i + n) and drops their fault references. */
static void keepers_release(struct keepers *k, size_t i, size_t n)
{
	for (unsigned j = 0; j < k->n; j++) {
		for (size_t m = i; m < i + n; m++)
			pte_unlock(&k->s[j]->pt, m, pte_read(&k->s[j]->pt, m));
		region_fault_exit(k->s[j]);
	}
	k->n = 0;
}

/*
 * The snapshots of r's chain whose page i maps f, each with a fault
 * reference and page i locked: true if they are all of f's users but r.
 * r's pte is locked and every user found is held by us, so no copy or
 * revert can add one meanwhile. A region reached twice (a slot reused in
 * the chain) is counted once: the pte lock is not re-entrant, so its
 * second trylock fails.
 */
static bool keepers_find(const ucow_region *r, size_t i, frame_t f,
			 struct keepers *k)
{
	uint32_t users = frame_count(f);
	ucow_region *s = LOAD(&r->snap);
	k->n = 0;
	for (unsigned hop = 0; s && hop < KEEP_CHAIN && k->n + 1 < users; hop++) {
		if (!keeper_enter(r, s))
			break;
		ucow_region *prev = LOAD(&s->prev_snap);
		if (keeper_lock(s, i, f))
			k->s[k->n++] = s;
		else
			region_fault_exit(s);
		s = prev;
	}
	if (k->n && frame_count(f) == k->n + 1)
		return true;
	keepers_release(k, i, 1);
	return false;
}

/* Fault-around: page j joins if the same snapshots, and only they, share
 * its frame at page j (their page j is then locked). */
static bool keepers_join(void *ctx, size_t j, pte_t pte)
{
	struct keepers *k = ctx;
	frame_t g = pte_frame(pte);
	unsigned locked = 0;
	if ((pte & PTE_WRITE) || g == FRAME_NONE)
		return false;
	while (locked < k->n && keeper_lock(k->s[locked], j, g))
		locked++;
	if (locked == k->n && frame_count(g) == k->n + 1)
		return true;
	for (unsigned m = 0; m < locked; m++)
		pte_unlock(&k->s[m]->pt, j, pte_read(&k->s[m]->pt, j));
	return false;
}

/* Keepers [0, upto) map the copies: their ptes say so, and each drops its
 * reference to r's frames (the copies have one reference per keeper). */
static void keep_commit(ucow_region *r, struct keepers *k, unsigned upto,
			size_t i, size_t n, const long *before)
{
	frame_t copy = home_frame(k->s[0], i);
	for (size_t m = 0; m < n; m++) {
		frame_t f = pte_frame(pte_read(&r->pt, i + m));
		for (unsigned j = 0; j < upto; j++) {
			if (j)
				frame_get(copy + (frame_t)m);
			pte_update_locked(&k->s[j]->pt, i + m, copy + (frame_t)m);
			frame_put(f);
		}
	}
	for (unsigned j = 0; j < upto; j++)
		vma_account(k->s[j], vma_window(k->s[j], i, i + n) - before[j]);
}

/*
 * Copies pages [i, i + n) of r into the newest snapshot's home, maps the
 * copies in every snapshot that shares them, and only then drops the
 * snapshots' references to r's frames (wp_page_copy's order). All ptes
 * concerned are locked. If a snapshot cannot map the copies, those that
 * did keep them and the others keep sharing r's frames: r's pages stay
 * read-only, and the fault fails (the table is true either way).
 */
static int wp_page_keep(ucow_region *r, struct keepers *k, size_t i, size_t n)
{
	long before[KEEP_CHAIN];
	for (unsigned j = 0; j < k->n; j++)
		before[j] = vma_window_held(k->s[j], i, i + n);
	int err = copy_and_map(k->s[0], i, n, home_frame(k->s[0], i),
			       page_addr(r, i), false);
	if (err)
		return err;
	unsigned mapped = 1;
	while (mapped < k->n &&
	       !(err = region_map_pages(k->s[mapped], i, n,
					home_frame(k->s[0], i), false)))
		mapped++;
	keep_commit(r, k, mapped, i, n, before);
	if (err)
		return err;
	COUNT(&r->cow_kept);
	if (n > 1)
		ADD(&r->fault_around, n - 1);
	return 0;
}

int do_wp_page_keep(ucow_region *r, size_t i, pte_t pte, bool around)
{
	struct keepers k;
	/* Near the budget, not even one snapshot would fit: skip the search. */
	if (!vma_keep_fits(1) || !keepers_find(r, i, pte_frame(pte), &k))
		return 1;
	if (!vma_keep_fits(k.n)) {
		keepers_release(&k, i, 1);
		return 1;
	}
	size_t n = around ? fault_around_lock(r, i, k.s[0], keepers_join, &k) : 1;
	long before = vma_window_held(r, i, i + n);
	int err = wp_page_keep(r, &k, i, n);
	/*
	 * Once kept, the frames are r's alone and the table says writable even
	 * if the kernel does not agree: a write then makes the page writable
	 * again (do_wp_page), and the next snapshot write-protects it.
	 */
	int mkwrite = err ? 0 : region_make_writable(r, i, n);
	keepers_release(&k, i, n);
	err = fault_finish(r, i, n, false, before, err);
	return err ? err : mkwrite;
}
