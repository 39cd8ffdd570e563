/*
 * Bounded eventfd I/O (docs/security.md, "Shared eventfds").
 *
 * O_NONBLOCK belongs to the open file description, which the peer shares: it can clear the flag
 * and then saturate the counter (our kick would sleep in write(2)) or drain it (our drain would
 * sleep in read(2)) — for ever, inside a libvchan_write() the application made non-blocking.
 * Linux has no per-call "do not wait" for an eventfd (pwritev2(RWF_NOWAIT) answers EOPNOTSUPP,
 * MSG_DONTWAIT is for sockets), and checking first with poll(POLLOUT, 0) or setting O_NONBLOCK
 * first leaves a window in which the peer changes both back. So each call:
 *
 *   1. sets O_NONBLOCK again (the common case: the call returns at once);
 *   2. runs under a one-shot per-thread POSIX timer (SIGEV_THREAD_ID, ~20 ms, re-firing every
 *      20 ms until disarmed in case the first expiry lands before the call starts) whose signal
 *      has a no-op handler installed without SA_RESTART: a call the peer made sleep returns
 *      EINTR, which we report as "would block". Nothing is lost: a write that would sleep means
 *      the counter is saturated, so the reader already has its wake-up; a read that would sleep
 *      means there was nothing to read.
 *
 * A library must not take a signal from its application, so the signal is chosen with care:
 * the first real-time signal from SIGRTMIN+6 up whose disposition is still the default when the
 * library first kicks (an application that handles or ignores a signal keeps it); the handler
 * does nothing and touches no state; the signal is unblocked in the calling thread only while
 * the timer is armed, and is only ever raised when a call has already been stuck for 20 ms,
 * which an honest peer never causes. The libraries are linked with -z nodelete so the handler is
 * never unmapped by dlclose(). When no signal is free (or no timer can be created) the call
 * falls back to poll(…, 0) before the read or write: bounded unless the peer wins that race.
 */
#define _GNU_SOURCE
#include "eventfd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BOUND_NS (20 * 1000 * 1000)
#define FIRST_SIGNAL_OFFSET 6

struct guard_timer {
    timer_t id;
    int ready;
    unsigned gen; /* fork generation it was created in: timers are not inherited */
};

static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_signal = -1;
static int guard_key_ok;
static pthread_key_t guard_key;
static unsigned guard_fork_gen;
static __thread struct guard_timer thread_guard;

static void on_guard_signal(int sig)
{
    (void)sig; /* its only purpose is to make a sleeping read/write return EINTR */
}

static void guard_release(void *p)
{
    struct guard_timer *t = p;
    if (t->ready && t->gen == __atomic_load_n(&guard_fork_gen, __ATOMIC_RELAXED))
        timer_delete(t->id);
    t->ready = 0;
}

static void guard_after_fork(void)
{
    __atomic_add_fetch(&guard_fork_gen, 1, __ATOMIC_RELAXED);
}

static void guard_init(void)
{
    /* Without a key the timers of exiting threads would leak: then use no timer at all. */
    if (pthread_key_create(&guard_key, guard_release) != 0)
        return;
    if (pthread_atfork(NULL, NULL, guard_after_fork) != 0)
        return;
    guard_key_ok = 1;
    for (int sig = SIGRTMIN + FIRST_SIGNAL_OFFSET; sig <= SIGRTMAX; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) != 0)
            continue;
        if ((old.sa_flags & SA_SIGINFO) != 0 || old.sa_handler != SIG_DFL)
            continue; /* the application's */
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_guard_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0; /* no SA_RESTART: the interrupted call must return EINTR */
        if (sigaction(sig, &sa, NULL) == 0) {
            guard_signal = sig;
            return;
        }
    }
}

/* This thread's timer, created on first use (and again in a forked child). */
static struct guard_timer *thread_timer(void)
{
    struct guard_timer *t = &thread_guard;
    unsigned gen = __atomic_load_n(&guard_fork_gen, __ATOMIC_RELAXED);
    if (t->ready && t->gen == gen)
        return t;
    t->ready = 0;
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = guard_signal;
    sev._sigev_un._tid = gettid(); /* sigev_notify_thread_id; glibc 2.36 lacks the name */
    if (timer_create(CLOCK_MONOTONIC, &sev, &t->id) != 0)
        return NULL;
    if (pthread_setspecific(guard_key, t) != 0) {
        timer_delete(t->id);
        return NULL;
    }
    t->gen = gen;
    t->ready = 1;
    return t;
}

static void set_timer(struct guard_timer *t, long ns)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    its.it_value.tv_nsec = ns;
    its.it_interval.tv_nsec = ns;
    timer_settime(t->id, 0, &its, NULL);
}

/* One 8-byte read or write that returns within ~BOUND_NS: bytes, -EAGAIN or -errno. */
static ssize_t bounded_io(int fd, uint64_t *value, int writing)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if ((fl & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    pthread_once(&guard_once, guard_init);
    struct guard_timer *t = guard_signal > 0 && guard_key_ok ? thread_timer() : NULL;
    sigset_t sig, old;
    int restore_mask = 0;
    if (t != NULL) {
        sigemptyset(&sig);
        sigaddset(&sig, guard_signal);
        if (pthread_sigmask(SIG_UNBLOCK, &sig, &old) == 0)
            restore_mask = sigismember(&old, guard_signal) == 1;
        set_timer(t, BOUND_NS);
    } else {
        struct pollfd p = { .fd = fd, .events = writing ? POLLOUT : POLLIN };
        if (poll(&p, 1, 0) == 0)
            return -EAGAIN;
    }
    ssize_t n = writing ? write(fd, value, sizeof(*value)) : read(fd, value, sizeof(*value));
    int e = errno;
    if (t != NULL) {
        set_timer(t, 0);
        /* A signal raised before the disarm was delivered while still unblocked. */
        if (restore_mask)
            pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (n < 0)
        return e == EINTR || e == EAGAIN || e == EWOULDBLOCK ? -EAGAIN : -e;
    return n;
}

int kvc_eventfd_kick(int fd)
{
    uint64_t one = 1;
    ssize_t n = bounded_io(fd, &one, 1);
    return n < 0 ? (int)n : 0;
}

int kvc_eventfd_drain(int fd)
{
    uint64_t v;
    ssize_t n = bounded_io(fd, &v, 0);
    if (n == -EAGAIN)
        return 0;
    return n < 0 ? (int)n : 1;
}
