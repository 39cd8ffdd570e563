/* vchan core: daemon setup, blocking/non-blocking I/O, waiting (see chan.h). */
#define _GNU_SOURCE
#include "chan.h"
#include "eventfd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A sleep/wake costs tens of microseconds on a VM; spinning longer than that
 * rarely pays, spinning much shorter never catches a peer that is waking up. */
#define DEFAULT_SPIN_US 50u
#define MIN_SPIN_NS 1000u

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#elif defined(__powerpc64__)
    __asm__ __volatile__("or 27,27,27" ::: "memory");
#endif
}

/* ---- event objects ---- */

static void kick_peer(void *arg)
{
    struct kvc_chan *c = arg;
    int saved = errno;
    /* -EAGAIN: the counter is saturated, the peer has a pending event anyway. */
    (void)kvc_eventfd_kick(c->kick_fd);
    errno = saved;
}

/*
 * Wake our own event loop: a latched corruption (it then looks at is_open()), or data that was
 * waiting before we attached or looked (docs/clib.md, "Wake-ups").
 */
static void kick_self(void *arg)
{
    struct kvc_chan *c = arg;
    int saved = errno;
    (void)kvc_eventfd_kick(c->wait_fd);
    errno = saved;
}

/* ---- allocation ---- */

static struct kvc_chan *chan_alloc(void)
{
    struct kvc_chan *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->conn.fd = -1;
    c->wait_fd = -1;
    c->kick_fd = -1;
    c->select_fd = -1;
    c->owner = getpid();
    c->blocking = 1;
    uint64_t spin_us = DEFAULT_SPIN_US;
    const char *s = secure_getenv("KVMCHAN_SPIN_US");
    if (s != NULL && s[0] != '\0')
        spin_us = strtoull(s, NULL, 10);
    if (spin_us > 1000000)
        spin_us = 1000000;
    c->spin_max_ns = c->spin_rx_ns = c->spin_tx_ns = spin_us * 1000;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->wq_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->wq_cond, &ca);
    pthread_condattr_destroy(&ca);
    return c;
}

static void chan_free(struct kvc_chan *c)
{
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->wq_lock);
    pthread_cond_destroy(&c->wq_cond);
    free(c);
}

/* Releases everything local: mapping, fds, daemon connection. No shared-memory writes. */
static void chan_release(struct kvc_chan *c)
{
    if (c->map != NULL && c->owns_map)
        munmap(c->map, c->map_len);
    c->map = NULL;
    if (c->wait_fd >= 0)
        close(c->wait_fd);
    if (c->kick_fd >= 0)
        close(c->kick_fd);
    if (c->select_fd >= 0)
        close(c->select_fd);
    c->wait_fd = c->kick_fd = c->select_fd = -1;
    kvc_conn_close(&c->conn);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if ((fl & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static int ring_setup(struct kvc_chan *c, int role, unsigned c2s, unsigned s2c)
{
    int rc = kvc_ring_setup(&c->ring, c->map, c->map_len, role, c2s, s2c, 0, 0, kick_peer, c);
    if (rc < 0)
        return rc;
    c->ring.on_corrupt = kick_self;
    c->ring.on_corrupt_arg = c;
    c->is_server = role == KVC_ROLE_SERVER;
    return 0;
}

/*
 * The fd an application selects on (libvchan_fd_for_select) must also fire when the daemon
 * goes away: without a daemon nobody reports the peer's death, so a reader whose peer is then
 * killed would sleep forever (docs/wire-protocol.md §7.1). An epoll fd over the wait eventfd
 * and the daemon connection is readable when either is; libvchan_wait() then finds out which.
 */
static int select_setup(struct kvc_chan *c)
{
    if (c->conn.fd < 0)
        return 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -errno;
    struct epoll_event wait_ev = { .events = EPOLLIN, .data.fd = c->wait_fd };
    struct epoll_event conn_ev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = c->conn.fd };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->wait_fd, &wait_ev) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, c->conn.fd, &conn_ev) < 0) {
        int rc = -errno;
        close(ep);
        return rc;
    }
    c->select_fd = ep;
    return 0;
}

