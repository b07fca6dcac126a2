/*
 * cgroup CPU limits (lib/cpus.c), read from a made-up cgroup file system:
 * the uffd handler spins after a burst of faults only when the process may
 * use two CPUs' worth of time.
 */
#include "internal.h" /* first: it sets _GNU_SOURCE */

#include <CUnit/CUnit.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

struct fake {
	char dir[64];           /* the fake machine's files live here */
	char mountinfo[PATH_MAX];
	char cgroup[PATH_MAX];
};

/* Writes the text to dir/name, creating the directories on the way. */
static void put(const struct fake *f, const char *name, const char *fmt, ...)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", f->dir, name);
	for (char *p = path + strlen(f->dir) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(path, 0700);
		*p = '/';
	}
	FILE *out = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fclose(out);
}

static void fake_init(struct fake *f)
{
	snprintf(f->dir, sizeof f->dir, "/tmp/ucow-test-cpus-XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(f->dir));
	snprintf(f->mountinfo, sizeof f->mountinfo, "%s/mountinfo", f->dir);
	snprintf(f->cgroup, sizeof f->cgroup, "%s/cgroup", f->dir);
}

static void fake_free(struct fake *f)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	CU_ASSERT_EQUAL(system(cmd), 0);
}

static unsigned limit(const struct fake *f)
{
	return cgroup_cpu_limit(f->mountinfo, f->cgroup);
}

static void test_v2_limit_of_a_parent_cgroup_counts(void)
{
	struct fake f;
	fake_init(&f);
	put(&f, "mountinfo",
	    "22 1 0:20 / /proc rw - proc proc rw\n"
	    "30 25 0:26 / %s/cg rw,nosuid shared:9 - cgroup2 cgroup2 rw\n",
	    f.dir);
	put(&f, "cgroup", "0::/app/worker\n");
	put(&f, "cg/cpu.max", "max 100000\n");
	put(&f, "cg/app/cpu.max", "150000 100000\n");
	put(&f, "cg/app/worker/cpu.max", "max 100000\n");
	CU_ASSERT_EQUAL(limit(&f), 1);
	put(&f, "cg/app/cpu.max", "400000 100000\n");
	put(&f, "cg/app/worker/cpu.max", "250000 100000\n");
	CU_ASSERT_EQUAL(limit(&f), 2);
	fake_free(&f);
}

static void test_v2_without_a_limit_is_none(void)
{
	struct fake f;
	fake_init(&f);
	put(&f, "mountinfo", "30 25 0:26 / %s/cg rw - cgroup2 cgroup2 rw\n",
	    f.dir);
	put(&f, "cgroup", "0::/app\n");
	put(&f, "cg/app/cpu.max", "max 100000\n");
	CU_ASSERT_EQUAL(limit(&f), 0);
	fake_free(&f);
}

static void test_less_than_one_cpu_is_one(void)
{
	struct fake f;
	fake_init(&f);
	put(&f, "mountinfo", "30 25 0:26 / %s/cg rw - cgroup2 cgroup2 rw\n",
	    f.dir);
	put(&f, "cgroup", "0::/\n");
	put(&f, "cg/cpu.max", "20000 100000\n");
	CU_ASSERT_EQUAL(limit(&f), 1);
	fake_free(&f);
}

