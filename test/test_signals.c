/*
 * Faults that are not ucow's reach the program.
 *
 * ucow installs its SIGSEGV handler when a process creates its first region
 * (the library found here does so already at its first call, e.g. the
 * ucow_backend() that main() prints), and fork() children inherit it: by the
 * time this suite runs, a forked child of the test process can no longer
 * install a handler "before ucow". These scenarios therefore run in a fresh
 * process, `<test binary> --child-scenario NAME` (execve resets caught
 * signals to their default action), and report through their exit status.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <sigsegv.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

static sigjmp_buf escape;
static void *volatile fault_addr;
static volatile sig_atomic_t foreign_calls, resolved_calls;

/* Whether the program's handler ran with SIGSEGV, and SIGUSR1, blocked. */
static volatile sig_atomic_t segv_blocked, usr1_blocked;

/* The program's own handler: records the fault and jumps out of it. */
static void program_handler(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	(void)ctx;
	sigset_t now;
	pthread_sigmask(SIG_SETMASK, NULL, &now);
	segv_blocked = sigismember(&now, SIGSEGV);
	usr1_blocked = sigismember(&now, SIGUSR1);
	fault_addr = info->si_addr;
	foreign_calls++;
	siglongjmp(escape, 1);
}

/* A handler installed after ucow: passes every fault to ucow first. */
static void late_program_handler(int sig, siginfo_t *info, void *ctx)
{
	if (ucow_handle_fault(info->si_addr)) {
		resolved_calls++;
		return;
	}
	program_handler(sig, info, ctx);
}

static void install(void (*handler)(int, siginfo_t *, void *))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
}

/* Writes one byte at p; returns whether the program's handler got the fault. */
static bool write_faults_to_program(char *p)
{
	int calls = foreign_calls;
	fault_addr = NULL;
	if (sigsetjmp(escape, 1) == 0)
		*(volatile char *)p = 'x';
	return foreign_calls == calls + 1 && fault_addr == p;
}

