/*
 * libvchan.h contract tests (docs/clib.md: API notes, Errors, Tests), through the
 * public API of libvchan-kvm.so and a running daemon (KVMCHAN_RUNTIME_DIR):
 * ring geometry, blocking/async connect, every call in blocking and
 * non-blocking mode with edge cases, close and death of the peer, re-init,
 * fork and thread safety, descriptor leaks.
 */
#define _GNU_SOURCE
#include <libvchan.h>

#include "harness.h"

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static int next_port = 1000;

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int n;
    do
        n = poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    return n > 0 && (p.revents & POLLIN);
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

/* Server then client, both in this process (the server exists, so client_init returns at once). */
static void pair(int port, size_t rmin, size_t wmin, libvchan_t **srv, libvchan_t **cli)
{
    *srv = libvchan_server_init(0, port, rmin, wmin);
    REQUIRE(*srv != NULL, "server_init port %d", port);
    *cli = libvchan_client_init(0, port);
    REQUIRE(*cli != NULL, "client_init port %d", port);
}

static void test_geometry(void)
{
    static const struct {
        size_t rmin, wmin, rsize, wsize;
    } g[] = {
        { 0, 0, 1024, 1024 },
        { 128, 8192, 1024, 8192 },
        { 1024, 2048, 1024, 2048 },
        { 4096, 4096, 4096, 4096 },
        { 65536, 65536, 65536, 65536 },
        { 65537, 100, 131072, 1024 },
        { 1 << 20, 1 << 20, 1 << 20, 1 << 20 },
        { 1u << 26, 1024, 1u << 26, 1024 },
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        libvchan_t *s, *c;
        pair(next_port++, g[i].rmin, g[i].wmin, &s, &c);
        CHECK_EQ(libvchan_buffer_space(s), g[i].wsize, "server buffer_space for (%zu, %zu)", g[i].rmin, g[i].wmin);
        CHECK_EQ(libvchan_buffer_space(c), g[i].rsize, "client buffer_space for (%zu, %zu)", g[i].rmin, g[i].wmin);
        CHECK_EQ(libvchan_data_ready(s), 0, "data_ready");
        libvchan_close(c);
        libvchan_close(s);
    }
    errno = 0;
    libvchan_t *s = libvchan_server_init(0, next_port++, (size_t)1 << 29, 1024);
    CHECK(s == NULL, "a ring above 256 MiB is refused");
    libvchan_close(s);
    s = libvchan_server_init(0, next_port++, (size_t)1 << 40, 1024);
    CHECK(s == NULL, "a size above 4 GiB is refused, not truncated");
    libvchan_close(s);
    CHECK(libvchan_server_init(-1, next_port++, 0, 0) == NULL && errno == EINVAL, "negative domain");
}

struct connector {
    int port;
    libvchan_t *v;
    double returned_at;
};

static void *connect_thread(void *arg)
{
    struct connector *c = arg;
    c->v = libvchan_client_init(0, c->port);
    c->returned_at = t_now();
    return NULL;
}

static void test_blocking_connect(void)
{
    int port = next_port++;
    struct connector cn = { .port = port };
    pthread_t th;
    double t0 = t_now();
    pthread_create(&th, NULL, connect_thread, &cn);
    usleep(200 * 1000);
    double creating = t_now();
    libvchan_t *s = libvchan_server_init(0, port, 4096, 4096);
    REQUIRE(s != NULL, "server_init");
    pthread_join(th, NULL);
    CHECK(cn.v != NULL, "client_init waited for the server");
    CHECK(cn.returned_at >= creating && creating - t0 >= 0.19, "client_init returned only after the server appeared");
    /* The first server event is the client's connect kick. */
    int fd = libvchan_fd_for_select(s);
    CHECK(readable(fd, 2000), "server fd fires on connect");
    CHECK_EQ(libvchan_wait(s), 0, "wait consumes it");
    CHECK_EQ(libvchan_is_open(s), VCHAN_CONNECTED, "server connected");
    CHECK_EQ(libvchan_is_open(cn.v), VCHAN_CONNECTED, "client connected");
    CHECK(!readable(fd, 50), "no further event");
    libvchan_close(cn.v);
    libvchan_close(s);

    /* A server sees no event before a client attaches; is_open says WAITING. */
    s = libvchan_server_init(0, next_port++, 0, 0);
    REQUIRE(s != NULL, "server");
    CHECK_EQ(libvchan_is_open(s), VCHAN_WAITING, "waiting server");
    CHECK(!readable(libvchan_fd_for_select(s), 100), "no spurious pre-connect event");
    libvchan_close(s);
}

