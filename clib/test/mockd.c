/*
 * A minimal stand-in for kvmchand's local socket (host vchans between
 * processes of domain 0 only), for the C test suite: it lets `make check`
 * run the library's integration tests without Node, and under valgrind.
 * It implements the subset of docs/wire-protocol.md the library uses
 * (GET_VERSION, VCHAN_SERVER_INIT, VCHAN_CLIENT_INIT, VCHAN_CLOSE) and the
 * daemon's duty of ring-protocol.md §5.3: when a connection that owns a vchan
 * end goes away, mark that end CLOSED and send the survivor EVENT_PEER_CLOSED.
 *
 * usage: mockd <runtime-dir>      (SIGTERM/SIGINT to stop)
 */
#define _GNU_SOURCE
#include "../src/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define MAX_VCHANS 1024
#define FRAME_MAX (8 + 16384)

struct conn {
    int fd;
    int have_seq;
    uint32_t seq;
    /* a pending VCHAN_CLIENT_INIT */
    int waiting;
    uint32_t w_port, w_seq;
    double w_deadline; /* 0 = forever */
};

struct vchan {
    int used;
    uint32_t handle_s, handle_c;
    uint32_t port;
    int server_conn, client_conn; /* index in conns, -1 if gone */
    int had_client;
    int memfd, efd_s, efd_c; /* efd_s: the server waits on it; efd_c: the client */
    uint8_t *map;
    size_t len;
    unsigned c2s, s2c;
};

static struct conn conns[MAX_CONNS];
static struct vchan vchans[MAX_VCHANS];
static uint32_t next_handle = 1;
static volatile sig_atomic_t stop;
static char sock_path[108];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16;
}

static void reply(int ci, uint16_t id, uint32_t seq, int32_t err, const void *data, size_t len, const int *fds,
                  int nfds)
{
    uint8_t buf[64];
    put16(buf, id);
    put16(buf + 2, (uint16_t)(8 + (err == 0 ? len : 0)));
    put32(buf + 4, seq);
    put32(buf + 8, (uint32_t)err);
    put32(buf + 12, 0);
    size_t total = 16;
    if (err == 0 && len > 0) {
        memcpy(buf + 16, data, len);
        total += len;
    }
    struct iovec iov = { .iov_base = buf, .iov_len = total };
    union {
        struct cmsghdr a;
        char space[CMSG_SPACE(sizeof(int) * 4)];
    } cb;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (err == 0 && nfds > 0) {
        msg.msg_control = cb.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    }
    if (sendmsg(conns[ci].fd, &msg, MSG_NOSIGNAL) < 0)
        fprintf(stderr, "mockd: sendmsg: %s\n", strerror(errno));
}

static void vchan_free(struct vchan *v)
{
    munmap(v->map, v->len);
    close(v->memfd);
    close(v->efd_s);
    close(v->efd_c);
    memset(v, 0, sizeof(*v));
}

static void info_bytes(uint8_t *d, const struct vchan *v, int client)
{
    memset(d, 0, 40);
    put32(d, client ? v->handle_c : v->handle_s);
    d[4] = (uint8_t)client;
    d[5] = (uint8_t)(client ? v->s2c : v->c2s); /* read order */
    d[6] = (uint8_t)(client ? v->c2s : v->s2c); /* write order */
    put32(d + 8, 0);
    put32(d + 12, 0);
    put32(d + 16, v->port);
    put64(d + 24, 0);
    put64(d + 32, v->len);
}

static void attach_client(int ci, struct vchan *v, uint32_t seq)
{
    uint8_t d[40];
    v->client_conn = ci;
    v->had_client = 1;
    v->handle_c = next_handle++;
    info_bytes(d, v, 1);
    int fds[3] = { v->memfd, v->efd_c, v->efd_s };
    reply(ci, 0x0011, seq, 0, d, sizeof(d), fds, 3);
}

static struct vchan *find_server(uint32_t port)
{
    for (int i = 0; i < MAX_VCHANS; i++)
        /* A port is taken while its server is open and its client has not left. */
        if (vchans[i].used && vchans[i].port == port && vchans[i].server_conn >= 0 &&
            !(vchans[i].had_client && vchans[i].client_conn < 0))
            return &vchans[i];
    return NULL;
}

