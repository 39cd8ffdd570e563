/*
 * The vchan core under real concurrency, without a daemon: both ends live in
 * this process on one shared region with real eventfds, and each end has a
 * reader thread and a writer thread (the threading Xen allows). Checks byte
 * exactness of full-duplex streams and packets across wrap points, that no
 * wake-up is ever lost (a lost one hangs: the watchdog fails the test), and
 * close/EOF semantics while the peer is blocked.
 */
#define _GNU_SOURCE
#include "../src/chan.h"
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

struct pair {
    void *region;
    size_t len;
    struct kvc_chan *server, *client;
};

static void make_pair(struct pair *p, unsigned c2s, unsigned s2c, unsigned spin)
{
    p->len = kvc_ring_region_length(c2s, s2c);
    p->region = mmap(NULL, p->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p->region != MAP_FAILED, "mmap");
    kvc_ring_init_region(p->region, c2s, s2c);
    int efd_s = eventfd(0, EFD_CLOEXEC), efd_c = eventfd(0, EFD_CLOEXEC);
    REQUIRE(efd_s >= 0 && efd_c >= 0, "eventfd");
    /* Each end owns its own descriptors (as when the daemon passes them). */
    REQUIRE(kvc_chan_from_parts(&p->server, p->region, p->len, KVC_ROLE_SERVER, c2s, s2c, efd_s, dup(efd_c), 0) == 0,
            "server");
    REQUIRE(kvc_chan_from_parts(&p->client, p->region, p->len, KVC_ROLE_CLIENT, c2s, s2c, efd_c, dup(efd_s), 0) == 0,
            "client");
    /* spin in microseconds of maximum spin before sleeping */
    p->server->spin_max_ns = p->server->spin_rx_ns = p->server->spin_tx_ns = (uint64_t)spin * 1000;
    p->client->spin_max_ns = p->client->spin_rx_ns = p->client->spin_tx_ns = (uint64_t)spin * 1000;
}

static void free_pair(struct pair *p)
{
    kvc_chan_close(p->server);
    kvc_chan_close(p->client);
    munmap(p->region, p->len);
}

/* Deterministic byte stream: byte i of stream `id`. */
static inline uint8_t stream_byte(unsigned id, uint64_t i)
{
    uint64_t x = (i >> 3) * 0x9E3779B97F4A7C15ULL + id * 0xD1B54A32D192ED03ULL;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 32;
    return (uint8_t)(x >> ((i & 7) * 8));
}

struct job {
    struct kvc_chan *c;
    unsigned id;
    uint64_t total;
    int packets; /* send/recv framed packets instead of a stream */
    unsigned long long seed;
    uint64_t errors;
    uint64_t done;
};

static void *writer(void *arg)
{
    struct job *j = arg;
    uint8_t *buf = malloc(70000);
    uint64_t pos = 0;
    size_t cap = j->packets ? j->c->ring.tx_size : 65536;
    while (pos < j->total) {
        size_t n = 1 + t_rand(&j->seed) % (t_rand(&j->seed) % 4 == 0 ? cap : 5000 < cap ? 5000 : cap);
        if (n > j->total - pos)
            n = (size_t)(j->total - pos);
        for (size_t i = 0; i < n; i++)
            buf[i] = stream_byte(j->id, pos + i);
        int rc = j->packets ? kvc_chan_send(j->c, buf, n, true) : kvc_chan_write(j->c, buf, n, true);
        if (rc != (int)n) {
            fprintf(stderr, "writer %u: rc %d at %llu\n", j->id, rc, (unsigned long long)pos);
            j->errors++;
            break;
        }
        pos += n;
    }
    j->done = pos;
    free(buf);
    return NULL;
}