static void test_async_connect(void)
{
    int port = next_port++, watch = -1;
    char buf[16];
    libvchan_t *c = libvchan_client_init_async(0, port, &watch);
    REQUIRE(c != NULL && watch >= 0, "client_init_async");
    /* Half-open: every call is safe. */
    errno = 0;
    CHECK_EQ(libvchan_read(c, buf, 1), -1, "read on half-open");
    CHECK_EQ(errno, EAGAIN, "errno EAGAIN");
    errno = 0;
    CHECK(libvchan_write(c, "x", 1) == -1 && errno == EAGAIN, "write on half-open");
    CHECK(libvchan_send(c, "x", 1) == -1 && errno == EAGAIN, "send on half-open");
    CHECK(libvchan_recv(c, buf, 1) == -1 && errno == EAGAIN, "recv on half-open");
    CHECK(libvchan_fd_for_select(c) == -1 && errno == EAGAIN, "fd_for_select on half-open");
    CHECK_EQ(libvchan_wait(c), 0, "wait on half-open returns 0");
    CHECK_EQ(libvchan_is_open(c), VCHAN_WAITING, "half-open is WAITING");
    CHECK_EQ(libvchan_data_ready(c), 0, "data_ready half-open");
    CHECK_EQ(libvchan_buffer_space(c), 0, "buffer_space half-open");
    libvchan_set_blocking(c, true); /* before connect: no abort */
    CHECK(!readable(watch, 100), "watch fd quiet while no server");
    CHECK_EQ(libvchan_client_init_async_finish(c, false), 1, "still waiting");

    libvchan_t *s = libvchan_server_init(0, port, 2048, 1024);
    REQUIRE(s != NULL, "server");
    CHECK(readable(watch, 2000), "watch fd fires when the server appears");
    CHECK_EQ(libvchan_client_init_async_finish(c, false), 0, "connected");
    CHECK_EQ(libvchan_client_init_async_finish(c, false), 0, "finish again is harmless");
    CHECK_EQ(libvchan_is_open(c), VCHAN_CONNECTED, "is_open");
    CHECK(libvchan_fd_for_select(c) >= 0, "fd_for_select");
    CHECK_EQ(libvchan_buffer_space(c), 2048, "client write ring is the server's read ring");
    /* finish(…, false) made it non-blocking: an empty read returns 0 at once. */
    CHECK_EQ(libvchan_read(c, buf, 4), 0, "non-blocking after finish(false)");
    CHECK_EQ(libvchan_write(s, "hello", 5), 5, "server writes");
    CHECK_EQ(libvchan_read(c, buf, sizeof(buf)), 5, "client reads");
    CHECK(memcmp(buf, "hello", 5) == 0, "bytes");
    libvchan_close(c);
    libvchan_close(s);

    /* Abort: close a pending client; the port stays free for a real one. */
    int fds_before = count_fds();
    port = next_port++;
    c = libvchan_client_init_async(0, port, &watch);
    REQUIRE(c != NULL, "async");
    CHECK_EQ(libvchan_client_init_async_finish(c, true), 1, "pending");
    libvchan_close(c);
    CHECK_EQ(count_fds(), fds_before, "abort leaks no descriptor");
    s = libvchan_server_init(0, port, 0, 0);
    REQUIRE(s != NULL, "server after abort");
    c = libvchan_client_init(0, port);
    CHECK(c != NULL, "a client can still connect after an aborted attempt");
    libvchan_close(c);
    libvchan_close(s);

    /* Async against an existing server: the reply is there at once. */
    port = next_port++;
    s = libvchan_server_init(0, port, 0, 0);
    c = libvchan_client_init_async(0, port, &watch);
    REQUIRE(s != NULL && c != NULL, "server + async client");
    CHECK(readable(watch, 2000), "reply pending");
    CHECK_EQ(libvchan_client_init_async_finish(c, true), 0, "connected");
    libvchan_close(c);
    libvchan_close(s);
}

