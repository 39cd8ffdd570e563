/*
 * Ring engine, from docs/ring-protocol.md. Section numbers (§) refer to it.
 *
 * Everything in shared memory is untrusted: each peer value is read once into
 * a local, checked, and never used as an offset or a length (§4, §6). Our own
 * indices are private and only ever written to shared memory.
 */
#include "ring.h"

#include "copy.h"

#include <endian.h>
#include <string.h>

/* ---- shared-memory accessors (§7). Fields are little-endian. ---- */

static inline uint32_t ld_acquire(const uint32_t *p)
{
    return le32toh(__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

static inline uint32_t ld_relaxed(const uint32_t *p)
{
    return le32toh(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static inline void st_release(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, htole32(v), __ATOMIC_RELEASE);
}

static inline void fence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline uint32_t *field(uint8_t *base, size_t off)
{
    return (uint32_t *)(void *)(base + off);
}

/* ---- geometry ---- */

size_t kvc_ring_region_length(unsigned c2s_order, unsigned s2c_order)
{
    return (size_t)KVC_RING_HEADER_SIZE + ((size_t)1 << c2s_order) + ((size_t)1 << s2c_order);
}

int kvc_ring_order_for_min(size_t min)
{
    unsigned order = KVC_RING_MIN_ORDER;
    while (order <= KVC_RING_MAX_ORDER && ((size_t)1 << order) < min)
        order++;
    return order > KVC_RING_MAX_ORDER ? -1 : (int)order;
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    put_le16(p, (uint16_t)v);
    put_le16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)get_le16(p) | ((uint32_t)get_le16(p + 2) << 16);
}

void kvc_ring_init_region(void *region, unsigned c2s_order, unsigned s2c_order)
{
    uint8_t *b = region;
    memset(b, 0, kvc_ring_region_length(c2s_order, s2c_order));
    put_le32(b + KVC_OFF_MAGIC, KVC_RING_MAGIC);
    put_le16(b + KVC_OFF_VERSION, KVC_RING_VERSION);
    put_le16(b + KVC_OFF_HEADER_SIZE, KVC_RING_HEADER_SIZE);
    b[KVC_OFF_C2S_ORDER] = (uint8_t)c2s_order;
    b[KVC_OFF_S2C_ORDER] = (uint8_t)s2c_order;
    put_le32(b + KVC_OFF_C2S_OFFSET, KVC_RING_HEADER_SIZE);
    put_le32(b + KVC_OFF_S2C_OFFSET, KVC_RING_HEADER_SIZE + (1u << c2s_order));
    st_release(field(b, KVC_OFF_CLIENT_NOTIFY), KVC_NOTIFY_WRITE);
    st_release(field(b, KVC_OFF_CLIENT_STATE), KVC_STATE_WAITING);
    st_release(field(b, KVC_OFF_SERVER_STATE), KVC_STATE_CONNECTED);
}

/* ---- latches ---- */

static long ring_fail(struct kvc_ring *r)
{
    if (!__atomic_exchange_n(&r->corrupt, 1, __ATOMIC_ACQ_REL) && r->on_corrupt != NULL)
        r->on_corrupt(r->on_corrupt_arg);
    return -EPROTO;
}

static inline long check_usable(const struct kvc_ring *r)
{
    if (__atomic_load_n(&r->corrupt, __ATOMIC_RELAXED))
        return -EPROTO;
    if (__atomic_load_n(&r->closed, __ATOMIC_RELAXED))
        return -EBADF;
    return 0;
}

int kvc_ring_is_corrupt(const struct kvc_ring *r)
{
    return __atomic_load_n(&r->corrupt, __ATOMIC_RELAXED);
}

/*
 * Reads and validates the peer's state (§2.1) and latches CLOSED. The latch is
 * release/acquire so that a reader half that finds it set (latched by the
 * writer half) still sees every index the peer published before closing.
 */
static inline long load_peer_state(struct kvc_ring *r)
{
    if (__atomic_load_n(&r->peer_closed, __ATOMIC_ACQUIRE))
        return KVC_STATE_CLOSED;
    uint32_t s = ld_acquire(r->peer_state);
    if (s > r->peer_max_state)
        return ring_fail(r);
    if (s == KVC_STATE_CLOSED)
        __atomic_store_n(&r->peer_closed, 1, __ATOMIC_RELEASE);
    return (long)s;
}

/* Bytes available to read: one acquire load of the peer index (§4 read 1-2). */
static inline long ring_avail(struct kvc_ring *r)
{
    uint32_t avail = ld_acquire(r->peer_prod) - r->cons;
    if (avail > r->rx_size)
        return ring_fail(r);
    return (long)avail;
}

/* Bytes free to write (§4 write 1). */
static inline long ring_free(struct kvc_ring *r)
{
    uint32_t used = r->prod - ld_acquire(r->peer_cons);
    if (used > r->tx_size)
        return ring_fail(r);
    return (long)(r->tx_size - used);
}

/* ---- copies: bounded by the private size, at most two pieces (copy.h) ---- */

static inline void copy_out(struct kvc_ring *r, void *dst, uint32_t k)
{
    uint32_t pos = r->cons & r->rx_mask;
    uint32_t first = r->rx_size - pos;
    if (first >= k) {
        kvc_payload_copy(dst, r->rx + pos, k);
    } else {
        kvc_payload_copy(dst, r->rx + pos, first);
        kvc_payload_copy((uint8_t *)dst + first, r->rx, k - first);
    }
}

static inline void copy_in(struct kvc_ring *r, const void *src, uint32_t k)
{
    uint32_t pos = r->prod & r->tx_mask;
    uint32_t first = r->tx_size - pos;
    if (first >= k) {
        kvc_payload_copy(r->tx + pos, src, k);
    } else {
        kvc_payload_copy(r->tx + pos, src, first);
        kvc_payload_copy(r->tx, (const uint8_t *)src + first, k - first);
    }
}

/* ---- §5.2: after publishing an index, answer a pending request ---- */

static inline void answer(struct kvc_ring *r, uint32_t bit)
{
    fence();
    if ((ld_relaxed(r->my_notify) & bit) == 0)
        return;
    uint32_t old = le32toh(__atomic_fetch_and(r->my_notify, htole32(~bit), __ATOMIC_SEQ_CST));
    if (old & bit)
        r->kick(r->kick_arg);
}

static inline void request(struct kvc_ring *r, uint32_t bit)
{
    __atomic_fetch_or(r->peer_notify, htole32(bit), __ATOMIC_SEQ_CST);
    fence();
}

static inline void consumed(struct kvc_ring *r, uint32_t k)
{
    r->cons += k;
    r->bytes_read += k;
    st_release(r->my_cons, r->cons);
    answer(r, KVC_NOTIFY_READ);
}

static inline void produced(struct kvc_ring *r, uint32_t k)
{
    uint32_t next = r->prod + k;
    if (next < r->prod) {
        /* Statistics only (§4 write 3): never read back. */
        r->wraps++;
        __atomic_store_n(r->my_wraps, htole32(r->wraps), __ATOMIC_RELAXED);
    }
    r->prod = next;
    r->bytes_written += k;
    st_release(r->my_prod, next);
    answer(r, KVC_NOTIFY_WRITE);
}

/* ---- setup (§3) ---- */

int kvc_ring_setup(struct kvc_ring *r, void *region, size_t region_len, int role, unsigned c2s_order,
                   unsigned s2c_order, uint32_t read_cons, uint32_t write_prod, kvc_kick_fn kick, void *kick_arg)
{
    memset(r, 0, sizeof(*r));
    if (region == NULL || kick == NULL || (role != KVC_ROLE_SERVER && role != KVC_ROLE_CLIENT))
        return -EINVAL;
    if (c2s_order < KVC_RING_MIN_ORDER || c2s_order > KVC_RING_MAX_ORDER || s2c_order < KVC_RING_MIN_ORDER ||
        s2c_order > KVC_RING_MAX_ORDER)
        return -EINVAL;
    if (region_len < kvc_ring_region_length(c2s_order, s2c_order) || ((uintptr_t)region & 63) != 0)
        return -EINVAL;

    uint8_t *b = region;
    uint32_t c2s_size = 1u << c2s_order, s2c_size = 1u << s2c_order;
    int server = role == KVC_ROLE_SERVER;

    r->base = b;
    r->role = role;
    r->kick = kick;
    r->kick_arg = kick_arg;
    uint8_t *c2s = b + KVC_RING_HEADER_SIZE;
    uint8_t *s2c = c2s + c2s_size;
    r->rx = server ? c2s : s2c;
    r->tx = server ? s2c : c2s;
    r->rx_size = server ? c2s_size : s2c_size;
    r->tx_size = server ? s2c_size : c2s_size;
    r->rx_mask = r->rx_size - 1;
    r->tx_mask = r->tx_size - 1;
    r->peer_prod = field(b, server ? KVC_OFF_C2S_PROD : KVC_OFF_S2C_PROD);
    r->my_cons = field(b, server ? KVC_OFF_C2S_CONS : KVC_OFF_S2C_CONS);
    r->my_prod = field(b, server ? KVC_OFF_S2C_PROD : KVC_OFF_C2S_PROD);
    r->peer_cons = field(b, server ? KVC_OFF_S2C_CONS : KVC_OFF_C2S_CONS);
    r->my_state = field(b, server ? KVC_OFF_SERVER_STATE : KVC_OFF_CLIENT_STATE);
    r->peer_state = field(b, server ? KVC_OFF_CLIENT_STATE : KVC_OFF_SERVER_STATE);
    r->my_wraps = field(b, server ? KVC_OFF_S2C_WRAPS : KVC_OFF_C2S_WRAPS);
    r->my_notify = field(b, server ? KVC_OFF_SERVER_NOTIFY : KVC_OFF_CLIENT_NOTIFY);
    r->peer_notify = field(b, server ? KVC_OFF_CLIENT_NOTIFY : KVC_OFF_SERVER_NOTIFY);
    r->peer_max_state = server ? KVC_STATE_WAITING : KVC_STATE_CONNECTED;

    /* §3 step 2: read the header once, compare with the private setup. */
    uint8_t hdr[20];
    memcpy(hdr, b, sizeof(hdr));
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (get_le32(hdr + KVC_OFF_MAGIC) != KVC_RING_MAGIC || get_le16(hdr + KVC_OFF_VERSION) != KVC_RING_VERSION ||
        get_le16(hdr + KVC_OFF_HEADER_SIZE) != KVC_RING_HEADER_SIZE || hdr[KVC_OFF_C2S_ORDER] != c2s_order ||
        hdr[KVC_OFF_S2C_ORDER] != s2c_order || get_le32(hdr + KVC_OFF_C2S_OFFSET) != KVC_RING_HEADER_SIZE ||
        get_le32(hdr + KVC_OFF_S2C_OFFSET) != KVC_RING_HEADER_SIZE + c2s_size) {
        r->corrupt = 1;
        return -EPROTO;
    }
    r->cons = read_cons;
    r->prod = write_prod;
    return 0;
}

/* ---- data transfer (§4, §6) ---- */

long kvc_ring_read(struct kvc_ring *r, void *dst, size_t n)
{
    long rc = check_usable(r);
    if (rc < 0)
        return rc;
    /* State before index (§6): data written before a close is seen after it. */
    long state = load_peer_state(r);
    if (state < 0)
        return state;
    long avail = ring_avail(r);
    if (avail < 0)
        return avail;
    if (avail == 0)
        return state == KVC_STATE_CLOSED ? -EPIPE : 0;
    uint32_t k = (size_t)avail < n ? (uint32_t)avail : (uint32_t)n;
    if (k == 0)
        return 0;
    copy_out(r, dst, k);
    consumed(r, k);
    return (long)k;
}

long kvc_ring_recv(struct kvc_ring *r, void *dst, size_t n)
{
    long rc = check_usable(r);
    if (rc < 0)
        return rc;
    if (n > r->rx_size)
        return -EMSGSIZE;
    long state = load_peer_state(r);
    if (state < 0)
        return state;
    long avail = ring_avail(r);
    if (avail < 0)
        return avail;
    if ((size_t)avail < n || n == 0)
        return state == KVC_STATE_CLOSED && (size_t)avail < n ? -EPIPE : 0;
    copy_out(r, dst, (uint32_t)n);
    consumed(r, (uint32_t)n);
    return (long)n;
}

long kvc_ring_write(struct kvc_ring *r, const void *src, size_t n)
{
    long rc = check_usable(r);
    if (rc < 0)
        return rc;
    long state = load_peer_state(r);
    if (state < 0)
        return state;
    if (state == KVC_STATE_CLOSED)
        return -EPIPE;
    long space = ring_free(r);
    if (space < 0)
        return space;
    uint32_t k = (size_t)space < n ? (uint32_t)space : (uint32_t)n;
    if (k == 0)
        return 0;
    copy_in(r, src, k);
    produced(r, k);
    return (long)k;
}

long kvc_ring_send(struct kvc_ring *r, const void *src, size_t n)
{
    long rc = check_usable(r);
    if (rc < 0)
        return rc;
    long state = load_peer_state(r);
    if (state < 0)
        return state;
    if (state == KVC_STATE_CLOSED)
        return -EPIPE;
    if (n > r->tx_size)
        return -EMSGSIZE;
    if (n == 0)
        return 0;
    long space = ring_free(r);
    if (space < 0)
        return space;
    if ((size_t)space < n)
        return 0;
    copy_in(r, src, (uint32_t)n);
    produced(r, (uint32_t)n);
    return (long)n;
}

/* ---- counts and notification requests (§5.1) ---- */

long kvc_ring_peek_readable(struct kvc_ring *r)
{
    long rc = check_usable(r);
    return rc < 0 ? rc : ring_avail(r);
}

long kvc_ring_peek_writable(struct kvc_ring *r)
{
    long rc = check_usable(r);
    return rc < 0 ? rc : ring_free(r);
}

long kvc_ring_data_ready(struct kvc_ring *r)
{
    long rc = check_usable(r);
    if (rc < 0)
        return rc;
    request(r, KVC_NOTIFY_WRITE);
    return ring_avail(r);
}

long kvc_ring_buffer_space(struct kvc_ring *r)
{
    long rc = check_usable(r);
    if (rc < 0)
        return rc;
    request(r, KVC_NOTIFY_READ);
    return ring_free(r);
}

int kvc_ring_prepare_wait_readable(struct kvc_ring *r, size_t min)
{
    long rc = check_usable(r);
    if (rc < 0)
        return (int)rc;
    request(r, KVC_NOTIFY_WRITE);
    long state = load_peer_state(r);
    if (state < 0)
        return (int)state;
    long avail = ring_avail(r);
    if (avail < 0)
        return (int)avail;
    return (size_t)avail < min && state != KVC_STATE_CLOSED;
}

int kvc_ring_prepare_wait_writable(struct kvc_ring *r, size_t min)
{
    long rc = check_usable(r);
    if (rc < 0)
        return (int)rc;
    request(r, KVC_NOTIFY_READ);
    long state = load_peer_state(r);
    if (state < 0)
        return (int)state;
    long space = ring_free(r);
    if (space < 0)
        return (int)space;
    if (min > r->tx_size)
        min = r->tx_size;
    return (size_t)space < min && state != KVC_STATE_CLOSED;
}

unsigned kvc_ring_peer_state(struct kvc_ring *r)
{
    if (kvc_ring_is_corrupt(r))
        return KVC_STATE_CLOSED;
    long s = load_peer_state(r);
    return s < 0 ? KVC_STATE_CLOSED : (unsigned)s;
}

/* ---- connect and close (§3, §5.3) ---- */

int kvc_ring_attach(struct kvc_ring *r)
{
    if (r->role != KVC_ROLE_CLIENT)
        return -EINVAL;
    long rc = check_usable(r);
    if (rc < 0)
        return (int)rc;
    st_release(r->my_state, KVC_STATE_CONNECTED);
    __atomic_fetch_or(r->peer_notify, htole32(KVC_NOTIFY_WRITE), __ATOMIC_SEQ_CST);
    r->kick(r->kick_arg);
    return 0;
}

void kvc_ring_close(struct kvc_ring *r)
{
    if (__atomic_exchange_n(&r->closed, 1, __ATOMIC_ACQ_REL))
        return;
    if (r->base == NULL)
        return;
    st_release(r->my_state, KVC_STATE_CLOSED);
    r->kick(r->kick_arg);
}