static void test_v1_cpu_controller_quota(void)
{
	struct fake f;
	fake_init(&f);
	put(&f, "mountinfo",
	    "40 30 0:33 / %s/memory rw - cgroup cgroup rw,memory\n"
	    "41 30 0:34 / %s/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
	    f.dir, f.dir);
	put(&f, "cgroup", "4:memory:/job\n3:cpu,cpuacct:/job\n0::/\n");
	put(&f, "memory/job/cpu.cfs_quota_us", "50000\n");
	put(&f, "memory/job/cpu.cfs_period_us", "100000\n");
	put(&f, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
	put(&f, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	put(&f, "cpu,cpuacct/job/cpu.cfs_quota_us", "300000\n");
	put(&f, "cpu,cpuacct/job/cpu.cfs_period_us", "100000\n");
	CU_ASSERT_EQUAL(limit(&f), 3);
	put(&f, "cpu,cpuacct/job/cpu.cfs_quota_us", "-1\n");
	CU_ASSERT_EQUAL(limit(&f), 0);
	fake_free(&f);
}

/* Inside a container the mount shows the container's own cgroup as root. */
static void test_container_sees_its_cgroup_as_the_mount_root(void)
{
	struct fake f;
	fake_init(&f);
	put(&f, "mountinfo",
	    "50 40 0:26 /docker/abc %s/cg ro - cgroup2 cgroup2 rw\n", f.dir);
	put(&f, "cgroup", "0::/docker/abc\n");
	put(&f, "cg/cpu.max", "100000 100000\n");
	CU_ASSERT_EQUAL(limit(&f), 1);
	fake_free(&f);
}

/* A mount that shows another part of the hierarchy says nothing of ours. */
static void test_mount_of_another_cgroup_is_ignored(void)
{
	struct fake f;
	fake_init(&f);
	put(&f, "mountinfo",
	    "50 40 0:26 /a/b %s/cg rw - cgroup2 cgroup2 rw\n"
	    "51 40 0:26 /docker/abc %s/cg2 rw - cgroup2 cgroup2 rw\n",
	    f.dir, f.dir);
	put(&f, "cgroup", "0::/docker/abcd/x\n");
	put(&f, "cg/cpu.max", "50000 100000\n");
	put(&f, "cg2/cpu.max", "50000 100000\n");
	put(&f, "cg2d/x/cpu.max", "50000 100000\n");
	CU_ASSERT_EQUAL(limit(&f), 0);
	fake_free(&f);
}

/* mountinfo writes a space in a path as \040. */
static void test_escaped_mount_point(void)
{
	struct fake f;
	fake_init(&f);
	put(&f, "mountinfo",
	    "30 25 0:26 / %s/c\\040g rw - cgroup2 cgroup2 rw\n", f.dir);
	put(&f, "cgroup", "0::/app\n");
	put(&f, "c g/app/cpu.max", "100000 100000\n");
	CU_ASSERT_EQUAL(limit(&f), 1);
	fake_free(&f);
}

static void test_missing_or_garbled_files_are_no_limit(void)
{
	struct fake f;
	fake_init(&f);
	CU_ASSERT_EQUAL(limit(&f), 0);
	put(&f, "cgroup", "0::/app\n");
	CU_ASSERT_EQUAL(limit(&f), 0);
	put(&f, "mountinfo", "30 25 0:26\n- cgroup2\n30 - x y\n\n");
	CU_ASSERT_EQUAL(limit(&f), 0);
	put(&f, "mountinfo", "30 25 0:26 / %s/cg rw - cgroup2 cgroup2 rw\n",
	    f.dir);
	put(&f, "cg/app/cpu.max", "lots\n");
	CU_ASSERT_EQUAL(limit(&f), 0);
	put(&f, "cg/app/cpu.max", "100000 0\n");
	CU_ASSERT_EQUAL(limit(&f), 0);
	fake_free(&f);
}

/* This process: never more than the CPUs it may run on, never zero. */
static void test_usable_cpus_are_within_the_affinity(void)
{
	unsigned n = cpus_usable();
	CU_ASSERT(n >= 1);
	CU_ASSERT(n <= (unsigned)sysconf(_SC_NPROCESSORS_CONF));
}

void add_cpus_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_v2_limit_of_a_parent_cgroup_counts),
		TEST(test_v2_without_a_limit_is_none),
		TEST(test_less_than_one_cpu_is_one),
		TEST(test_v1_cpu_controller_quota),
		TEST(test_container_sees_its_cgroup_as_the_mount_root),
		TEST(test_mount_of_another_cgroup_is_ignored),
		TEST(test_escaped_mount_point),
		TEST(test_missing_or_garbled_files_are_no_limit),
		TEST(test_usable_cpus_are_within_the_affinity),
		{NULL, NULL},
	};
	add_suite("cpus", tests);
}