static void *reader(void *arg)
{
    struct job *j = arg;
    uint8_t *buf = malloc(70000);
    uint64_t pos = 0;
    size_t cap = j->packets ? j->c->ring.rx_size : 65536;
    while (pos < j->total) {
        size_t n = 1 + t_rand(&j->seed) % (t_rand(&j->seed) % 4 == 0 ? cap : 5000 < cap ? 5000 : cap);
        if (n > j->total - pos)
            n = (size_t)(j->total - pos);
        int rc = j->packets ? kvc_chan_recv(j->c, buf, n, true) : kvc_chan_read(j->c, buf, n, true);
        if (rc <= 0 || (j->packets && rc != (int)n)) {
            fprintf(stderr, "reader %u: rc %d at %llu\n", j->id, rc, (unsigned long long)pos);
            j->errors++;
            break;
        }
        for (int i = 0; i < rc; i++)
            if (buf[i] != stream_byte(j->id, pos + (uint64_t)i)) {
                if (j->errors++ == 0)
                    fprintf(stderr, "reader %u: byte %llu differs\n", j->id, (unsigned long long)(pos + (uint64_t)i));
            }
        pos += (uint64_t)rc;
    }
    j->done = pos;
    free(buf);
    return NULL;
}

/*
 * Full duplex: a writer and a reader thread on each end. With packets, the
 * reader's random sizes must match the writer's, so both use the same seed.
 */