static char *read_only_page(void)
{
	void *p = mmap(NULL, page_size(), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

enum { PAGES = 4 };

/* A clone's copy-on-write still works, and the program's handler sees none. */
static void check_cow_works(void)
{
	int calls = foreign_calls;
	ucow_region *src = make_filled(PAGES, PAGES, 1);
	CHECK(src != NULL);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);
	fill_pages(ucow_base(clone), 1, 1, 2);
	CHECK(pages_match(ucow_base(clone), 1, 1, 2));
	CHECK(pages_match(ucow_base(src), 0, PAGES, 1));
	CHECK(stats_of(clone).cow_copies == 1);
	CHECK(foreign_calls == calls);
	ucow_destroy(clone);
	ucow_destroy(src);
}

static int snapshot_write_reaches_earlier_handler(void)
{
	install(program_handler);
	ucow_region *src = make_filled(PAGES, PAGES, 3);
	CHECK(src != NULL);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	uint64_t foreign = global_stats().foreign_faults;

	CHECK(write_faults_to_program(page_of(snap, 1) + 123));
	/* The mask the kernel gives a handler with an empty sa_mask: SIGSEGV
	 * only, not the signals ucow holds back while it looks at a fault.
	 * (TSan calls handlers with signals of its own blocked.) */
	CHECK(segv_blocked && (!usr1_blocked || sanitizer_is("tsan")));

	/* Under uffd no SIGSEGV goes through ucow: the program gets it. */
	CHECK(global_stats().foreign_faults ==
	      foreign + (backend_is("sigsegv") ? 1 : 0));
	CHECK(pages_match(ucow_base(snap), 0, PAGES, 3));
	return 0;
}

static int stray_write_reaches_earlier_handler(void)
{
	install(program_handler);
	ucow_region *r = make_filled(PAGES, PAGES, 4);
	CHECK(r != NULL);
	char *ro = read_only_page();

	CHECK(write_faults_to_program(ro + 42));
	CHECK(is_zero(ro, page_size()));
	return 0;
}

/*
 * A fault far from every region (ucow's table of address chunks is made
 * accessible only where regions are) still reaches the program.
 */
static int far_write_reaches_earlier_handler(void)
{
	install(program_handler);
	ucow_region *r = make_filled(PAGES, PAGES, 4);
	CHECK(r != NULL);
	char *far = mmap((void *)((uintptr_t)1 << 30), page_size(), PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(far != MAP_FAILED);
	CHECK(write_faults_to_program(far + 42));
	CHECK(is_zero(far, page_size()));
	return 0;
}

static int cow_works_after_program_handler_ran(void)
{
	install(program_handler);
	ucow_region *src = make_filled(PAGES, PAGES, 5);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	CHECK(write_faults_to_program(page_of(snap, 0)));
	CHECK(write_faults_to_program(read_only_page()));
	check_cow_works();
	return 0;
}

/* With no handler of the program's, these faults keep the default action. */
static int snapshot_write_default_action(void)
{
	ucow_region *src = make_filled(PAGES, PAGES, 6);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	*(volatile char *)page_of(snap, 2) = 'x';
	return 0;
}

static int stray_write_default_action(void)
{
	ucow_region *r = make_filled(PAGES, PAGES, 7);
	CHECK(r != NULL);
	*(volatile char *)read_only_page() = 'x';
	return 0;
}

static int later_handler_keeps_cow_working(void)
{
	ucow_region *src = make_filled(PAGES, PAGES, 8); /* ucow's handler now */
	CHECK(src != NULL);
	install(late_program_handler);
	ucow_region *clone = ucow_clone(src);
	CHECK(clone != NULL);

	fill_pages(ucow_base(clone), 1, 1, 10);

	/* One write to a shared page: one fault, resolved by ucow (under
	 * uffd it never reaches a SIGSEGV handler). */
	CHECK(resolved_calls == (backend_is("uffd") ? 0 : 1));
	CHECK(foreign_calls == 0);
	CHECK(stats_of(clone).cow_copies == 1);
	CHECK(pages_match(ucow_base(clone), 1, 1, 10));
	CHECK(pages_match(ucow_base(src), 0, PAGES, 8));
	return 0;
}

static int later_handler_gets_foreign_faults(void)
{
	ucow_region *src = make_filled(PAGES, PAGES, 9);
	CHECK(src != NULL);
	install(late_program_handler);
	ucow_region *snap = ucow_snapshot(src);
	CHECK(snap != NULL);
	CHECK(write_faults_to_program(page_of(snap, 3) + 7));
	CHECK(write_faults_to_program(read_only_page() + 9));
	CHECK(resolved_calls == 0);
	CHECK(pages_match(ucow_base(snap), 0, PAGES, 9));
	return 0;
}

static bool segv_action_is_default(void)
{
	struct sigaction sa;
	CHECK(sigaction(SIGSEGV, NULL, &sa) == 0);
	return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

static int handler_installed_at_first_create(void)
{
	CHECK(segv_action_is_default());
	CHECK(ucow_page_size() == page_size());
	CHECK(ucow_backend() != NULL);
	CHECK(segv_action_is_default());
	ucow_region *r = ucow_create(page_size());
	CHECK(r != NULL);
	/* Only the signal backend needs a SIGSEGV handler. */
	if (backend_is("sigsegv"))
		CHECK(!segv_action_is_default());
	return 0;
}

/*
 * A program that catches its own stack overflows: a SIGSEGV handler with
 * SA_ONSTACK, installed before ucow, and an alternate signal stack per
 * thread. The overflow must reach it, in the main thread and in another.
 */
static volatile sig_atomic_t overflows_caught, stop_recursion;
static _Thread_local sigjmp_buf overflow_escape;

static void overflow_handler(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	(void)info;
	(void)ctx;
	overflows_caught++;
	siglongjmp(overflow_escape, 1);
}

/* Frames the compiler can neither fold nor turn into a loop. */
static __attribute__((noinline)) int recurse(int n)
{
	volatile char frame[1024];
	frame[0] = (char)n;
	if (stop_recursion)
		return 0;
	return recurse(n + 1) + frame[0];
}

enum { ALT_STACK_SIZE = 256 * 1024 };

static void *overflow_on_alt_stack(void *unused)
{
	(void)unused;
	stack_t alt = {.ss_sp = malloc(ALT_STACK_SIZE), .ss_size = ALT_STACK_SIZE};
	CHECK(alt.ss_sp != NULL && sigaltstack(&alt, NULL) == 0);
	int before = overflows_caught;
	if (sigsetjmp(overflow_escape, 1) == 0)
		recurse(0);
	CHECK(overflows_caught == before + 1);
	stack_t off = {.ss_flags = SS_DISABLE};
	CHECK(sigaltstack(&off, NULL) == 0);
	free(alt.ss_sp);
	return NULL;
}

static int stack_overflow_reaches_onstack_handler(void)
{
	struct sigaction sa = {.sa_sigaction = overflow_handler,
			       .sa_flags = SA_SIGINFO | SA_ONSTACK};
	CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	ucow_region *r = make_filled(PAGES, PAGES, 11);
	CHECK(r != NULL);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, overflow_on_alt_stack, NULL) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	overflow_on_alt_stack(NULL);
	CHECK(overflows_caught == 2);
	check_cow_works();
	return 0;
}

/*
 * A SIGSEGV sent by raise(), kill() or sigqueue() is no fault: the
 * program's earlier handler gets it as it was sent, ignored it stays
 * ignored, and copy-on-write goes on.
 */
static volatile sig_atomic_t sent_calls, sent_code;

static void sent_handler(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	(void)ctx;
	sent_code = info->si_code;
	sent_calls++;
}

static bool sent_segv_reaches(int code)
{
	int calls = sent_calls;
	if (code == SI_TKILL)
		CHECK(raise(SIGSEGV) == 0);
	else if (code == SI_USER)
		CHECK(kill(getpid(), SIGSEGV) == 0);
	else
		CHECK(sigqueue(getpid(), SIGSEGV, (union sigval){0}) == 0);
	/* A signal sent to the process may arrive a moment later (valgrind
	 * delivers it at its next scheduling point). */
	for (int waits = 0; sent_calls == calls && waits < 1000; waits++)
		usleep(1000);
	return sent_calls == calls + 1 && sent_code == code;
}

static int sent_segv_reaches_earlier_handler(void)
{
	struct sigaction sa = {.sa_sigaction = sent_handler,
			       .sa_flags = SA_SIGINFO};
	CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	ucow_region *r = make_filled(PAGES, PAGES, 12);
	CHECK(r != NULL);
	uint64_t foreign = global_stats().foreign_faults;
	CHECK(sent_segv_reaches(SI_TKILL));
	CHECK(sent_segv_reaches(SI_USER));
	/* valgrind never delivers a SIGSEGV sent with sigqueue(). */
	if (!sanitizer_is("valgrind"))
		CHECK(sent_segv_reaches(SI_QUEUE));
	CHECK(global_stats().foreign_faults == foreign);
	check_cow_works();
	return 0;
}

static int sent_segv_ignored(void)
{
	CHECK(signal(SIGSEGV, SIG_IGN) != SIG_ERR);
	ucow_region *r = make_filled(PAGES, PAGES, 13);
	CHECK(r != NULL);
	CHECK(raise(SIGSEGV) == 0);
	CHECK(kill(getpid(), SIGSEGV) == 0);
	check_cow_works();
	return 0;
}

/* With no handler of the program's, a sent SIGSEGV kills. */
static int sent_segv_default_action(void)
{
	ucow_region *r = make_filled(PAGES, PAGES, 14);
	CHECK(r != NULL);
	CHECK(raise(SIGSEGV) == 0);
	return 0;
}

static int sent_segv_by_kill_default_action(void)
{
	ucow_region *r = make_filled(PAGES, PAGES, 15);
	CHECK(r != NULL);
	CHECK(kill(getpid(), SIGSEGV) == 0);
	return 0;
}

/*
 * A program that uses GNU libsigsegv itself, installed before ucow: the
 * signal backend cannot start (libsigsegv keeps one handler), and says so;
 * the program can choose the uffd backend.
 */
static int program_libsigsegv_handler(void *addr, int serious)
{
	(void)addr;
	(void)serious;
	return 0;
}

static int libsigsegv_user_before_ucow(void)
{
	CHECK(sigsegv_install_handler(program_libsigsegv_handler) == 0);
	if (!backend_is("sigsegv")) {
		check_cow_works();
		return 0;
	}
	struct stderr_capture capture;
	char said[512];
	stderr_capture_begin(&capture);
	errno = 0;
	ucow_region *r = ucow_create(page_size());
	int err = errno;
	stderr_capture_end(&capture, said, sizeof said);
	CHECK(r == NULL && err == EBUSY);
	CHECK(strstr(said, "ucow: sigsegv backend unavailable: the program uses "
			   "GNU libsigsegv itself") == said);
	CHECK(strchr(said, '\n') == said + strlen(said) - 1);
	if (!sanitizer_is("valgrind")) {
		CHECK(ucow_set_backend("uffd") == 0);
		check_cow_works();
	}
	return 0;
}

static int fault_under_realtime_signals(void);

const struct child_scenario signal_scenarios[] = {
	{ "snapshot-write-reaches-earlier-handler", snapshot_write_reaches_earlier_handler },
	{ "stray-write-reaches-earlier-handler", stray_write_reaches_earlier_handler },
	{ "far-write-reaches-earlier-handler", far_write_reaches_earlier_handler },
	{ "cow-works-after-program-handler-ran", cow_works_after_program_handler_ran },
	{ "snapshot-write-default-action", snapshot_write_default_action },
	{ "stray-write-default-action", stray_write_default_action },
	{ "later-handler-keeps-cow-working", later_handler_keeps_cow_working },
	{ "later-handler-gets-foreign-faults", later_handler_gets_foreign_faults },
	{ "handler-installed-at-first-create", handler_installed_at_first_create },
	{ "fault-under-realtime-signals", fault_under_realtime_signals },
	{ "stack-overflow-reaches-onstack-handler", stack_overflow_reaches_onstack_handler },
	{ "sent-segv-reaches-earlier-handler", sent_segv_reaches_earlier_handler },
	{ "sent-segv-ignored", sent_segv_ignored },
	{ "sent-segv-default-action", sent_segv_default_action },
	{ "sent-segv-by-kill-default-action", sent_segv_by_kill_default_action },
	{ "libsigsegv-user-before-ucow", libsigsegv_user_before_ucow },
	{ NULL, NULL },
};

static void test_snapshot_write_reaches_earlier_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("snapshot-write-reaches-earlier-handler"), 0));
}

