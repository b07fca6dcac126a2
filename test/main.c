/*
 * Runs the ucow CUnit suites.
 *
 *   test-ucow                            every suite
 *   test-ucow SUITE                      one suite, by name (for debugging)
 *   test-ucow --child-scenario NAME      internal: a scenario that needs a
 *                                        process where ucow was never used
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "helpers.h"

static int run_child_scenario(const char *name)
{
	const struct child_scenario *lists[] = {signal_scenarios,
						backend_scenarios,
						failure_scenarios,
						lifecycle_scenarios,
						scale_scenarios};
	for (size_t l = 0; l < sizeof lists / sizeof *lists; l++)
		for (const struct child_scenario *s = lists[l]; s->name; s++)
			if (strcmp(s->name, name) == 0)
				return s->run();
	fprintf(stderr, "unknown child scenario: %s\n", name);
	return 2;
}

int main(int argc, char **argv)
{
	/* Before anything else: the scenario must be the first use of ucow. */
	if (argc == 3 && strcmp(argv[1], "--child-scenario") == 0)
		return run_child_scenario(argv[2]);

	/* Each test's name reaches the log as it starts, even through a pipe:
	 * a run killed by a timeout then shows the test it was in. */
	setvbuf(stdout, NULL, _IONBF, 0);

	const char *backend = ucow_backend();
	printf("ucow backend: %s\n", backend ? backend : "(none: bad UCOW_BACKEND)");

	if (CU_initialize_registry() != CUE_SUCCESS) {
		fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
		return 2;
	}
	add_api_suite();
	add_cow_suite();
	add_snapshot_suite();
	add_threads_suite();
	add_cancel_suite();
	add_signals_suite();
	add_fork_suite();
	add_diff_suite();
	add_uffd_suite();
	add_model_suite();
	add_failure_suite();
	add_scale_suite();
	add_cpus_suite();
	add_lifecycle_suite();

	CU_basic_set_mode(CU_BRM_VERBOSE);
	if (argc == 2) {
		CU_pSuite suite = CU_get_suite(argv[1]);
		if (!suite) {
			fprintf(stderr, "no suite named %s; suites:", argv[1]);
			for (CU_pSuite s = CU_get_registry()->pSuite; s; s = s->pNext)
				fprintf(stderr, " %s", s->pName);
			fprintf(stderr, "\n");
			CU_cleanup_registry();
			return 2;
		}
		CU_basic_run_suite(suite);
	} else {
		CU_basic_run_tests();
	}

	unsigned failed = CU_get_number_of_failures() +
			  CU_get_number_of_tests_failed() +
			  CU_get_number_of_suites_failed();
	CU_ErrorCode err = CU_get_error();
	CU_cleanup_registry();
	return failed || err != CUE_SUCCESS ? 1 : 0;
}
