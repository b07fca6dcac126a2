/*
 * How much CPU time the process may use at once. sched_getaffinity() says
 * on which CPUs it may run, but a container is often limited in CPU time
 * instead: its cgroup's cpu.max (cgroup v2) or CFS quota (v1) grants, say,
 * one CPU's worth per period over any number of CPUs. A thread that spins
 * while another works (the uffd handler, fault_uffd.c) then only brings the
 * throttle sooner, and a throttled process stops for the rest of the period.
 */
#include "internal.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CG_PATH_MAX 4096
#define CG_LINE_MAX 8192

/* Reads up to two numbers from the start of file dir/name: how many. */
static int read_longs(const char *dir, const char *name, long v[2])
{
	char path[CG_PATH_MAX], line[128];
	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
		return 0;
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	bool ok = fgets(line, sizeof line, f) != NULL;
	fclose(f);
	int n = ok ? sscanf(line, "%ld %ld", &v[0], &v[1]) : 0;
	return n > 0 ? n : 0;
}

/*
 * CPUs' worth of time one cgroup directory's own limit grants; 0: none.
 * v2's cpu.max is "QUOTA PERIOD" or "max PERIOD"; v1's quota is -1 for none.
 */
static unsigned dir_limit(const char *dir, bool v2)
{
	long quota[2] = {0}, period[2] = {0};
	bool ok = v2 ? read_longs(dir, "cpu.max", quota) == 2
		     : read_longs(dir, "cpu.cfs_quota_us", quota) &&
			       read_longs(dir, "cpu.cfs_period_us", period);
	if (v2)
		period[0] = quota[1];
	if (!ok || quota[0] <= 0 || period[0] <= 0)
		return 0;
	long cpus = quota[0] / period[0];
	return cpus < 1 ? 1 : cpus > INT_MAX ? INT_MAX : (unsigned)cpus;
}

/* The tightest limit from dir up to its mount point (top chars); 0: none. */
static unsigned walk_limit(char *dir, size_t top, bool v2)
{
	unsigned tightest = 0;
	for (;;) {
		unsigned l = dir_limit(dir, v2);
		if (l && (!tightest || l < tightest))
			tightest = l;
		char *slash = strrchr(dir, '/');
		if (strlen(dir) <= top || !slash || (size_t)(slash - dir) < top)
			return tightest;
		*slash = '\0';
	}
}

/* Whether the comma-separated list has the word. */
static bool list_has(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; p; p = strchr(p, ',')) {
		p += *p == ',';
		if (strncmp(p, word, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return true;
	}
	return false;
}

struct cg_paths {
	char v1[CG_PATH_MAX]; /* the cpu controller's (cgroup v1) */
	char v2[CG_PATH_MAX]; /* the unified hierarchy's */
	bool has_v1, has_v2;
};

/* The process's cgroup in each hierarchy, from /proc/self/cgroup's lines. */
static void read_cgroups(const char *file, struct cg_paths *p)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return;
	char line[CG_LINE_MAX];
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = '\0';
		char *ctl = strchr(line, ':');
		char *path = ctl ? strchr(ctl + 1, ':') : NULL;
		if (!path)
			continue;
		*ctl++ = '\0';
		*path++ = '\0';
		bool v2 = strcmp(line, "0") == 0 && !*ctl;
		if (!v2 && !list_has(ctl, "cpu"))
			continue;
		snprintf(v2 ? p->v2 : p->v1, CG_PATH_MAX, "%s", path);
		*(v2 ? &p->has_v2 : &p->has_v1) = true;
	}
	fclose(f);
}

/* Decodes mountinfo's octal escapes (a space is \040) in place. */
static char *unescape(char *s)
{
	char *out = s;
	for (const char *in = s; *in; out++) {
		if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' &&
		    in[2] >= '0' && in[2] <= '7' && in[3] >= '0' && in[3] <= '7') {
			*out = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 +
				      (in[3] - '0'));
			in += 4;
		} else {
			*out = *in++;
		}
	}
	*out = '\0';
	return s;
}

/*
 * The limit under one mountinfo line, if it mounts a hierarchy holding the
 * process's cgroup: "ID PARENT DEV ROOT MOUNTPOINT OPTS [TAGS] - TYPE SRC
 * SUPEROPTS". ROOT is the part of the hierarchy the mount shows (a
 * container sees its own cgroup as the root).
 */
static unsigned mount_limit(char *line, const struct cg_paths *p)
{
	char *field[5] = {0}, *save = NULL;
	char *tok = strtok_r(line, " \n", &save);
	for (int i = 0; i < 5 && tok; i++, tok = strtok_r(NULL, " \n", &save))
		field[i] = tok;
	while (tok && strcmp(tok, "-") != 0)
		tok = strtok_r(NULL, " \n", &save);
	char *type = strtok_r(NULL, " \n", &save);
	strtok_r(NULL, " \n", &save);
	char *opts = strtok_r(NULL, " \n", &save);
	if (!type || !opts)
		return 0;
	bool v2 = strcmp(type, "cgroup2") == 0 && p->has_v2;
	bool v1 = strcmp(type, "cgroup") == 0 && p->has_v1 &&
		  list_has(opts, "cpu");
	if (!v1 && !v2)
		return 0;
	const char *root = unescape(field[3]), *cg = v2 ? p->v2 : p->v1;
	unescape(field[4]);
	size_t rlen = strcmp(root, "/") == 0 ? 0 : strlen(root);
	const char *rel = cg + rlen;
	if (strncmp(cg, root, rlen) != 0 || (*rel != '/' && *rel != '\0'))
		return 0; /* the mount shows another part of the hierarchy */
	if (strcmp(rel, "/") == 0)
		rel = "";
	char dir[CG_PATH_MAX];
	if ((size_t)snprintf(dir, sizeof dir, "%s%s", field[4], rel) >= sizeof dir)
		return 0;
	return walk_limit(dir, strlen(field[4]), v2);
}

unsigned cgroup_cpu_limit(const char *mountinfo, const char *cgroup)
{
	struct cg_paths p = {0};
	read_cgroups(cgroup, &p);
	FILE *f = (p.has_v1 || p.has_v2) ? fopen(mountinfo, "re") : NULL;
	if (!f)
		return 0;
	unsigned tightest = 0;
	char line[CG_LINE_MAX];
	while (fgets(line, sizeof line, f)) {
		unsigned l = mount_limit(line, &p);
		if (l && (!tightest || l < tightest))
			tightest = l;
	}
	fclose(f);
	return tightest;
}

unsigned cpus_usable(void)
{
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof set, &set) == 0
			 ? CPU_COUNT(&set)
			 : sysconf(_SC_NPROCESSORS_ONLN);
	unsigned cpus = n > 0 ? (unsigned)n : 1;
	unsigned limit = cgroup_cpu_limit("/proc/self/mountinfo",
					  "/proc/self/cgroup");
	return limit && limit < cpus ? limit : cpus;
}
