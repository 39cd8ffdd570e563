/* kvmchand local socket client (docs/wire-protocol.md). */
#define _GNU_SOURCE
#include "daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define FRAME_HEADER 8u
#define REPLY_HEADER 8u

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

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16);
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

int kvc_socket_path(char *buf, size_t len)
{
    /* secure_getenv: a set-uid program must not be pointed at another socket. */
    const char *dir = secure_getenv("KVMCHAN_RUNTIME_DIR");
    int n;
    if (dir != NULL && dir[0] != '\0') {
        n = snprintf(buf, len, "%s/kvmchand.sock", dir);
    } else if (geteuid() == 0) {
        n = snprintf(buf, len, "/run/kvmchand/kvmchand.sock");
    } else if ((dir = secure_getenv("XDG_RUNTIME_DIR")) != NULL && dir[0] != '\0') {
        n = snprintf(buf, len, "%s/kvmchand/kvmchand.sock", dir);
    } else {
        const char *tmp = secure_getenv("TMPDIR");
        if (tmp == NULL || tmp[0] == '\0')
            tmp = "/tmp";
        n = snprintf(buf, len, "%s/kvmchand-%u/kvmchand.sock", tmp, (unsigned)geteuid());
    }
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

void kvc_conn_close(struct kvc_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->pending_id = 0;
}

int kvc_conn_send(struct kvc_conn *c, uint16_t id, const void *payload, uint16_t size)
{
    uint8_t frame[FRAME_HEADER + 64];
    if (c->fd < 0)
        return -ENOTCONN;
    if (c->pending_id != 0)
        return -EBUSY;
    if (size > sizeof(frame) - FRAME_HEADER || (c->max_payload != 0 && size > c->max_payload))
        return -EMSGSIZE;
    uint32_t seq = c->seq + 1;
    put16(frame, id);
    put16(frame + 2, size);
    put32(frame + 4, seq);
    if (size > 0)
        memcpy(frame + FRAME_HEADER, payload, size);
    ssize_t n;
    do
        n = send(c->fd, frame, FRAME_HEADER + size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if ((size_t)n != FRAME_HEADER + size)
        return -EPROTO;
    c->seq = seq;
    c->pending_id = id;
    return 0;
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

int kvc_conn_recv_reply(struct kvc_conn *c, int nonblock, void *data, size_t max, size_t *len, int *fds, int max_fds,
                        int *nfds)
{
    static const size_t bufsize = FRAME_HEADER + KVC_MAX_PAYLOAD;
    if (nfds != NULL)
        *nfds = 0;
    if (len != NULL)
        *len = 0;
    if (c->fd < 0)
        return -ENOTCONN;
    if (c->pending_id == 0)
        return -EPROTO;
    uint8_t *buf = malloc(bufsize);
    if (buf == NULL)
        return -ENOMEM;
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(int) * KVC_MAX_FDS)];
    } cbuf;
    int rc;
    for (;;) {
        struct iovec iov = { .iov_base = buf, .iov_len = bufsize };
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.space, .msg_controllen = sizeof(cbuf.space)
        };
        ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | (nonblock ? MSG_DONTWAIT : 0));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            if (rc == -EWOULDBLOCK)
                rc = -EAGAIN;
            break;
        }
        /* Collect every fd first, so that no error path can leak one. */
        int got[KVC_MAX_FDS], ngot = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                if (ngot < KVC_MAX_FDS)
                    got[ngot++] = fd;
                else
                    close(fd);
            }
        }
        if (n == 0) {
            close_fds(got, ngot);
            rc = -ECONNRESET;
            break;
        }
        if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || (size_t)n < FRAME_HEADER) {
            close_fds(got, ngot);
            rc = -EPROTO;
            break;
        }
        uint16_t id = get16(buf), size = get16(buf + 2);
        uint32_t seq = get32(buf + 4);
        if ((size_t)size != (size_t)n - FRAME_HEADER) {
            close_fds(got, ngot);
            rc = -EPROTO;
            break;
        }
        if (id & KVC_EVENT_BIT) {
            /* An event (docs/wire-protocol.md §4.3, e.g. EVENT_SHUTDOWN): not what we
             * wait for, and unknown ones must be ignored. A daemon going down
             * closes the connection next, which fails the request. */
            close_fds(got, ngot);
            continue;
        }
        if (id != c->pending_id || seq != c->seq || size < REPLY_HEADER) {
            close_fds(got, ngot);
            rc = -EPROTO;
            break;
        }
        c->pending_id = 0;
        int32_t err = (int32_t)get32(buf + FRAME_HEADER);
        if (err > 0 || err < -4095) {
            close_fds(got, ngot);
            rc = -EPROTO;
            break;
        }
        if (err < 0) {
            close_fds(got, ngot);
            rc = err;
            break;
        }
        size_t dlen = size - REPLY_HEADER;
        if (dlen > max || ngot > max_fds) {
            close_fds(got, ngot);
            rc = -EPROTO;
            break;
        }
        if (dlen > 0)
            memcpy(data, buf + FRAME_HEADER + REPLY_HEADER, dlen);
        if (len != NULL)
            *len = dlen;
        for (int i = 0; i < ngot; i++)
            fds[i] = got[i];
        if (nfds != NULL)
            *nfds = ngot;
        else
            close_fds(got, ngot);
        rc = 0;
        break;
    }
    free(buf);
    return rc;
}