static void test_errors(void)
{
    int port = next_port++;
    libvchan_t *s = libvchan_server_init(0, port, 0, 0);
    REQUIRE(s != NULL, "server");
    errno = 0;
    libvchan_t *s2 = libvchan_server_init(0, port, 0, 0);
    /* The errno docs/clib.md and libvchan.h promise for a port already served. */
    CHECK(s2 == NULL && errno == EEXIST, "a second server on the same port is refused with EEXIST (errno %d)", errno);
    libvchan_close(s2);
    libvchan_t *c = libvchan_client_init(0, port);
    REQUIRE(c != NULL, "client");
    /* A second client would now wait for the port to be served again (docs/api.md "Serving
     * many clients"): test/client/vchan-api.test.ts checks that against the real daemon. */
    CHECK_EQ(libvchan_is_open(s), VCHAN_CONNECTED, "the first pair is unharmed");
    CHECK_EQ(libvchan_send(c, "ab", 2), 2, "send");
    char b[2];
    CHECK_EQ(libvchan_recv(s, b, 2), 2, "recv");
    libvchan_close(c);
    libvchan_close(s);

    errno = 0;
    c = libvchan_client_init(4242, next_port++);
    CHECK(c == NULL && (errno == ESRCH || errno == ENOENT), "unknown domain fails at once (errno %d)", errno);
    libvchan_close(c);
    libvchan_close(NULL); /* NULL-safe */
    CHECK(libvchan_read(NULL, b, 1) == -1 && errno == EINVAL, "NULL ctrl");
    CHECK_EQ(libvchan_is_open(NULL), VCHAN_DISCONNECTED, "is_open(NULL)");
}

struct delayed {
    libvchan_t *v;
    const void *data;
    size_t len, pieces;
    int delay_ms;
    int result;
};

static void *write_later(void *arg)
{
    struct delayed *d = arg;
    size_t off = 0;
    for (size_t i = 0; i < d->pieces; i++) {
        usleep((useconds_t)d->delay_ms * 1000);
        size_t n = i + 1 == d->pieces ? d->len - off : d->len / d->pieces;
        d->result = libvchan_write(d->v, (const char *)d->data + off, n);
        off += n;
    }
    return NULL;
}

static void *read_later(void *arg)
{
    struct delayed *d = arg;
    char buf[8192];
    usleep((useconds_t)d->delay_ms * 1000);
    d->result = libvchan_read(d->v, buf, d->len < sizeof(buf) ? d->len : sizeof(buf));
    return NULL;
}

