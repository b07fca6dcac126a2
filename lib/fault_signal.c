/*
 * The signal backend: write faults arrive as SIGSEGV through GNU libsigsegv
 * and are resolved on the faulting thread, in its signal handler.
 *
 * libsigsegv keeps one global handler and does not chain: when a handler
 * declines a fault, it resets SIGSEGV to the default action. So ucow saves
 * the action the program had before, and calls it itself for every fault
 * that is not a copy-on-write fault of a region (a write to a snapshot, a
 * stray pointer). To give that handler the real siginfo and context, a thin
 * trampoline in front of libsigsegv's handler records them per thread. A
 * SIGSEGV sent by another process or thread never reaches libsigsegv: the
 * trampoline passes it on as the kernel would have without ucow.
 */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <sigsegv.h>
#include <string.h>
#include <ucontext.h>

static struct sigaction prev_action; /* the program's, before ucow */
static struct sigaction lib_action;  /* libsigsegv's */

#define TLS __thread __attribute__((tls_model("initial-exec")))
static TLS siginfo_t *fault_info;
static TLS void *fault_context;

static bool prev_is_default(void)
{
	return !(prev_action.sa_flags & SA_SIGINFO) &&
	       (prev_action.sa_handler == SIG_DFL ||
		prev_action.sa_handler == SIG_IGN);
}

/* The program's action, for one signal: SA_RESETHAND makes it the last. */
static struct sigaction take_prev_action(void)
{
	struct sigaction act = prev_action;
	if (act.sa_flags & SA_RESETHAND) {
		memset(&prev_action, 0, sizeof prev_action);
		prev_action.sa_handler = SIG_DFL;
	}
	return act;
}

/*
 * Calls the program's handler with the mask the kernel would have given it:
 * the one at the signal, its sa_mask, and SIGSEGV itself.
 */
static void call_program(const struct sigaction *act, siginfo_t *info,
			 void *context)
{
	sigset_t mask, saved;
	pthread_sigmask(SIG_SETMASK, NULL, &saved);
	if (context)
		mask = ((ucontext_t *)context)->uc_sigmask;
	else
		mask = saved;
	sigorset(&mask, &mask, &act->sa_mask);
	if (!(act->sa_flags & SA_NODEFER))
		sigaddset(&mask, SIGSEGV);
	pthread_sigmask(SIG_SETMASK, &mask, NULL);
	if (act->sa_flags & SA_SIGINFO)
		act->sa_sigaction(SIGSEGV, info, context);
	else
		act->sa_handler(SIGSEGV);
	os_restore_signals(&saved);
}

/*
 * Passes a foreign fault on, with the previous action's mask and flags.
 * With no previous handler, SIGSEGV goes back to its default action and the
 * access is retried, so the program dies of the real fault, at the real
 * address, as it would have without ucow.
 */
static void chain_fault(void *addr)
{
	COUNT(&frames.foreign_faults);
	if (prev_is_default()) {
		struct sigaction dfl;
		memset(&dfl, 0, sizeof dfl);
		dfl.sa_handler = SIG_DFL;
		sigaction(SIGSEGV, &dfl, NULL);
		return;
	}
	struct sigaction act = take_prev_action();
	siginfo_t synth;
	siginfo_t *info = fault_info;
	if (!info) {
		memset(&synth, 0, sizeof synth);
		synth.si_signo = SIGSEGV;
		synth.si_code = SEGV_ACCERR;
		synth.si_addr = addr;
		info = &synth;
	}
	call_program(&act, info, fault_context);
}

/*
 * The default action of a sent SIGSEGV: the signal again, to this thread,
 * with SIGSEGV at its default and unblocked; it kills. A process that it
 * does not kill (the init of a PID namespace, where the kernel drops it)
 * goes on with ucow's handler and its mask as they were.
 */
static void kill_by_sent_signal(void)
{
	struct sigaction dfl, ours;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigset_t segv, saved;
	sigemptyset(&segv);
	sigaddset(&segv, SIGSEGV);
	sigaction(SIGSEGV, &dfl, &ours);
	pthread_sigmask(SIG_UNBLOCK, &segv, &saved);
	raise(SIGSEGV);
	os_restore_signals(&saved);
	sigaction(SIGSEGV, &ours, NULL);
}

/*
 * A SIGSEGV sent by kill(), raise() or sigqueue() (si_code <= 0) is no
 * fault: nothing to serve, no access to retry. It gets what it would have
 * without ucow: the program's handler; nothing, if the program ignored
 * SIGSEGV; or the default action.
 */
static void pass_sent_signal(siginfo_t *info, void *context)
{
	struct sigaction act = take_prev_action();
	bool plain = !(act.sa_flags & SA_SIGINFO);
	if (plain && act.sa_handler == SIG_DFL)
		kill_by_sent_signal();
	else if (!plain || act.sa_handler != SIG_IGN)
		call_program(&act, info, context);
}