int kvc_conn_call(struct kvc_conn *c, uint16_t id, const void *payload, uint16_t size, void *data, size_t max,
                  size_t *len, int *fds, int max_fds, int *nfds)
{
    int rc = kvc_conn_send(c, id, payload, size);
    if (rc < 0)
        return rc;
    return kvc_conn_recv_reply(c, 0, data, max, len, fds, max_fds, nfds);
}

int kvc_conn_open(struct kvc_conn *c)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    c->fd = -1;
    c->seq = 0;
    c->pending_id = 0;
    c->max_payload = 0;
    int rc = kvc_socket_path(addr.sun_path, sizeof(addr.sun_path));
    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    while (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        if (errno == EINTR)
            continue;
        rc = -errno;
        close(fd);
        return rc;
    }
    /* Only root or this user may be the daemon: a socket planted by another user (say in a
     * /tmp runtime directory it pre-created) would read every byte we send. SO_PEERCRED is
     * what the kernel recorded at the daemon's listen(); docs/security.md, "Trust anchors". */
    struct ucred cred;
    socklen_t cred_len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (cred.uid != 0 && cred.uid != geteuid()) {
        close(fd);
        return -EPERM;
    }
    c->fd = fd;
    /* The first seq may be anything; start from a per-connection value so that a
     * confused daemon cannot match a reply meant for another connection. */
    c->seq = (uint32_t)fd * 0x9E3779B1u;
    uint8_t reply[8];
    size_t len = 0;
    rc = kvc_conn_call(c, KVC_CMD_GET_VERSION, NULL, 0, reply, sizeof(reply), &len, NULL, 0, NULL);
    if (rc == 0 && len < 8)
        rc = -EPROTO;
    if (rc == 0 && get32(reply) != KVC_PROTOCOL_VERSION)
        rc = -EPROTONOSUPPORT;
    if (rc < 0) {
        kvc_conn_close(c);
        return rc;
    }
    c->max_payload = get32(reply + 4);
    return 0;
}

int kvc_request_server_init(struct kvc_conn *c, uint32_t peer_domain, uint32_t port, uint32_t read_min,
                            uint32_t write_min)
{
    uint8_t p[16];
    put32(p, peer_domain);
    put32(p + 4, port);
    put32(p + 8, read_min);
    put32(p + 12, write_min);
    return kvc_conn_send(c, KVC_CMD_VCHAN_SERVER_INIT, p, sizeof(p));
}

int kvc_request_client_init(struct kvc_conn *c, uint32_t server_domain, uint32_t port, uint32_t timeout_ms)
{
    uint8_t p[16];
    put32(p, server_domain);
    put32(p + 4, port);
    put32(p + 8, timeout_ms);
    put32(p + 12, 0);
    return kvc_conn_send(c, KVC_CMD_VCHAN_CLIENT_INIT, p, sizeof(p));
}

int kvc_recv_vchan_reply(struct kvc_conn *c, int nonblock, struct kvc_vchan_info *info, struct kvc_vchan_fds *vfds)
{
    uint8_t d[40];
    size_t len = 0;
    int fds[KVC_MAX_FDS], nfds = 0;
    int rc = kvc_conn_recv_reply(c, nonblock, d, sizeof(d), &len, fds, KVC_MAX_FDS, &nfds);
    if (rc < 0)
        return rc;
    if (len != sizeof(d) || nfds != 3) {
        close_fds(fds, nfds);
        return -EPROTO;
    }
    info->handle = get32(d);
    info->role = d[4];
    info->read_order = d[5];
    info->write_order = d[6];
    info->local_domain = get32(d + 8);
    info->peer_domain = get32(d + 12);
    info->port = get32(d + 16);
    info->shm_offset = get64(d + 24);
    info->shm_length = get64(d + 32);
    vfds->shm = fds[0];
    vfds->wait = fds[1];
    vfds->kick = fds[2];
    return 0;
}