static void test_io(void)
{
    libvchan_t *s, *c;
    pair(next_port++, 1024, 1024, &s, &c);
    char big[4096], out[4096];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 13 + 1);

    /* Non-blocking mode. */
    libvchan_set_blocking(s, false);
    libvchan_set_blocking(c, false);
    CHECK_EQ(libvchan_read(s, out, 10), 0, "nb read, empty");
    CHECK_EQ(libvchan_recv(s, out, 10), 0, "nb recv, empty");
    CHECK_EQ(libvchan_write(c, big, 3000), 1024, "nb write fills what fits");
    CHECK_EQ(libvchan_write(c, big, 10), 0, "nb write, full");
    CHECK_EQ(libvchan_send(c, big, 10), 0, "nb send, full");
    CHECK_EQ(libvchan_send(c, big, 1025), 0, "nb send larger than the ring: 0 (Xen)");
    CHECK_EQ(libvchan_recv(s, out, 1025), 0, "nb recv larger than the ring: 0 (Xen)");
    CHECK_EQ(libvchan_data_ready(s), 1024, "data_ready");
    CHECK_EQ(libvchan_recv(s, out, 1000), 1000, "nb recv");
    CHECK(memcmp(out, big, 1000) == 0, "bytes");
    CHECK_EQ(libvchan_recv(s, out, 25), 0, "nb recv of more than is there");
    CHECK_EQ(libvchan_read(s, out, 100), 24, "nb read takes what is there");
    CHECK(memcmp(out, big + 1000, 24) == 0, "bytes");
    CHECK_EQ(libvchan_send(c, big, 1024), 1024, "nb send of exactly the ring");
    CHECK_EQ(libvchan_read(s, out, 0), 0, "zero-length read");
    CHECK_EQ(libvchan_recv(s, out, 1024), 1024, "recv of exactly the ring");
    CHECK_EQ(libvchan_write(c, big, 0), 0, "zero-length write");

    /* Blocking mode. */
    libvchan_set_blocking(s, true);
    libvchan_set_blocking(c, true);
    errno = 0;
    CHECK(libvchan_send(c, big, 1025) == -1 && errno == EMSGSIZE, "blocking send larger than the ring fails");
    CHECK(libvchan_recv(s, out, 2000) == -1 && errno == EMSGSIZE, "blocking recv larger than the ring fails");
    /* recv waits for the whole packet, written in 4 pieces. */
    struct delayed d = { .v = c, .data = big, .len = 800, .pieces = 4, .delay_ms = 30 };
    pthread_t th;
    double t0 = t_now();
    pthread_create(&th, NULL, write_later, &d);
    CHECK_EQ(libvchan_recv(s, out, 800), 800, "blocking recv of a packet written in pieces");
    CHECK(t_now() - t0 >= 0.11, "recv waited for all pieces");
    pthread_join(th, NULL);
    CHECK(memcmp(out, big, 800) == 0, "bytes");
    /* read returns as soon as something is there. */
    d = (struct delayed){ .v = c, .data = big, .len = 10, .pieces = 1, .delay_ms = 50 };
    pthread_create(&th, NULL, write_later, &d);
    CHECK_EQ(libvchan_read(s, out, 1000), 10, "blocking read returns what arrived");
    pthread_join(th, NULL);
    /* A blocking write larger than the ring completes as the reader drains. */
    d = (struct delayed){ .v = s, .len = 4000, .delay_ms = 30 };
    pthread_create(&th, NULL, read_later, &d);
    CHECK_EQ(libvchan_write(c, big, 1024 + 500), 1524, "blocking write larger than the ring");
    pthread_join(th, NULL);
    CHECK_EQ(d.result, 1024, "reader got the first ring-full");
    CHECK_EQ(libvchan_read(s, out, 1000), 500, "then the rest");
    CHECK(memcmp(out, big + 1024, 500) == 0, "bytes");
    /* A blocking send waits for room. */
    CHECK_EQ(libvchan_write(c, big, 1000), 1000, "fill");
    d = (struct delayed){ .v = s, .len = 1000, .delay_ms = 40 };
    pthread_create(&th, NULL, read_later, &d);
    t0 = t_now();
    CHECK_EQ(libvchan_send(c, big, 500), 500, "blocking send waits for room");
    CHECK(t_now() - t0 >= 0.03, "it waited");
    pthread_join(th, NULL);
    CHECK_EQ(libvchan_recv(s, out, 500), 500, "recv");

    /* wait() really blocks until the peer does something, then consumes the event. */
    libvchan_data_ready(s);
    d = (struct delayed){ .v = c, .data = big, .len = 3, .pieces = 1, .delay_ms = 80 };
    pthread_create(&th, NULL, write_later, &d);
    t0 = t_now();
    CHECK_EQ(libvchan_wait(s), 0, "wait");
    CHECK(t_now() - t0 >= 0.07, "wait blocked until the write (%.3f s)", t_now() - t0);
    pthread_join(th, NULL);
    CHECK(!readable(libvchan_fd_for_select(s), 0), "event consumed");
    CHECK_EQ(libvchan_data_ready(s), 3, "data is there");
    CHECK_EQ(libvchan_read(s, out, 3), 3, "read it");
    libvchan_close(c);
    libvchan_close(s);
}

static void test_peer_close(void)
{
    libvchan_t *s, *c;
    char out[256];
    pair(next_port++, 1024, 1024, &s, &c);
    int fd = libvchan_fd_for_select(s);
    while (readable(fd, 0))
        libvchan_wait(s);
    CHECK_EQ(libvchan_write(c, "0123456789", 10), 10, "write before close");
    libvchan_close(c);
    CHECK(readable(fd, 2000), "close fires the peer's fd");
    CHECK_EQ(libvchan_wait(s), 0, "consume");
    CHECK_EQ(libvchan_is_open(s), VCHAN_DISCONNECTED, "is_open 0");
    CHECK_EQ(libvchan_data_ready(s), 10, "data still there");
    errno = 0;
    CHECK_EQ(libvchan_write(s, "x", 1), -1, "write to closed peer");
    CHECK_EQ(libvchan_send(s, "x", 1), -1, "send to closed peer");
    CHECK_EQ(libvchan_recv(s, out, 20), -1, "recv of more than is left");
    CHECK_EQ(libvchan_recv(s, out, 4), 4, "recv drains");
    CHECK_EQ(libvchan_read(s, out, 100), 6, "read drains");
    CHECK(memcmp(out, "456789", 6) == 0, "bytes");
    CHECK_EQ(libvchan_read(s, out, 100), -1, "then -1");
    libvchan_set_blocking(s, false);
    CHECK_EQ(libvchan_read(s, out, 100), -1, "also non-blocking");
    libvchan_close(s);

    /* Server closes: a client blocked in read wakes with -1. */
    pair(next_port++, 1024, 1024, &s, &c);
    struct delayed d = { .v = c, .len = 10 };
    pthread_t th;
    pthread_create(&th, NULL, read_later, &d);
    usleep(50 * 1000);
    libvchan_close(s);
    pthread_join(th, NULL);
    CHECK_EQ(d.result, -1, "blocked reader sees the close");
    CHECK_EQ(libvchan_is_open(c), VCHAN_DISCONNECTED, "client sees server gone");
    libvchan_close(c);
}