/*
 * Once a vchan is set up its daemon connection carries only events: EVENT_PEER_CLOSED for this
 * vchan (the peer is gone and stored CLOSED: a kick, wire-protocol.md §7.3), events we do not
 * know (ignored, §9), and EVENT_SHUTDOWN followed by end of file. Reads every datagram waiting,
 * so a select fd is not left readable by what was consumed. Returns 1 if the peer's death was
 * reported, 0 if nothing that matters came, -1 if the daemon is gone (shutdown, end of file,
 * an error, or anything but an event: a daemon that breaks the protocol is as good as gone).
 */
static int conn_events(struct kvc_chan *c)
{
    if (c->conn.fd < 0)
        return 0;
    int woke = 0;
    for (;;) {
        uint8_t b[16];
        /* No control buffer: the daemon sends no fds with events, and the kernel drops any. */
        ssize_t n = recv(c->conn.fd, b, sizeof(b), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? woke : -1;
        if (n < 8)
            return -1;
        uint16_t id = (uint16_t)(b[0] | b[1] << 8);
        if ((id & KVC_EVENT_BIT) == 0 || id == KVC_EVENT_SHUTDOWN)
            return -1;
        uint32_t handle = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
        if (id == KVC_EVENT_PEER_CLOSED && n == 16 && handle == c->handle)
            woke = 1;
    }
}

/* The daemon is gone: close our side (the peer drains, then sees end of stream) and latch it. */
static void daemon_lost(struct kvc_chan *c)
{
    if (__atomic_exchange_n(&c->lost, 1, __ATOMIC_ACQ_REL))
        return;
    kvc_ring_close(&c->ring);
}

/*
 * Client attach (ring-protocol.md §3), then one event on our own wait fd: binding an event
 * channel in Xen leaves the client's port pending, so a program that select()s on
 * libvchan_fd_for_select() before its first libvchan_data_ready() wakes at once and finds
 * whatever the server wrote before the client existed (docs/clib.md, "Wake-ups").
 */
static int client_attach(struct kvc_chan *c)
{
    if (kvc_ring_attach(&c->ring) < 0)
        return -EPROTO;
    kick_self(c);
    return 0;
}

/*
 * Private setup from the daemon's reply (ring-protocol.md §3): validate the
 * geometry, map exactly this vchan's range, check the header, attach (client).
 * Consumes the fds in every case.
 */
static int chan_attach_region(struct kvc_chan *c, const struct kvc_vchan_info *info, struct kvc_vchan_fds *fds,
                              int role)
{
    int rc = 0;
    unsigned c2s = role == KVC_ROLE_SERVER ? info->read_order : info->write_order;
    unsigned s2c = role == KVC_ROLE_SERVER ? info->write_order : info->read_order;
    long page = sysconf(_SC_PAGESIZE);
    struct stat st;

    c->wait_fd = fds->wait;
    c->kick_fd = fds->kick;
    if (info->role != role || c2s < KVC_RING_MIN_ORDER || c2s > KVC_RING_MAX_ORDER || s2c < KVC_RING_MIN_ORDER ||
        s2c > KVC_RING_MAX_ORDER || info->shm_length != kvc_ring_region_length(c2s, s2c) ||
        info->shm_offset % (uint64_t)page != 0) {
        rc = -EPROTO;
        goto out;
    }
    /* A mapping past the end of the file would SIGBUS on first touch. */
    if (fstat(fds->shm, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < info->shm_offset + info->shm_length) {
        rc = -EPROTO;
        goto out;
    }
    void *map =
        mmap(NULL, (size_t)info->shm_length, PROT_READ | PROT_WRITE, MAP_SHARED, fds->shm, (off_t)info->shm_offset);
    if (map == MAP_FAILED) {
        rc = -errno;
        goto out;
    }
    c->map = map;
    c->map_len = (size_t)info->shm_length;
    c->owns_map = 1;
    if ((rc = set_nonblock(c->wait_fd)) < 0)
        goto out;
    if ((rc = ring_setup(c, role, c2s, s2c)) < 0)
        goto out;
    c->domain = info->peer_domain;
    c->port = info->port;
    c->handle = info->handle;
    if (role == KVC_ROLE_CLIENT && (rc = client_attach(c)) < 0)
        goto out;
    rc = select_setup(c);
out:
    close(fds->shm);
    fds->shm = -1;
    return rc;
}

int kvc_chan_server_init(struct kvc_chan **out, uint32_t domain, uint32_t port, size_t read_min, size_t write_min)
{
    struct kvc_chan *c = chan_alloc();
    struct kvc_vchan_info info;
    struct kvc_vchan_fds fds;
    if (c == NULL)
        return -ENOMEM;
    /* Larger than u32 cannot be honoured; the daemon refuses UINT32_MAX. */
    uint32_t rmin = read_min > UINT32_MAX ? UINT32_MAX : (uint32_t)read_min;
    uint32_t wmin = write_min > UINT32_MAX ? UINT32_MAX : (uint32_t)write_min;
    int rc = kvc_conn_open(&c->conn);
    if (rc == 0)
        rc = kvc_request_server_init(&c->conn, domain, port, rmin, wmin);
    if (rc == 0)
        rc = kvc_recv_vchan_reply(&c->conn, 0, &info, &fds);
    if (rc == 0)
        rc = chan_attach_region(c, &info, &fds, KVC_ROLE_SERVER);
    if (rc < 0) {
        chan_release(c);
        chan_free(c);
        return rc;
    }
    __atomic_store_n(&c->state, KVC_CHAN_READY, __ATOMIC_RELEASE);
    *out = c;
    return 0;
}

int kvc_chan_client_start(struct kvc_chan **out, uint32_t domain, uint32_t port, int *watch_fd)
{
    struct kvc_chan *c = chan_alloc();
    if (c == NULL)
        return -ENOMEM;
    int rc = kvc_conn_open(&c->conn);
    if (rc == 0)
        rc = kvc_request_client_init(&c->conn, domain, port, KVC_TIMEOUT_INFINITE);
    if (rc < 0) {
        chan_release(c);
        chan_free(c);
        return rc;
    }
    c->domain = domain;
    c->port = port;
    c->state = KVC_CHAN_PENDING;
    if (watch_fd != NULL)
        *watch_fd = c->conn.fd;
    *out = c;
    return 0;
}

static int client_complete(struct kvc_chan *c, int nonblock)
{
    struct kvc_vchan_info info;
    struct kvc_vchan_fds fds;
    for (;;) {
        int rc = kvc_recv_vchan_reply(&c->conn, nonblock, &info, &fds);
        if (rc == -ETIMEDOUT) {
            /* A daemon that bounds "forever": ask again. */
            rc = kvc_request_client_init(&c->conn, c->domain, c->port, KVC_TIMEOUT_INFINITE);
            if (rc == 0)
                continue;
        }
        if (rc < 0)
            return rc;
        return chan_attach_region(c, &info, &fds, KVC_ROLE_CLIENT);
    }
}

int kvc_chan_client_finish(struct kvc_chan *c, bool blocking)
{
    int rc;
    pthread_mutex_lock(&c->lock);
    switch (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE)) {
    case KVC_CHAN_READY: rc = 0; break;
    case KVC_CHAN_FAILED: rc = -ENOTCONN; break;
    default:
        rc = client_complete(c, 1);
        if (rc == -EAGAIN) {
            rc = 1;
        } else if (rc < 0) {
            __atomic_store_n(&c->state, KVC_CHAN_FAILED, __ATOMIC_RELEASE);
        } else {
            __atomic_store_n(&c->blocking, blocking ? 1 : 0, __ATOMIC_RELAXED);
            __atomic_store_n(&c->state, KVC_CHAN_READY, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int kvc_chan_client_init(struct kvc_chan **out, uint32_t domain, uint32_t port)
{
    struct kvc_chan *c;
    int rc = kvc_chan_client_start(&c, domain, port, NULL);
    if (rc < 0)
        return rc;
    rc = client_complete(c, 0);
    if (rc < 0) {
        chan_release(c);
        chan_free(c);
        return rc;
    }
    __atomic_store_n(&c->state, KVC_CHAN_READY, __ATOMIC_RELEASE);
    *out = c;
    return 0;
}

int kvc_chan_from_parts(struct kvc_chan **out, void *region, size_t len, int role, unsigned c2s_order,
                        unsigned s2c_order, int wait_fd, int kick_fd, int owns_map)
{
    struct kvc_chan *c = chan_alloc();
    if (c == NULL)
        return -ENOMEM;
    c->wait_fd = wait_fd;
    c->kick_fd = kick_fd;
    c->map = region;
    c->map_len = len;
    c->owns_map = owns_map;
    int rc = set_nonblock(wait_fd);
    if (rc == 0)
        rc = ring_setup(c, role, c2s_order, s2c_order);
    if (rc == 0 && role == KVC_ROLE_CLIENT)
        rc = client_attach(c);
    if (rc < 0) {
        chan_release(c);
        chan_free(c);
        return rc;
    }
    c->state = KVC_CHAN_READY;
    *out = c;
    return 0;
}

/* ---- waiting ---- */

/* Sleeps until an event arrives on the wait fd and consumes it. */
static int poll_and_consume(struct kvc_chan *c)
{
    /* The daemon connection too (poll ignores a negative fd): see select_setup(). */
    struct pollfd p[2] = { { .fd = c->wait_fd, .events = POLLIN }, { .fd = c->conn.fd, .events = POLLIN | POLLRDHUP } };
    for (;;) {
        if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
            return -ENOTCONN;
        int n = poll(p, 2, -1);
        int woke = 0;
        if (n > 0 && p[1].revents != 0) {
            woke = conn_events(c);
            if (woke < 0) {
                daemon_lost(c);
                return -ENOTCONN;
            }
        }
        if (n > 0 && (p[0].revents != 0 || woke))
            break;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
    if (p[0].revents & (POLLERR | POLLNVAL))
        return -EIO;
    (void)kvc_eventfd_drain(c->wait_fd);
    c->wakeups++;
    return 0;
}

static inline uint64_t wq_snapshot(struct kvc_chan *c)
{
    return __atomic_load_n(&c->wq_gen, __ATOMIC_ACQUIRE);
}

/*
 * Waits until an event is consumed after the snapshot `gen` was taken: either
 * by this thread (it becomes the poller) or by whichever thread is polling.
 */
static int wq_wait(struct kvc_chan *c, uint64_t gen)
{
    int rc = 0;
    pthread_mutex_lock(&c->wq_lock);
    while (__atomic_load_n(&c->wq_gen, __ATOMIC_RELAXED) == gen) {
        if (!c->wq_polling) {
            c->wq_polling = 1;
            pthread_mutex_unlock(&c->wq_lock);
            rc = poll_and_consume(c);
            pthread_mutex_lock(&c->wq_lock);
            c->wq_polling = 0;
            __atomic_store_n(&c->wq_gen, c->wq_gen + 1, __ATOMIC_RELEASE);
            pthread_cond_broadcast(&c->wq_cond);
            break;
        }
        pthread_cond_wait(&c->wq_cond, &c->wq_lock);
    }
    pthread_mutex_unlock(&c->wq_lock);
    return rc;
}

static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Bounded spin (ring-protocol.md §8): polls the peer index for up to *budget ns (the clock is
 * read every 64 polls). Returns 1 if the condition came true, 0 if not, <0 error.
 */
static int spin_until(struct kvc_chan *c, uint64_t budget, int writable, size_t min)
{
    if (budget == 0)
        return 0;
    uint64_t deadline = mono_ns() + budget;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            long a = writable ? kvc_ring_peek_writable(&c->ring) : kvc_ring_peek_readable(&c->ring);
            if (a < 0)
                return (int)a;
            if ((size_t)a >= min)
                return 1;
            cpu_relax();
        }
        if (mono_ns() >= deadline)
            return 0;
    }
}

/*
 * Then request → fence → re-check → sleep (ring-protocol.md §5.1). The spin budget adapts to
 * whether spinning pays: a spin that catches the peer doubles it (up to the
 * maximum), one that has to give up halves it, down to no spinning at all.
 * When the peer cannot run while we spin (both on one CPU, an overcommitted
 * VM) every spin fails and spinning stops instead of adding a full spin to
 * every round trip; when it can, spins succeed and stay at the maximum.
 * Once every 64 sleeps a decayed side probes with a full spin: two sides that
 * both stopped spinning can only find out together that they now run on
 * different CPUs if one of them spins long enough to see the other answer.
 */
static int wait_for(struct kvc_chan *c, int writable, size_t min)
{
    uint64_t *budget = writable ? &c->spin_tx_ns : &c->spin_rx_ns;
    unsigned *sleeps = writable ? &c->spin_tx_sleeps : &c->spin_rx_sleeps;
    uint64_t spin = *budget == 0 && (*sleeps & 63) == 63 ? c->spin_max_ns : *budget;
    int rc = spin_until(c, spin, writable, min);
    if (rc < 0)
        return rc;
    if (rc > 0) {
        uint64_t grown = spin * 2 > MIN_SPIN_NS ? spin * 2 : MIN_SPIN_NS;
        *budget = grown < c->spin_max_ns ? grown : c->spin_max_ns;
        return 0;
    }
    *budget = *budget / 2 >= MIN_SPIN_NS ? *budget / 2 : 0;
    ++*sleeps;
    uint64_t gen = wq_snapshot(c);
    rc = writable ? kvc_ring_prepare_wait_writable(&c->ring, min) : kvc_ring_prepare_wait_readable(&c->ring, min);
    if (rc <= 0)
        return rc < 0 ? rc : 0;
    return wq_wait(c, gen);
}

static inline int wait_readable(struct kvc_chan *c, size_t min)
{
    return wait_for(c, 0, min);
}

static inline int wait_writable(struct kvc_chan *c, size_t min)
{
    return wait_for(c, 1, min);
}

int kvc_chan_wait(struct kvc_chan *c)
{
    if (!kvc_chan_ready(c))
        return 0;
    return wq_wait(c, wq_snapshot(c));
}

void kvc_chan_clear_event(struct kvc_chan *c)
{
    if (!kvc_chan_ready(c))
        return;
    (void)kvc_eventfd_drain(c->wait_fd);
    /* The daemon's report of a dead peer is consumed too (the select fd must go quiet); the
     * peer's CLOSED state is in shared memory for whoever looks next. */
    if (conn_events(c) < 0)
        daemon_lost(c);
}

/* ---- I/O: the libxenvchan contract (docs/clib.md, API notes) ---- */

int kvc_chan_read(struct kvc_chan *c, void *buf, size_t n, bool blocking)
{
    if (!kvc_chan_ready(c))
        return -EAGAIN;
    if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
        return -ENOTCONN;
    if (n > INT_MAX)
        n = INT_MAX;
    for (;;) {
        long r = kvc_ring_read(&c->ring, buf, n);
        if (r > 0)
            return (int)r;
        if (r < 0)
            return (int)r;
        if (n == 0 || !blocking)
            return 0;
        int rc = wait_readable(c, 1);
        if (rc < 0)
            return rc;
    }
}

int kvc_chan_recv(struct kvc_chan *c, void *buf, size_t n, bool blocking)
{
    if (!kvc_chan_ready(c))
        return -EAGAIN;
    if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
        return -ENOTCONN;
    if (n > c->ring.rx_size) {
        /* Can never be satisfied. As in Xen: a closed peer or a blocking call
         * fails, a non-blocking call reports "nothing yet". */
        if (kvc_ring_is_corrupt(&c->ring))
            return -EPROTO;
        if (kvc_ring_peer_state(&c->ring) == KVC_STATE_CLOSED)
            return -EPIPE;
        return blocking ? -EMSGSIZE : 0;
    }
    for (;;) {
        long r = kvc_ring_recv(&c->ring, buf, n);
        if (r > 0)
            return (int)r;
        if (r < 0)
            return (int)r;
        if (n == 0 || !blocking)
            return 0;
        int rc = wait_readable(c, n);
        if (rc < 0)
            return rc;
    }
}

int kvc_chan_send(struct kvc_chan *c, const void *buf, size_t n, bool blocking)
{
    if (!kvc_chan_ready(c))
        return -EAGAIN;
    if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
        return -ENOTCONN;
    for (;;) {
        long r = kvc_ring_send(&c->ring, buf, n);
        if (r > 0)
            return (int)r;
        if (r == -EMSGSIZE && !blocking)
            return 0;
        if (r < 0)
            return (int)r;
        if (n == 0 || !blocking)
            return 0;
        int rc = wait_writable(c, n);
        if (rc < 0)
            return rc;
    }
}

int kvc_chan_write(struct kvc_chan *c, const void *buf, size_t n, bool blocking)
{
    if (!kvc_chan_ready(c))
        return -EAGAIN;
    if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
        return -ENOTCONN;
    if (n > INT_MAX)
        n = INT_MAX;
    if (!blocking) {
        long r = kvc_ring_write(&c->ring, buf, n);
        return (int)r;
    }
    size_t done = 0;
    for (;;) {
        long r = kvc_ring_write(&c->ring, (const uint8_t *)buf + done, n - done);
        if (r < 0)
            return (int)r;
        done += (size_t)r;
        if (done == n)
            return (int)n;
        int rc = wait_writable(c, 1);
        if (rc < 0)
            return rc;
    }
}

/*
 * libkvmchan's event fd is level-like (docs/clib.md, "Wake-ups"): keep the request for the
 * peer's next write standing (ring-protocol.md §5.1), and if data is already there, or the peer
 * closed, make sure an event is pending — a kick that arrived earlier may have been consumed
 * by a blocking call or clear_eventfd().
 */
void kvc_chan_keep_data_event(struct kvc_chan *c)
{
    if (!kvc_chan_ready(c))
        return;
    long avail = kvc_ring_data_ready(&c->ring);
    if (avail != 0 || kvc_ring_peer_state(&c->ring) == KVC_STATE_CLOSED)
        kick_self(c);
}

/* ---- queries ---- */

int kvc_chan_data_ready(struct kvc_chan *c)
{
    if (!kvc_chan_ready(c))
        return 0;
    long r = kvc_ring_data_ready(&c->ring);
    return r < 0 ? 0 : (int)r;
}

int kvc_chan_buffer_space(struct kvc_chan *c)
{
    if (!kvc_chan_ready(c))
        return 0;
    long r = kvc_ring_buffer_space(&c->ring);
    return r < 0 ? 0 : (int)r;
}

int kvc_chan_is_open(struct kvc_chan *c)
{
    if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
        return 0;
    switch (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE)) {
    case KVC_CHAN_PENDING: return 2;
    case KVC_CHAN_FAILED: return 0;
    default: break;
    }
    switch (kvc_ring_peer_state(&c->ring)) {
    case KVC_STATE_CONNECTED: return 1;
    case KVC_STATE_WAITING: return 2;
    default: return 0;
    }
}

/* ---- close ---- */

void kvc_chan_close(struct kvc_chan *c)
{
    if (c == NULL)
        return;
    if (getpid() != c->owner) {
        /* A forked child: the vchan belongs to the parent. Release our copies
         * only; never touch shared memory or the parent's daemon connection
         * (its locks may have been held by a thread that does not exist here). */
        chan_release(c);
        free(c);
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == KVC_CHAN_READY && c->map != NULL)
        kvc_ring_close(&c->ring);
    chan_release(c);
    pthread_mutex_unlock(&c->lock);
    chan_free(c);
}