static void duplex(unsigned c2s, unsigned s2c, unsigned spin, uint64_t total, int packets, unsigned long long seed)
{
    struct pair p;
    make_pair(&p, c2s, s2c, spin);
    struct job jobs[4] = {
        { .c = p.client, .id = 1, .total = total, .packets = packets, .seed = seed },     /* client writes c2s */
        { .c = p.server, .id = 1, .total = total, .packets = packets, .seed = seed },     /* server reads c2s */
        { .c = p.server, .id = 2, .total = total, .packets = packets, .seed = seed + 1 }, /* server writes s2c */
        { .c = p.client, .id = 2, .total = total, .packets = packets, .seed = seed + 1 }, /* client reads s2c */
    };
    pthread_t th[4];
    double t0 = t_now();
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, i % 2 == 0 ? writer : reader, &jobs[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    double dt = t_now() - t0;
    for (int i = 0; i < 4; i++) {
        CHECK(jobs[i].errors == 0, "duplex c2s=%u s2c=%u spin=%u packets=%d job %d: %llu errors", c2s, s2c, spin,
              packets, i, (unsigned long long)jobs[i].errors);
        CHECK(jobs[i].done == total, "job %d moved %llu of %llu", i, (unsigned long long)jobs[i].done,
              (unsigned long long)total);
    }
    printf("# duplex c2s=2^%u s2c=2^%u spin=%u %s: 2 x %.0f MiB in %.2f s, wakeups server %llu client %llu\n", c2s, s2c,
           spin, packets ? "packets" : "stream", total / 1048576.0, dt, (unsigned long long)p.server->wakeups,
           (unsigned long long)p.client->wakeups);
    free_pair(&p);
}

struct closer {
    struct kvc_chan *c;
    int delay_ms;
};

static void *close_later(void *arg)
{
    struct closer *cl = arg;
    usleep((useconds_t)cl->delay_ms * 1000);
    kvc_chan_close(cl->c);
    return NULL;
}

static void close_semantics(void)
{
    struct pair p;
    make_pair(&p, 10, 10, 0);
    uint8_t buf[2048];
    memset(buf, 0x5a, sizeof(buf));

    /* Non-blocking: nothing to read, full ring, packet too large. */
    CHECK_EQ(kvc_chan_read(p.server, buf, 10, false), 0, "empty non-blocking read");
    CHECK_EQ(kvc_chan_recv(p.server, buf, 10, false), 0, "empty non-blocking recv");
    CHECK_EQ(kvc_chan_write(p.client, buf, 2000, false), 1024, "non-blocking write fills the ring");
    CHECK_EQ(kvc_chan_write(p.client, buf, 10, false), 0, "full ring");
    CHECK_EQ(kvc_chan_send(p.client, buf, 10, false), 0, "full ring packet");
    CHECK_EQ(kvc_chan_send(p.client, buf, 1025, false), 0, "oversized packet, non-blocking: 0 (as Xen)");
    CHECK_EQ(kvc_chan_send(p.client, buf, 1025, true), -EMSGSIZE, "oversized packet, blocking");
    CHECK_EQ(kvc_chan_recv(p.server, buf, 1025, true), -EMSGSIZE, "oversized recv, blocking");
    CHECK_EQ(kvc_chan_recv(p.server, buf, 1025, false), 0, "oversized recv, non-blocking");
    CHECK_EQ(kvc_chan_read(p.server, buf, 1000, true), 1000, "read");
    CHECK_EQ(kvc_chan_buffer_space(p.client), 1000, "space freed");

    /* The client closes with 24 bytes pending; a blocked server reader drains them, then EOF. */
    struct closer cl = { .c = p.client, .delay_ms = 50 };
    pthread_t th;
    pthread_create(&th, NULL, close_later, &cl);
    CHECK_EQ(kvc_chan_recv(p.server, buf, 100, true), -EPIPE, "recv of more than is left after close");
    pthread_join(th, NULL);
    p.client = NULL;
    CHECK_EQ(kvc_chan_is_open(p.server), 0, "is_open after peer close");
    CHECK_EQ(kvc_chan_read(p.server, buf, 10, true), 10, "drain after close");
    CHECK_EQ(kvc_chan_read(p.server, buf, 100, true), 14, "drain the rest");
    CHECK_EQ(kvc_chan_read(p.server, buf, 100, true), -EPIPE, "then end of stream");
    CHECK_EQ(kvc_chan_read(p.server, buf, 100, false), -EPIPE, "non-blocking too");
    CHECK_EQ(kvc_chan_write(p.server, buf, 1, true), -EPIPE, "write to a closed peer");
    CHECK_EQ(kvc_chan_send(p.server, buf, 1, false), -EPIPE, "send to a closed peer");
    kvc_chan_close(p.server);
    munmap(p.region, p.len);

    /* A writer blocked on a full ring fails when the reader closes. */
    make_pair(&p, 10, 10, 10);
    CHECK_EQ(kvc_chan_write(p.client, buf, 1024, true), 1024, "fill");
    cl.c = p.server;
    pthread_create(&th, NULL, close_later, &cl);
    CHECK_EQ(kvc_chan_write(p.client, buf, 10, true), -EPIPE, "blocked writer sees the close");
    pthread_join(th, NULL);
    kvc_chan_close(p.client);
    munmap(p.region, p.len);

    /* Corruption: a peer that publishes an impossible index; the event fd fires. */
    make_pair(&p, 10, 10, 0);
    uint32_t *c2s_prod = (uint32_t *)(void *)((uint8_t *)p.region + KVC_OFF_C2S_PROD);
    __atomic_store_n(c2s_prod, 5000u, __ATOMIC_RELEASE);
    kvc_chan_clear_event(p.server);
    CHECK_EQ(kvc_chan_read(p.server, buf, 10, true), -EPROTO, "corrupt ring");
    CHECK_EQ(kvc_chan_data_ready(p.server), 0, "data_ready on a corrupt ring");
    CHECK_EQ(kvc_chan_is_open(p.server), 0, "corrupt reads as disconnected");
    CHECK_EQ(kvc_chan_wait(p.server), 0, "the corruption woke our own event fd");
    CHECK_EQ(kvc_chan_write(p.server, buf, 1, true), -EPROTO, "corrupt is latched");
    free_pair(&p);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FATAL: watchdog: a blocking call never woke up (lost wake-up?)\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
    }
    _exit(3);
}

int main(void)
{
    unsigned long long seed = t_seed(0xC0FFEE);
    printf("# seed %llu (KVMCHAN_TEST_SEED)\n", seed);
    signal(SIGALRM, on_alarm);
    alarm(240);
    close_semantics();
    duplex(10, 10, 0, 24u << 20, 0, seed);       /* smallest rings, always sleeping */
    duplex(10, 11, 20, 24u << 20, 1, seed + 7);  /* packets, lopsided rings */
    duplex(16, 16, 50, 128u << 20, 0, seed + 9); /* 64 KiB rings, spinning */
    duplex(12, 10, 5, 16u << 20, 1, seed + 11);
    return t_report("vchan core under threads");
}