static void segv_trampoline(int sig, siginfo_t *info, void *context)
{
	if (info && info->si_code <= 0) {
		int saved = errno;
		pass_sent_signal(info, context);
		errno = saved;
		return;
	}
	siginfo_t *outer_info = fault_info;
	void *outer_context = fault_context;
	fault_info = info;
	fault_context = context;
	if (lib_action.sa_flags & SA_SIGINFO)
		lib_action.sa_sigaction(sig, info, context);
	else
		lib_action.sa_handler(sig);
	fault_info = outer_info;
	fault_context = outer_context;
}

/*
 * libsigsegv calls this with serious = 0, then again with serious = 1. The
 * address comes from the siginfo when the trampoline saw it: libsigsegv
 * reads it from the machine context, which valgrind does not fill in.
 */
static int sigsegv_fault(void *addr, int serious)
{
	int saved = errno;
	if (fault_info)
		addr = fault_info->si_addr;
	int served = handle_mm_fault((uintptr_t)addr);
	if (!served && serious) {
		chain_fault(addr);
		served = 1; /* retry the access: the program's action decides */
	}
	errno = saved;
	return served;
}

static void *prev_handler(void)
{
	if (prev_action.sa_flags & SA_SIGINFO)
		return (void *)prev_action.sa_sigaction;
	return (void *)prev_action.sa_handler;
}

/*
 * Whether the program's action is libsigsegv's own (it called
 * sigsegv_install_handler or stackoverflow_install_handler): the handler
 * lies in the library that holds sigsegv_install_handler. libsigsegv keeps
 * one handler, so ucow's would replace the program's, and passing a foreign
 * fault on to libsigsegv's action would call ucow's again, until the stack
 * overflows. A program with a copy of libsigsegv of its own is no matter.
 */
static bool prev_is_libsigsegv(void)
{
	Dl_info prev, lib;
	return !prev_is_default() && dladdr(prev_handler(), &prev) &&
	       dladdr((void *)sigsegv_install_handler, &lib) &&
	       prev.dli_fbase == lib.dli_fbase;
}

static int signal_init(void)
{
	if (sigaction(SIGSEGV, NULL, &prev_action) != 0)
		return -errno;
	if (prev_is_libsigsegv()) {
		os_write_error("sigsegv backend unavailable",
			       "the program uses GNU libsigsegv itself, which "
			       "keeps one handler (use UCOW_BACKEND=uffd)",
			       0);
		return -EBUSY;
	}
	if (sigsegv_install_handler(sigsegv_fault) != 0)
		return -ENOSYS;
	if (sigaction(SIGSEGV, NULL, &lib_action) != 0)
		return -errno;
	/*
	 * A fault is served with every asynchronous signal held back, as
	 * ucow_lock holds them: a handler that writes a region while its thread
	 * is in a fault would find SIGSEGV blocked (the kernel then kills the
	 * process) or wait for a pte lock its own thread holds. libsigsegv's
	 * mask leaves real-time signals, SIGCONT and the stop signals out, and
	 * glibc's cancellation signal (a thread with asynchronous cancellation
	 * would unwind out of the fault with its locks held).
	 *
	 * SA_ONSTACK, when the program's handler had it: a thread that set an
	 * alternate signal stack (to catch its own stack overflows) must get
	 * the fault there, as it would from that handler without ucow; on the
	 * overflowed stack the kernel cannot deliver the signal and kills the
	 * process. Not otherwise: valgrind never grows a thread's stack for
	 * the frame of an SA_ONSTACK signal, even with no alternate stack set,
	 * and a fault at a new depth of the stack killed the program there.
	 */
	struct sigaction tramp = lib_action;
	tramp.sa_flags |= SA_SIGINFO | (prev_action.sa_flags & SA_ONSTACK);
	tramp.sa_sigaction = segv_trampoline;
	os_async_signals(&tramp.sa_mask);
	sigorset(&tramp.sa_mask, &tramp.sa_mask, &lib_action.sa_mask);
	return sigaction(SIGSEGV, &tramp, NULL) ? -errno : 0;
}

static int signal_wrprotect(void *addr, size_t size)
{
	return os_protect(addr, size, false);
}

static int signal_make_writable(void *addr, size_t size)
{
	return os_protect(addr, size, true);
}

/* A write in the middle of a remap faults to us: `live` needs no care. */
static int signal_map_zero(void *addr, size_t size, bool live)
{
	UNUSED(live);
	return os_map_zero(addr, size);
}

static int signal_map_region(void *addr, size_t size)
{
	return os_map_zero(addr, size);
}

static int signal_map_frame(void *addr, size_t size, uint64_t off,
			    bool writable, bool live)
{
	UNUSED(live);
	return os_map_file(addr, size, frames.memfd, off, writable, writable);
}

const struct backend signal_backend = {
	.name = "sigsegv",
	.init = signal_init,
	.atfork_child = NULL,
	.map_region = signal_map_region,
	.map_zero = signal_map_zero,
	.map_frame = signal_map_frame,
	.wrprotect = signal_wrprotect,
	.make_writable = signal_make_writable,
	/* mprotect passes over a mapping that is read-only already. */
	.wp_gap = 512,
	.wp_splits = true,
	.plain_zero = true,
	.read_fault_around = true,
};
