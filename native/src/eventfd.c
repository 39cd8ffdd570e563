/* eventfd: the doorbell between ring peers (ring-protocol.md §5: kicks). */
#include "kvmchan.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/*
 * Reads and writes that never block, whatever another holder of the fd does
 * (docs/security.md, "Shared eventfds"). O_NONBLOCK belongs to the open file description,
 * which every process we passed the fd to shares: a hostile peer can clear it, then drain
 * the counter (our read would sleep) or saturate it (our write would sleep) — forever, in
 * the daemon's only thread. pwritev2(RWF_NOWAIT) answers EOPNOTSUPP on an eventfd, so each
 * call sets O_NONBLOCK again and runs under a per-thread timer whose signal (a no-op handler
 * installed without SA_RESTART) cuts a blocked call short with EINTR. The timer repeats every
 * IO_BOUND_NS until disarmed: a one-shot signal could land before the call starts to sleep
 * (the thread preempted between arming and the syscall, common on a loaded host) and the call
 * would then sleep for ever; the next tick interrupts it. A write
 * that would block means the counter is saturated, so the reader already has its wake-up; a
 * read that would block means there is nothing to read: both are reported as EAGAIN.
 */
#define IO_BOUND_NS (20 * 1000 * 1000)

static pthread_once_t io_once = PTHREAD_ONCE_INIT;
static int io_signal = -1;

static void on_io_alarm(int sig)
{
    (void)sig;
}

static void io_install(void)
{
    int sig = SIGRTMIN + 6;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_io_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the interrupted call must return EINTR */
    if (sig <= SIGRTMAX && sigaction(sig, &sa, NULL) == 0)
        io_signal = sig;
}

static int io_timer(kc_env_state *st)
{
    if (st->io_timer_ready)
        return 1;
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = io_signal;
    sev._sigev_un._tid = gettid(); /* sigev_notify_thread_id; glibc 2.36 lacks the name */
    if (timer_create(CLOCK_MONOTONIC, &sev, &st->io_timer) != 0)
        return 0;
    st->io_timer_ready = 1;
    return 1;
}

void kc_eventfd_cleanup(kc_env_state *state)
{
    if (state->io_timer_ready)
        timer_delete(state->io_timer);
    state->io_timer_ready = 0;
}

/* read(2)/write(2) of 8 bytes that returns within IO_BOUND_NS; -errno, EAGAIN if it would block. */
static ssize_t bounded_io(napi_env env, int fd, uint64_t *value, int writing)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (!(fl & O_NONBLOCK))
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    pthread_once(&io_once, io_install);
    kc_env_state *st = kc_state(env);
    int armed = 0;
    if (io_signal > 0 && st != NULL && io_timer(st)) {
        struct itimerspec its;
        memset(&its, 0, sizeof(its));
        its.it_value.tv_nsec = IO_BOUND_NS;
        its.it_interval.tv_nsec = IO_BOUND_NS; /* repeat: see above */
        armed = timer_settime(st->io_timer, 0, &its, NULL) == 0;
    }
    ssize_t n = writing ? write(fd, value, sizeof(*value)) : read(fd, value, sizeof(*value));
    int e = errno;
    if (armed) {
        struct itimerspec off;
        memset(&off, 0, sizeof(off));
        timer_settime(st->io_timer, 0, &off, NULL);
    }
    if (n < 0)
        return e == EINTR || e == EWOULDBLOCK ? -EAGAIN : -e;
    return n;
}

napi_value kc_eventfd(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    int64_t initval, flags;
    if (!kc_get_args(env, info, 2, argv, NULL) || !kc_arg_int(env, argv[0], "initval", 0, UINT32_MAX, &initval) ||
        !kc_arg_int(env, argv[1], "flags", 0, EFD_NONBLOCK | EFD_SEMAPHORE | EFD_CLOEXEC, &flags)) {
        return NULL;
    }
    if ((flags & ~(int64_t)(EFD_NONBLOCK | EFD_SEMAPHORE | EFD_CLOEXEC)) != 0) {
        return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                              "The \"flags\" argument may only contain EFD_NONBLOCK, EFD_SEMAPHORE "
                              "and EFD_CLOEXEC. Received %lld",
                              (long long)flags);
    }
    /* Always close-on-exec: children get fds only by explicit passing. */
    int fd = eventfd((unsigned int)initval, (int)flags | EFD_CLOEXEC);
    if (fd < 0)
        return kc_throw_errno(env, errno, "eventfd");
    return kc_number(env, fd);
}

napi_value kc_eventfd_read(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    uint64_t value;
    ssize_t n = bounded_io(env, fd, &value, 0);
    if (n < 0) {
        if (n == -EAGAIN)
            return kc_null(env);
        return kc_throw_errno(env, (int)-n, "read");
    }
    if (n != (ssize_t)sizeof(value))
        return kc_throw_errno(env, EINVAL, "read");
    return kc_number(env, (double)value);
}

napi_value kc_eventfd_write(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    int fd;
    uint64_t value;
    if (!kc_get_args(env, info, 2, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
        !kc_arg_size(env, argv[1], "value", UINT64_MAX, &value)) {
        return NULL;
    }
    ssize_t n = bounded_io(env, fd, &value, 1);
    /* EAGAIN means the counter is saturated: the peer has a wake-up pending anyway. */
    if (n < 0 && n != -EAGAIN)
        return kc_throw_errno(env, (int)-n, "write");
    return kc_undefined(env);
}