static void test_stray_write_reaches_earlier_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("stray-write-reaches-earlier-handler"), 0));
}

static void test_far_write_reaches_earlier_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("far-write-reaches-earlier-handler"), 0));
}

static void test_cow_works_after_program_handler_ran(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("cow-works-after-program-handler-ran"), 0));
}

static void test_snapshot_write_default_action_kills(void)
{
	CU_ASSERT(CHILD_SIGNALED(run_scenario("snapshot-write-default-action"), SIGSEGV));
}

static void test_stray_write_default_action_kills(void)
{
	CU_ASSERT(CHILD_SIGNALED(run_scenario("stray-write-default-action"), SIGSEGV));
}

static void test_later_handler_keeps_cow_working(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("later-handler-keeps-cow-working"), 0));
}

static void test_later_handler_gets_foreign_faults(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("later-handler-gets-foreign-faults"), 0));
}

static void test_handler_installed_at_first_create(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("handler-installed-at-first-create"), 0));
}

static void test_stack_overflow_reaches_onstack_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("stack-overflow-reaches-onstack-handler"), 0));
}

static void test_sent_segv_reaches_earlier_handler(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("sent-segv-reaches-earlier-handler"), 0));
	CU_ASSERT(CHILD_EXITED(run_scenario("sent-segv-ignored"), 0));
}