struct killer {
    pid_t pid;
    int delay_ms;
};

static void *kill_later(void *arg)
{
    struct killer *k = arg;
    usleep((useconds_t)k->delay_ms * 1000);
    kill(k->pid, SIGKILL);
    return NULL;
}

/*
 * The peer process dies without closing: the daemon marks it closed and says so on our own
 * connection (wire-protocol.md §7.3) — the only word we get: nobody writes our eventfd then.
 */
static void test_peer_death(void)
{
    int port = next_port++;
    libvchan_t *s = libvchan_server_init(0, port, 4096, 4096);
    REQUIRE(s != NULL, "server");
    int fd = libvchan_fd_for_select(s);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        libvchan_close(s);
        libvchan_t *c = libvchan_client_init(0, port);
        if (c == NULL || libvchan_write(c, "last words", 10) != 10)
            _exit(1);
        for (;;)
            pause();
    }
    double t0 = t_now();
    while (libvchan_data_ready(s) < 10 && t_now() - t0 < 10)
        readable(fd, 10);
    /* Consume the data's kick (and the client's attach kick): from here on only the daemon's
     * report of the death can make the select fd readable. */
    while (readable(fd, 0))
        CHECK_EQ(libvchan_wait(s), 0, "wait for the pending kicks");
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status), "child killed");
    t0 = t_now();
    CHECK(readable(fd, 5000), "the select fd fires on the peer's death (%.2f s)", t_now() - t0);
    CHECK_EQ(libvchan_wait(s), 0, "wait consumes the death report");
    CHECK(!readable(fd, 50), "the select fd is quiet once wait consumed it (a select loop does not spin)");
    int open = libvchan_is_open(s);
    CHECK_EQ(open, VCHAN_DISCONNECTED, "death detected within %.2f s", t_now() - t0);
    char out[32];
    CHECK_EQ(libvchan_read(s, out, sizeof(out)), 10, "data written before death is delivered");
    CHECK_EQ(libvchan_read(s, out, sizeof(out)), -1, "then EOF");
    libvchan_close(s);

    /* Server dies while a client waits in read. */
    port = next_port++;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        libvchan_t *sv = libvchan_server_init(0, port, 0, 0);
        if (sv == NULL)
            _exit(1);
        for (;;)
            pause();
    }
    libvchan_t *c = libvchan_client_init(0, port);
    REQUIRE(c != NULL, "client of a dying server");
    struct killer k = { .pid = pid, .delay_ms = 100 };
    pthread_t th;
    pthread_create(&th, NULL, kill_later, &k);
    errno = 0;
    CHECK_EQ(libvchan_read(c, out, 1), -1, "blocked read returns -1 when the server dies");
    CHECK_EQ(errno, EPIPE, "end of stream, not a lost daemon");
    CHECK_EQ(libvchan_is_open(c), VCHAN_DISCONNECTED, "disconnected");
    pthread_join(th, NULL);
    libvchan_close(c);
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status), "server killed");

    /* Client dies while the server waits in read: its last bytes, then EOF. */
    port = next_port++;
    s = libvchan_server_init(0, port, 4096, 4096);
    REQUIRE(s != NULL, "server of a dying client");
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        libvchan_close(s);
        libvchan_t *cl = libvchan_client_init(0, port);
        if (cl == NULL || libvchan_write(cl, "bye", 3) != 3)
            _exit(1);
        for (;;)
            pause();
    }
    CHECK_EQ(libvchan_read(s, out, 3), 3, "the client's bytes");
    k.pid = pid;
    pthread_create(&th, NULL, kill_later, &k);
    errno = 0;
    CHECK_EQ(libvchan_read(s, out, 1), -1, "blocked read returns -1 when the client dies");
    CHECK_EQ(errno, EPIPE, "end of stream, not a lost daemon");
    CHECK_EQ(libvchan_is_open(s), VCHAN_DISCONNECTED, "disconnected");
    pthread_join(th, NULL);
    libvchan_close(s);
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status), "client killed");
}

