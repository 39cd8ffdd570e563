/*
 * The vchan core shared by libvchan-kvm (Qubes libvchan.h) and libkvmchan:
 * setup through the daemon, blocking and non-blocking I/O over the ring, the
 * wait/notify machinery. Both public APIs are thin wrappers around this.
 *
 * Errors are returned as negative errno values:
 *   -EPIPE    the peer closed (writes), or closed and the ring is drained (reads)
 *   -EPROTO   the peer corrupted the ring (latched)
 *   -EMSGSIZE a packet larger than the ring
 *   -EAGAIN   the vchan is not connected yet (async client)
 *   -EBADF    used after a local close
 */
#ifndef KVC_CHAN_H
#define KVC_CHAN_H

#include "daemon.h"
#include "ring.h"

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#define KVC_EXPORT __attribute__((visibility("default")))

enum kvc_chan_state {
    KVC_CHAN_PENDING = 0, /* async client waiting for its server */
    KVC_CHAN_READY = 1,
    KVC_CHAN_FAILED = 2, /* async connect failed */
};

struct kvc_chan {
    struct kvc_ring ring;
    struct kvc_conn conn;
    pthread_mutex_t lock; /* daemon connection and setup state */

    /* Waiting: one thread polls the wait fd; others sleep on the condvar until
     * the generation changes, so an event consumed by one thread is never lost
     * for another (one reader and one writer thread may block at once). */
    pthread_mutex_t wq_lock;
    pthread_cond_t wq_cond;
    uint64_t wq_gen;
    int wq_polling;

    int state;    /* enum kvc_chan_state, atomic */
    int blocking; /* atomic */
    int is_server;
    int wait_fd, kick_fd;
    int select_fd; /* epoll over wait_fd and the daemon connection; -1 without a daemon */
    int lost;      /* atomic: the daemon connection is gone (docs/wire-protocol.md §7.1) */
    void *map;
    size_t map_len;
    int owns_map;
    pid_t owner; /* process that created it (fork detection) */
    uint32_t domain, port;
    uint32_t handle; /* VchanInfo.handle: what EVENT_PEER_CLOSED names (wire-protocol.md §7.3) */
    /* Spinning before sleeping (ring-protocol.md §8): at most spin_max_ns, adapted
     * per direction (each touched only by that direction's thread). */
    uint64_t spin_max_ns;
    uint64_t spin_rx_ns, spin_tx_ns;
    unsigned spin_rx_sleeps, spin_tx_sleeps;
    uint64_t wakeups; /* times this side slept and was woken (statistics) */
};

/* Constructors: 0 and *out, or -errno. */
int kvc_chan_server_init(struct kvc_chan **out, uint32_t domain, uint32_t port, size_t read_min, size_t write_min);
int kvc_chan_client_init(struct kvc_chan **out, uint32_t domain, uint32_t port);
/* Async client: a PENDING chan and the fd to poll for progress. */
int kvc_chan_client_start(struct kvc_chan **out, uint32_t domain, uint32_t port, int *watch_fd);
/* 0 connected, 1 keep waiting, -errno failed (the chan stays FAILED; close it). */
int kvc_chan_client_finish(struct kvc_chan *c, bool blocking);

/*
 * For tests: a chan over an already initialised region and two eventfds, no
 * daemon. Takes ownership of the fds; the region is unmapped by close() only
 * if `owns_map`.
 */
int kvc_chan_from_parts(struct kvc_chan **out, void *region, size_t len, int role, unsigned c2s_order,
                        unsigned s2c_order, int wait_fd, int kick_fd, int owns_map);

/* I/O: byte count (0 = nothing in non-blocking mode) or -errno. */
int kvc_chan_read(struct kvc_chan *c, void *buf, size_t n, bool blocking);
int kvc_chan_recv(struct kvc_chan *c, void *buf, size_t n, bool blocking);
int kvc_chan_write(struct kvc_chan *c, const void *buf, size_t n, bool blocking);
int kvc_chan_send(struct kvc_chan *c, const void *buf, size_t n, bool blocking);

/* Blocks until the wait fd fires, consumes the event. 0 or -errno. */
int kvc_chan_wait(struct kvc_chan *c);
/* Consumes a pending event without blocking. */
void kvc_chan_clear_event(struct kvc_chan *c);

/* data_ready / buffer_space: arm the notification, return the count (0 on error). */
int kvc_chan_data_ready(struct kvc_chan *c);
int kvc_chan_buffer_space(struct kvc_chan *c);

/* libkvmchan: the wait fd fires whenever data is (or becomes) readable or the peer closed. */
void kvc_chan_keep_data_event(struct kvc_chan *c);

/* VCHAN_DISCONNECTED 0 / CONNECTED 1 / WAITING 2, from shared memory. */
int kvc_chan_is_open(struct kvc_chan *c);

static inline int kvc_chan_ready(const struct kvc_chan *c)
{
    return __atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == KVC_CHAN_READY;
}

void kvc_chan_close(struct kvc_chan *c);

#endif