static void test_libsigsegv_user_before_ucow_is_told(void)
{
	CU_ASSERT(CHILD_EXITED(run_scenario("libsigsegv-user-before-ucow"), 0));
}

static void test_sent_segv_default_action_kills(void)
{
	CU_ASSERT(CHILD_SIGNALED(run_scenario("sent-segv-default-action"), SIGSEGV));
	CU_ASSERT(CHILD_SIGNALED(run_scenario("sent-segv-by-kill-default-action"), SIGSEGV));
}

/*
 * A program's asynchronous signal handler that writes the page ucow_unshare
 * is copying on the same thread: the handler's fault must not wait for the
 * page lock its own thread holds (unshare holds signals back meanwhile).
 */
enum { UNSHARE_ROUNDS = 50, UNSHARE_PAGES = 16 };

static char *volatile usr1_target; /* main thread and its handler only */
static int usr1_stop;

static void usr1_writer(int sig)
{
	(void)sig;
	char *t = usr1_target;
	if (t)
		t[1] = 1;
}

struct kick {
	pthread_t victim;
	int sig;
};

static void *usr1_kicker(void *arg)
{
	const struct kick *k = arg;
	struct timespec gap = {0, 20000};
	while (!__atomic_load_n(&usr1_stop, __ATOMIC_RELAXED)) {
		pthread_kill(k->victim, k->sig);
		nanosleep(&gap, NULL);
	}
	return NULL;
}

/* Installs usr1_writer for k->sig and starts sending it to k->victim. */
static pthread_t start_kicks(struct kick *k)
{
	struct sigaction sa = {.sa_handler = usr1_writer, .sa_flags = SA_RESTART};
	CHECK(sigaction(k->sig, &sa, NULL) == 0);
	pthread_t kicker;
	CHECK(pthread_create(&kicker, NULL, usr1_kicker, k) == 0);
	return kicker;
}