/* qubesdb reconnect: the server re-inits on the same port after its client left. */
static void test_reinit(void)
{
    int port = next_port++;
    for (int round = 0; round < 5; round++) {
        libvchan_t *s, *c;
        pair(port, 4096, 4096, &s, &c);
        CHECK_EQ(libvchan_send(c, &round, sizeof(round)), (int)sizeof(round), "round %d send", round);
        int got = -1;
        CHECK_EQ(libvchan_recv(s, &got, sizeof(got)), (int)sizeof(got), "recv");
        CHECK_EQ(got, round, "fresh ring each time");
        libvchan_close(c);
        while (libvchan_is_open(s) != VCHAN_DISCONNECTED)
            libvchan_wait(s);
        libvchan_close(s);
    }
}

static void test_fork(void)
{
    libvchan_t *s, *c;
    pair(next_port++, 4096, 4096, &s, &c);
    int port2 = next_port++;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* Child: releasing the inherited handles must not affect the parent's vchan. */
        libvchan_close(c);
        libvchan_close(s);
        libvchan_t *s2, *c2;
        s2 = libvchan_server_init(0, port2, 0, 0);
        c2 = s2 != NULL ? libvchan_client_init(0, port2) : NULL;
        int ok = c2 != NULL && libvchan_send(c2, "kid", 3) == 3;
        char b[3];
        ok = ok && libvchan_recv(s2, b, 3) == 3 && memcmp(b, "kid", 3) == 0;
        libvchan_close(c2);
        libvchan_close(s2);
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child used its own vchan");
    CHECK_EQ(libvchan_is_open(s), VCHAN_CONNECTED, "parent's server still connected");
    CHECK_EQ(libvchan_is_open(c), VCHAN_CONNECTED, "parent's client still connected");
    char b[5];
    CHECK_EQ(libvchan_send(c, "after", 5), 5, "parent still sends");
    CHECK_EQ(libvchan_recv(s, b, 5), 5, "and receives");
    CHECK(memcmp(b, "after", 5) == 0, "bytes");
    libvchan_close(c);
    libvchan_close(s);
}

struct churn {
    int base;
    int errors;
};

static void *churn_thread(void *arg)
{
    struct churn *ch = arg;
    for (int i = 0; i < 25; i++) {
        int port = ch->base + i;
        libvchan_t *s = libvchan_server_init(0, port, 1024, 1024);
        libvchan_t *c = s != NULL ? libvchan_client_init(0, port) : NULL;
        char b[64];
        if (c == NULL || libvchan_write(c, "ping", 4) != 4 || libvchan_read(s, b, 4) != 4 ||
            libvchan_write(s, "pong", 4) != 4 || libvchan_read(c, b, 4) != 4)
            ch->errors++;
        libvchan_close(c);
        libvchan_close(s);
    }
    return NULL;
}

static void test_threads_and_leaks(void)
{
    int fds_before = count_fds();
    struct churn ch[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        ch[i] = (struct churn){ .base = 20000 + i * 100 };
        pthread_create(&th[i], NULL, churn_thread, &ch[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(ch[i].errors, 0, "thread %d", i);
    }
    /* 200 back-to-back vchans (the qrexec burst pattern). */
    double t0 = t_now();
    for (int i = 0; i < 200; i++) {
        libvchan_t *s, *c;
        pair(30000 + i, 65536, 65536, &s, &c);
        libvchan_close(c);
        libvchan_close(s);
    }
    printf("# 200 vchan setups+teardowns in %.3f s (%.2f ms each)\n", t_now() - t0, (t_now() - t0) * 5);
    CHECK_EQ(count_fds(), fds_before, "no descriptor leaked");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(120);
    test_geometry();
    test_blocking_connect();
    test_async_connect();
    test_errors();
    test_io();
    test_peer_close();
    test_peer_death();
    test_reinit();
    test_fork();
    test_threads_and_leaks();
    return t_report("libvchan API contract");
}
