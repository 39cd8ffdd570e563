/*
 * The vchan ring engine in C, written from docs/ring-protocol.md (version 1).
 *
 * This layer is pure: it owns no file descriptor and never sleeps. Kicking the
 * peer is a callback; waiting is done by the caller (chan.c) after a
 * prepare_wait_* call said it should sleep (§5.1).
 *
 * Threading: one thread may read while another writes (the read and write
 * halves touch disjoint private state, like Xen's libxenvchan). Latches shared
 * by both halves (peer closed, corrupt) are accessed atomically.
 */
#ifndef KVC_RING_H
#define KVC_RING_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#define KVC_RING_MAGIC 0x4E48434Bu /* "KCHN" little-endian */
#define KVC_RING_VERSION 1u
#define KVC_RING_HEADER_SIZE 4096u
#define KVC_RING_MIN_ORDER 10u
#define KVC_RING_MAX_ORDER 28u

/* Control page offsets (§2). */
#define KVC_OFF_MAGIC 0
#define KVC_OFF_VERSION 4
#define KVC_OFF_HEADER_SIZE 6
#define KVC_OFF_C2S_ORDER 8
#define KVC_OFF_S2C_ORDER 9
#define KVC_OFF_C2S_OFFSET 12
#define KVC_OFF_S2C_OFFSET 16
#define KVC_OFF_C2S_PROD 64
#define KVC_OFF_S2C_CONS 68
#define KVC_OFF_CLIENT_STATE 72
#define KVC_OFF_C2S_WRAPS 76
#define KVC_OFF_S2C_PROD 128
#define KVC_OFF_C2S_CONS 132
#define KVC_OFF_SERVER_STATE 136
#define KVC_OFF_S2C_WRAPS 140
#define KVC_OFF_CLIENT_NOTIFY 192
#define KVC_OFF_SERVER_NOTIFY 196

/* States (§2.1). */
#define KVC_STATE_CLOSED 0u
#define KVC_STATE_CONNECTED 1u
#define KVC_STATE_WAITING 2u

/* Notify bits (§5). */
#define KVC_NOTIFY_WRITE 0x1u
#define KVC_NOTIFY_READ 0x2u

enum kvc_role { KVC_ROLE_SERVER = 0, KVC_ROLE_CLIENT = 1 };

/*
 * Errors: like the rest of the C core, ring operations return a count (>= 0) or a negative
 * errno value. The outcomes of §6:
 *   -EPIPE     peer closed: end of stream for read/recv (once drained), closed for write/send
 *   -EBADF     this side was closed (kvc_ring_close)
 *   -EPROTO    the peer broke an invariant; latched, every later call fails the same way
 *   -EMSGSIZE  packet larger than the ring
 *   -EINVAL    bad private setup
 */

typedef void (*kvc_kick_fn)(void *arg);

struct kvc_ring {
    /* Private setup: the only source of sizes and offsets (§3 step 3). */
    uint8_t *base;
    const uint8_t *rx;
    uint8_t *tx;
    uint32_t rx_size, tx_size;
    uint32_t rx_mask, tx_mask;
    int role;
    uint32_t peer_max_state;

    /* Shared words, chosen by role. */
    uint32_t *peer_prod; /* producer index of the ring we read */
    uint32_t *my_cons;   /* consumer index of the ring we read */
    uint32_t *my_prod;   /* producer index of the ring we write */
    uint32_t *peer_cons; /* consumer index of the ring we write */
    uint32_t *my_state;
    uint32_t *peer_state;
    uint32_t *my_wraps;
    uint32_t *my_notify;   /* word we consult before kicking */
    uint32_t *peer_notify; /* word the peer consults: where we ask for kicks */

    /* Private indices (§4): written to shared memory, never read back. */
    uint32_t cons;        /* read half */
    uint32_t prod, wraps; /* write half */

    /* Latches shared by both halves (atomic access). */
    int peer_closed;
    int corrupt;
    int closed;

    kvc_kick_fn kick;
    void *kick_arg;
    /* Called once when the corrupt latch is first set (may be NULL). */
    kvc_kick_fn on_corrupt;
    void *on_corrupt_arg;

    /* Statistics (each written by one half only). */
    uint64_t bytes_read, bytes_written;
};

/* Length of a region with these orders (§1). */
size_t kvc_ring_region_length(unsigned c2s_order, unsigned s2c_order);

/* Smallest order holding max(min, 1024) bytes, or -1 if above 2^28 (§3). */
int kvc_ring_order_for_min(size_t min);

/*
 * The allocator's initialisation of a fresh region (§3). Used by tests and
 * the test daemon; a real endpoint never calls it.
 */
void kvc_ring_init_region(void *region, unsigned c2s_order, unsigned s2c_order);

/*
 * Private setup of one side (§3 steps 1-3): checks the length and orders and
 * reads the header once. Returns 0, -EINVAL (bad private setup) or
 * -EPROTO (header does not match; the ring is then unusable).
 * read_cons/write_prod are the private indices to start from (0 for a fresh region).
 */
int kvc_ring_setup(struct kvc_ring *r, void *region, size_t region_len, int role, unsigned c2s_order,
                   unsigned s2c_order, uint32_t read_cons, uint32_t write_prod, kvc_kick_fn kick, void *kick_arg);

/* Stream read: bytes read (0 = nothing yet), -EPIPE (end of stream) or another -errno. */
long kvc_ring_read(struct kvc_ring *r, void *dst, size_t n);
/* Packet receive: n, 0 (not enough yet), -EPIPE (end of stream), -EMSGSIZE if n > ring, -errno. */
long kvc_ring_recv(struct kvc_ring *r, void *dst, size_t n);
/* Stream write: bytes written (possibly 0), -EPIPE (peer closed) or another -errno. */
long kvc_ring_write(struct kvc_ring *r, const void *src, size_t n);
/* Packet send: n or 0, -EPIPE (peer closed), -EMSGSIZE if n > ring, or another -errno. */
long kvc_ring_send(struct kvc_ring *r, const void *src, size_t n);

/* Counts without arming (for spinners). */
long kvc_ring_peek_readable(struct kvc_ring *r);
long kvc_ring_peek_writable(struct kvc_ring *r);
/* libvchan data_ready()/buffer_space(): arm the request, fence, count (§5.1). */
long kvc_ring_data_ready(struct kvc_ring *r);
long kvc_ring_buffer_space(struct kvc_ring *r);

/*
 * §5.1 before sleeping: request a kick, fence, re-check. Returns 1 if the
 * caller should sleep, 0 if the condition holds or the peer closed, -errno on error.
 */
int kvc_ring_prepare_wait_readable(struct kvc_ring *r, size_t min);
int kvc_ring_prepare_wait_writable(struct kvc_ring *r, size_t min);

/* Peer state as seen in shared memory: KVC_STATE_*; a corrupt ring reads CLOSED. */
unsigned kvc_ring_peer_state(struct kvc_ring *r);
int kvc_ring_is_corrupt(const struct kvc_ring *r);

/* Client setup step (§3): mark attached, ask for the server's writes, kick once. */
int kvc_ring_attach(struct kvc_ring *r);
/* §5.3: mark closed, kick unconditionally. Idempotent. */
void kvc_ring_close(struct kvc_ring *r);

#endif