static void unshare_under_signals_scenario(void *unused)
{
	(void)unused;
	alarm(60); /* a deadlock fails the test within a minute */
	size_t ps = page_size();
	ucow_region *src = make_filled(UNSHARE_PAGES, UNSHARE_PAGES, 4);
	CHECK(src != NULL);
	struct kick kick = {pthread_self(), SIGUSR1};
	pthread_t kicker = start_kicks(&kick);
	for (int round = 0; round < UNSHARE_ROUNDS; round++) {
		ucow_region *c = ucow_clone(src);
		CHECK(c != NULL);
		char *b = ucow_base(c);
		for (size_t p = 0; p < UNSHARE_PAGES; p++) {
			usr1_target = b + p * ps;
			CHECK(ucow_unshare(b + p * ps, ps) == 0);
			usr1_target = NULL;
		}
		for (size_t p = 0; p < UNSHARE_PAGES; p++)
			b[p * ps + 1] = 1;
		CHECK(pages_match(ucow_base(src), 0, UNSHARE_PAGES, 4));
		ucow_destroy(c);
	}
	__atomic_store_n(&usr1_stop, 1, __ATOMIC_RELAXED);
	CHECK(pthread_join(kicker, NULL) == 0);
	ucow_destroy(src);
}

static void test_handler_writing_the_page_being_unshared(void)
{
	SKIP_UNDER("tsan", "TSan runs a deferred handler with every signal "
			   "blocked, so its write fault kills the process");
	CU_ASSERT(CHILD_EXITED(run_in_child(unshare_under_signals_scenario, NULL), 0));
}

/*
 * The same with a real-time signal, whose handler writes the page that its
 * thread is taking a write fault on: faults are served with every
 * asynchronous signal held back, real-time ones included (libsigsegv's own
 * mask leaves them out: a nested fault found SIGSEGV blocked, and the kernel
 * killed the process). In a fresh process, so that no handler a test
 * installed earlier stands in front of ucow's with a mask of its own.
 */
static int fault_under_realtime_signals(void)
{
	alarm(60);
	unsigned rounds = sanitizer_is("valgrind") ? 20 : 300;
	size_t ps = page_size();
	ucow_region *src = make_filled(UNSHARE_PAGES, UNSHARE_PAGES, 5);
	CHECK(src != NULL);
	char *b = ucow_base(src);
	struct kick kick = {pthread_self(), SIGRTMIN};
	pthread_t kicker = start_kicks(&kick);
	/* Signals held back by a snapshot arrive as it returns: the faults of
	 * a round, one after another, outlast the kicker's gap. Descending,
	 * so that each page is a fault of its own (no fault-around). */
	for (unsigned round = 0; round < rounds; round++) {
		ucow_region *snap = ucow_snapshot(src);
		CHECK(snap != NULL);
		char *s = ucow_base(snap);
		for (size_t p = UNSHARE_PAGES; p-- > 0;) {
			char before = b[p * ps];
			usr1_target = b + p * ps;
			/* volatile: the store stays between the target's */
			((volatile char *)b)[p * ps] = (char)(before + 1);
			usr1_target = NULL;
			CHECK(b[p * ps] == (char)(before + 1) &&
			      s[p * ps] == before);
		}
		ucow_destroy(snap);
	}
	__atomic_store_n(&usr1_stop, 1, __ATOMIC_RELAXED);
	CHECK(pthread_join(kicker, NULL) == 0);
	ucow_destroy(src);
	return 0;
}

static void test_realtime_handler_writing_the_page_being_faulted(void)
{
	SKIP_UNDER("tsan", "TSan runs a deferred handler with every signal "
			   "blocked, so its write fault kills the process");
	CU_ASSERT(CHILD_EXITED(
		run_scenario("fault-under-realtime-signals"), 0));
}

void add_signals_suite(void)
{
	static const struct test_case tests[] = {
		TEST(test_snapshot_write_reaches_earlier_handler),
		TEST(test_stray_write_reaches_earlier_handler),
		TEST(test_far_write_reaches_earlier_handler),
		TEST(test_cow_works_after_program_handler_ran),
		TEST(test_snapshot_write_default_action_kills),
		TEST(test_stray_write_default_action_kills),
		TEST(test_later_handler_keeps_cow_working),
		TEST(test_later_handler_gets_foreign_faults),
		TEST(test_handler_installed_at_first_create),
		TEST(test_stack_overflow_reaches_onstack_handler),
		TEST(test_sent_segv_reaches_earlier_handler),
		TEST(test_sent_segv_default_action_kills),
		TEST(test_libsigsegv_user_before_ucow_is_told),
		TEST(test_handler_writing_the_page_being_unshared),
		TEST(test_realtime_handler_writing_the_page_being_faulted),
		{ NULL, NULL },
	};
	add_suite("signals", tests);
}