/* EVENT_PEER_CLOSED (wire-protocol.md §7.3) for the survivor's handle, on its own connection. */
static void peer_closed(int ci, uint32_t handle)
{
    uint8_t buf[16];
    put16(buf, 0x8002);
    put16(buf + 2, 8);
    put32(buf + 4, 0);
    put32(buf + 8, handle);
    put32(buf + 12, 0);
    if (send(conns[ci].fd, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        fprintf(stderr, "mockd: peer closed event: %s\n", strerror(errno));
}

/* ring-protocol.md §5.3 "death": mark the side closed, tell the survivor as kvmchand does (over
 * its connection, never through the eventfds). */
static void side_gone(struct vchan *v, int client)
{
    uint32_t *state = (uint32_t *)(void *)(v->map + (client ? KVC_OFF_CLIENT_STATE : KVC_OFF_SERVER_STATE));
    __atomic_store_n(state, KVC_STATE_CLOSED, __ATOMIC_RELEASE);
    int survivor = client ? v->server_conn : v->client_conn;
    if (survivor >= 0)
        peer_closed(survivor, client ? v->handle_s : v->handle_c);
    if (client)
        v->client_conn = -1;
    else
        v->server_conn = -1;
    if (v->server_conn < 0 && v->client_conn < 0)
        vchan_free(v);
}

static void conn_gone(int ci)
{
    for (int i = 0; i < MAX_VCHANS; i++) {
        if (vchans[i].used && vchans[i].server_conn == ci)
            side_gone(&vchans[i], 0);
        if (vchans[i].used && vchans[i].client_conn == ci)
            side_gone(&vchans[i], 1);
    }
    close(conns[ci].fd);
    memset(&conns[ci], 0, sizeof(conns[ci]));
    conns[ci].fd = -1;
}

static void server_init(int ci, uint32_t seq, const uint8_t *p)
{
    uint32_t peer = get32(p), port = get32(p + 4), rmin = get32(p + 8), wmin = get32(p + 12);
    if (peer != 0) {
        reply(ci, 0x0010, seq, -ESRCH, NULL, 0, NULL, 0);
        return;
    }
    if (find_server(port) != NULL) {
        reply(ci, 0x0010, seq, -EEXIST, NULL, 0, NULL, 0);
        return;
    }
    int c2s = kvc_ring_order_for_min(rmin), s2c = kvc_ring_order_for_min(wmin);
    if (c2s < 0 || s2c < 0) {
        reply(ci, 0x0010, seq, -EINVAL, NULL, 0, NULL, 0);
        return;
    }
    struct vchan *v = NULL;
    for (int i = 0; i < MAX_VCHANS && v == NULL; i++)
        if (!vchans[i].used)
            v = &vchans[i];
    if (v == NULL) {
        reply(ci, 0x0010, seq, -ENOSPC, NULL, 0, NULL, 0);
        return;
    }
    v->len = kvc_ring_region_length((unsigned)c2s, (unsigned)s2c);
    v->memfd = memfd_create("kvmchan-mockd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (v->memfd < 0 || ftruncate(v->memfd, (off_t)v->len) < 0) {
        reply(ci, 0x0010, seq, -errno, NULL, 0, NULL, 0);
        if (v->memfd >= 0)
            close(v->memfd);
        return;
    }
    fcntl(v->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    v->map = mmap(NULL, v->len, PROT_READ | PROT_WRITE, MAP_SHARED, v->memfd, 0);
    v->efd_s = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    v->efd_c = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    kvc_ring_init_region(v->map, (unsigned)c2s, (unsigned)s2c);
    v->used = 1;
    v->c2s = (unsigned)c2s;
    v->s2c = (unsigned)s2c;
    v->port = port;
    v->server_conn = ci;
    v->client_conn = -1;
    v->had_client = 0;
    v->handle_s = next_handle++;
    uint8_t d[40];
    info_bytes(d, v, 0);
    int fds[3] = { v->memfd, v->efd_s, v->efd_c };
    reply(ci, 0x0010, seq, 0, d, sizeof(d), fds, 3);
    /* Clients waiting for this port, oldest first: one gets it, the others are busy. */
    for (int i = 0; i < MAX_CONNS; i++) {
        if (conns[i].fd >= 0 && conns[i].waiting && conns[i].w_port == port) {
            conns[i].waiting = 0;
            if (!v->had_client)
                attach_client(i, v, conns[i].w_seq);
            else
                reply(i, 0x0011, conns[i].w_seq, -EBUSY, NULL, 0, NULL, 0);
        }
    }
}

static void client_init(int ci, uint32_t seq, const uint8_t *p)
{
    uint32_t dom = get32(p), port = get32(p + 4), timeout = get32(p + 8), flags = get32(p + 12);
    if (flags != 0) {
        reply(ci, 0x0011, seq, -EINVAL, NULL, 0, NULL, 0);
        return;
    }
    if (dom != 0) {
        reply(ci, 0x0011, seq, -ESRCH, NULL, 0, NULL, 0);
        return;
    }
    struct vchan *v = find_server(port);
    if (v != NULL) {
        if (v->had_client)
            reply(ci, 0x0011, seq, -EBUSY, NULL, 0, NULL, 0);
        else
            attach_client(ci, v, seq);
        return;
    }
    if (timeout == 0) {
        reply(ci, 0x0011, seq, -ENOENT, NULL, 0, NULL, 0);
        return;
    }
    conns[ci].waiting = 1;
    conns[ci].w_port = port;
    conns[ci].w_seq = seq;
    conns[ci].w_deadline = timeout == 0xFFFFFFFFu ? 0 : now() + timeout / 1000.0;
}

static void vchan_close(int ci, uint32_t seq, const uint8_t *p)
{
    uint32_t handle = get32(p);
    for (int i = 0; i < MAX_VCHANS; i++) {
        struct vchan *v = &vchans[i];
        if (v->used && v->server_conn == ci && v->handle_s == handle) {
            side_gone(v, 0);
            reply(ci, 0x0012, seq, 0, NULL, 0, NULL, 0);
            return;
        }
        if (v->used && v->client_conn == ci && v->handle_c == handle) {
            side_gone(v, 1);
            reply(ci, 0x0012, seq, 0, NULL, 0, NULL, 0);
            return;
        }
    }
    reply(ci, 0x0012, seq, -ENOENT, NULL, 0, NULL, 0);
}

/* Returns 0, or -1 when the connection must be dropped (EOF, framing error). */
static int handle(int ci)
{
    static uint8_t buf[FRAME_MAX + 1];
    char cbuf[CMSG_SPACE(sizeof(int) * 8)];
    struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
    ssize_t n = recvmsg(conns[ci].fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
            for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
                close(fd);
            }
    if (n == 0 || n < 8 || n > FRAME_MAX || (msg.msg_flags & MSG_TRUNC))
        return -1;
    uint16_t id = get16(buf), size = get16(buf + 2);
    uint32_t seq = get32(buf + 4);
    if ((size_t)size != (size_t)n - 8)
        return -1;
    if (conns[ci].have_seq && seq != conns[ci].seq + 1)
        return -1;
    conns[ci].have_seq = 1;
    conns[ci].seq = seq;
    const uint8_t *p = buf + 8;
    switch (id) {
    case 0x0001: {
        uint8_t d[8];
        put32(d, 1);
        put32(d + 4, 16384);
        reply(ci, id, seq, size == 0 ? 0 : -EINVAL, d, sizeof(d), NULL, 0);
        break;
    }
    case 0x0010:
        if (size != 16)
            reply(ci, id, seq, -EINVAL, NULL, 0, NULL, 0);
        else
            server_init(ci, seq, p);
        break;
    case 0x0011:
        if (size != 16)
            reply(ci, id, seq, -EINVAL, NULL, 0, NULL, 0);
        else if (conns[ci].waiting)
            return -1;
        else
            client_init(ci, seq, p);
        break;
    case 0x0012:
        if (size != 8)
            reply(ci, id, seq, -EINVAL, NULL, 0, NULL, 0);
        else
            vchan_close(ci, seq, p);
        break;
    default: reply(ci, id, seq, -ENOSYS, NULL, 0, NULL, 0);
    }
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mockd <runtime-dir>\n");
        return 2;
    }
    mkdir(argv[1], 0755);
    if (snprintf(sock_path, sizeof(sock_path), "%s/kvmchand.sock", argv[1]) >= (int)sizeof(sock_path))
        return 2;
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strcpy(addr.sun_path, sock_path);
    unlink(sock_path);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 128) < 0) {
        perror("mockd: listen");
        return 1;
    }
    for (int i = 0; i < MAX_CONNS; i++)
        conns[i].fd = -1;

    static struct pollfd pfds[MAX_CONNS + 1];
    static int pidx[MAX_CONNS + 1];
    while (!stop) {
        int np = 0;
        pfds[np].fd = lfd;
        pfds[np++].events = POLLIN;
        double next = 0;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (conns[i].fd < 0)
                continue;
            pidx[np] = i;
            pfds[np].fd = conns[i].fd;
            pfds[np++].events = POLLIN;
            if (conns[i].waiting && conns[i].w_deadline > 0 && (next == 0 || conns[i].w_deadline < next))
                next = conns[i].w_deadline;
        }
        int timeout = next == 0 ? -1 : (int)((next - now()) * 1000) + 1;
        if (timeout < -1)
            timeout = 0;
        int n = poll(pfds, (nfds_t)np, timeout);
        if (n < 0 && errno != EINTR)
            break;
        double t = now();
        for (int i = 0; i < MAX_CONNS; i++)
            if (conns[i].fd >= 0 && conns[i].waiting && conns[i].w_deadline > 0 && conns[i].w_deadline <= t) {
                conns[i].waiting = 0;
                reply(i, 0x0011, conns[i].w_seq, -ETIMEDOUT, NULL, 0, NULL, 0);
            }
        if (n <= 0)
            continue;
        for (int k = 1; k < np; k++) {
            if (pfds[k].revents == 0)
                continue;
            int ci = pidx[k];
            if ((pfds[k].revents & POLLIN) ? handle(ci) < 0 : 1)
                conn_gone(ci);
        }
        if (pfds[0].revents & POLLIN) {
            int fd;
            while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
                int slot = -1;
                for (int i = 0; i < MAX_CONNS && slot < 0; i++)
                    if (conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                memset(&conns[slot], 0, sizeof(conns[slot]));
                conns[slot].fd = fd;
            }
        }
    }
    unlink(sock_path);
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd >= 0)
            conn_gone(i);
    return 0;
}
