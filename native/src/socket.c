/*
 * AF_UNIX sockets: the control channel between client, daemon and QEMU, and the way fds
 * (memfds, eventfds) travel between processes (SCM_RIGHTS).
 */
#include "kvmchan.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Scratch buffers above this size are freed after each recvmsg() instead of being kept. */
#define SCRATCH_KEEP_MAX (1u << 20)

static void close_keep_errno(int fd)
{
    int saved = errno;
    close(fd);
    errno = saved;
}

/* Reads and checks a socket path argument into `addr`; throws on failure. */
static bool arg_sockaddr(napi_env env, napi_value v, const char *syscall, struct sockaddr_un *addr, char **path_out)
{
    char *path;
    size_t len;
    if (!kc_arg_string(env, v, "socketPath", &path, &len))
        return false;
    if (len == 0) {
        free(path);
        /* An empty path would autobind (bind) or fail obscurely (connect). */
        kc_throw_type(env, "ERR_INVALID_ARG_VALUE", "The \"socketPath\" argument must be a non-empty path");
        return false;
    }
    memset(addr, 0, sizeof(*addr));
    /* Keep room for the terminating NUL so the path is never silently cut. */
    if (len >= sizeof(addr->sun_path)) {
        kc_throw_errno_path(env, ENAMETOOLONG, syscall, path);
        free(path);
        return false;
    }
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, len + 1);
    *path_out = path;
    return true;
}

napi_value kc_socketpair(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int type;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_socktype(env, argv[0], "type", &type)) {
        return NULL;
    }
    int sv[2];
    if (socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
        return kc_throw_errno(env, errno, "socketpair");
    }
    napi_value result, a, b;
    if (napi_create_array_with_length(env, 2, &result) != napi_ok || napi_create_int32(env, sv[0], &a) != napi_ok ||
        napi_create_int32(env, sv[1], &b) != napi_ok || napi_set_element(env, result, 0, a) != napi_ok ||
        napi_set_element(env, result, 1, b) != napi_ok) {
        close(sv[0]);
        close(sv[1]);
        return kc_throw_napi(env, napi_generic_failure, "socketpair result");
    }
    return result;
}

napi_value kc_listen_unix(napi_env env, napi_callback_info info)
{
    napi_value argv[4];
    int type;
    int64_t backlog, mode;
    struct sockaddr_un addr;
    char *path = NULL;
    if (!kc_get_args(env, info, 4, argv, NULL) || !kc_arg_socktype(env, argv[1], "type", &type) ||
        !kc_arg_int(env, argv[2], "backlog", 0, INT32_MAX, &backlog) ||
        !kc_arg_int(env, argv[3], "mode", 0, 07777, &mode) || !arg_sockaddr(env, argv[0], "bind", &addr, &path)) {
        return NULL;
    }
    const char *failed = "socket";
    bool bound = false;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    failed = "bind";
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        goto fail;
    bound = true;
    /* Permissions are set before listen(): until then every connect() is refused, so no client
     * can slip in under the umask-derived mode. */
    failed = "chmod";
    if (chmod(path, (mode_t)mode) != 0)
        goto fail;
    /* A datagram socket is only bound: it has no connections to accept. */
    failed = "listen";
    if (type != SOCK_DGRAM && listen(fd, (int)backlog) != 0)
        goto fail;
    free(path);
    return kc_number(env, fd);

fail : {
    int err = errno;
    if (fd >= 0)
        close(fd);
    if (bound)
        unlink(path);
    kc_throw_errno_path(env, err, failed, path);
    free(path);
    return NULL;
}
}

napi_value kc_accept(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    int conn;
    do {
        conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    } while (conn < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (conn < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return kc_null(env);
        return kc_throw_errno(env, errno, "accept");
    }
    return kc_number(env, conn);
}

/* A blocking connect() interrupted by a signal keeps going in the background: wait for it. */
static int finish_interrupted_connect(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r;
    do {
        r = poll(&p, 1, -1);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -1;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        return -1;
    if (soerr != 0) {
        errno = soerr;
        return -1;
    }
    return 0;
}

napi_value kc_connect_unix(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    int type;
    struct sockaddr_un addr;
    char *path = NULL;
    if (!kc_get_args(env, info, 2, argv, NULL) || !kc_arg_socktype(env, argv[1], "type", &type) ||
        !arg_sockaddr(env, argv[0], "connect", &addr, &path)) {
        return NULL;
    }
    const char *failed = "socket";
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    failed = "connect";
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        if (errno != EINTR || finish_interrupted_connect(fd) != 0)
            goto fail;
    }
    failed = "fcntl";
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        goto fail;
    free(path);
    return kc_number(env, fd);

fail : {
    int err = errno;
    if (fd >= 0)
        close(fd);
    kc_throw_errno_path(env, err, failed, path);
    free(path);
    return NULL;
}
}

napi_value kc_shutdown(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    /* Both directions: the peer reads EOF and our own poller wakes up with it too, even when
     * duplicates of this fd live on in other processes. */
    if (shutdown(fd, SHUT_RDWR) != 0)
        return kc_throw_errno(env, errno, "shutdown");
    return kc_undefined(env);
}

/* Control buffer large enough for SCM_MAX_FD descriptors, aligned for struct cmsghdr. */
typedef union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(KC_MAX_FDS * sizeof(int))];
} fd_control;

/* Puts nfds (≤ KC_MAX_FDS) descriptors in msg as one SCM_RIGHTS message held in control. */
static void attach_fds(struct msghdr *msg, fd_control *control, const int *fds, size_t nfds)
{
    if (nfds == 0)
        return;
    memset(control, 0, sizeof(*control));
    msg->msg_control = control->buf;
    msg->msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
}

napi_value kc_sendmsg(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    int fd;
    void *data;
    size_t len;
    if (!kc_get_args(env, info, 3, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
        !kc_arg_bytes(env, argv[1], "data", &data, &len)) {
        return NULL;
    }
    bool is_array = false;
    KC_CALL(env, napi_is_array(env, argv[2], &is_array));
    if (!is_array) {
        return kc_throw_type(env, "ERR_INVALID_ARG_TYPE", "The \"fds\" argument must be an array of file descriptors");
    }
    uint32_t nfds;
    KC_CALL(env, napi_get_array_length(env, argv[2], &nfds));
    if (nfds > KC_MAX_FDS) {
        return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                              "The length of \"fds\" is out of range. It must be <= %d. Received %u", KC_MAX_FDS, nfds);
    }
    int fds[KC_MAX_FDS];
    for (uint32_t i = 0; i < nfds; i++) {
        napi_value el;
        KC_CALL(env, napi_get_element(env, argv[2], i, &el));
        char name[16];
        snprintf(name, sizeof(name), "fds[%u]", i);
        if (!kc_arg_fd(env, el, name, &fds[i]))
            return NULL;
    }

    struct iovec iov = { .iov_base = data, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    fd_control control;
    attach_fds(&msg, &control, fds, nfds);
    ssize_t n;
    do {
        n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return kc_throw_errno(env, errno, "sendmsg");
    return kc_number(env, (double)n);
}

static unsigned char *scratch_for(napi_env env, size_t len, bool *temporary)
{
    *temporary = false;
    kc_env_state *state = kc_state(env);
    if (state == NULL || len > SCRATCH_KEEP_MAX) {
        *temporary = true;
        return malloc(len);
    }
    if (state->scratch_len < len) {
        size_t want = state->scratch_len == 0 ? 4096 : state->scratch_len;
        while (want < len)
            want *= 2;
        unsigned char *p = realloc(state->scratch, want);
        if (p == NULL)
            return NULL;
        state->scratch = p;
        state->scratch_len = want;
    }
    return state->scratch;
}

static bool set_bool(napi_env env, napi_value obj, const char *key, bool value)
{
    napi_value v;
    return napi_get_boolean(env, value, &v) == napi_ok && napi_set_named_property(env, obj, key, v) == napi_ok;
}

static napi_value build_recv_result(napi_env env, const unsigned char *buf, size_t n, const int *fds, size_t nfds,
                                    bool truncated, bool fds_truncated, bool eof)
{
    napi_value result, data, arr;
    if (napi_create_object(env, &result) != napi_ok)
        return NULL;
    if (napi_create_buffer_copy(env, n, n > 0 ? buf : NULL, NULL, &data) != napi_ok)
        return NULL;
    if (napi_set_named_property(env, result, "data", data) != napi_ok)
        return NULL;
    if (napi_create_array_with_length(env, nfds, &arr) != napi_ok)
        return NULL;
    for (size_t i = 0; i < nfds; i++) {
        napi_value v;
        if (napi_create_int32(env, fds[i], &v) != napi_ok)
            return NULL;
        if (napi_set_element(env, arr, (uint32_t)i, v) != napi_ok)
            return NULL;
    }
    if (napi_set_named_property(env, result, "fds", arr) != napi_ok)
        return NULL;
    if (!set_bool(env, result, "truncated", truncated))
        return NULL;
    if (!set_bool(env, result, "fdsTruncated", fds_truncated))
        return NULL;
    if (!set_bool(env, result, "eof", eof))
        return NULL;
    return result;
}

napi_value kc_recvmsg(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    int fd;
    int64_t max_len, max_fds;
    if (!kc_get_args(env, info, 3, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
        /* maxLen 0 is refused: a 0-byte read would be indistinguishable from EOF. */
        !kc_arg_int(env, argv[1], "maxLen", 1, INT32_MAX, &max_len) ||
        !kc_arg_int(env, argv[2], "maxFds", 0, KC_MAX_FDS, &max_fds)) {
        return NULL;
    }
    bool temporary;
    unsigned char *buf = scratch_for(env, (size_t)max_len, &temporary);
    if (buf == NULL)
        return kc_throw_errno(env, ENOMEM, "malloc");

    struct iovec iov = { .iov_base = buf, .iov_len = (size_t)max_len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    fd_control control;
    if (max_fds > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE((size_t)max_fds * sizeof(int));
    }
    ssize_t n;
    do {
        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int err = errno;
        if (temporary)
            free(buf);
        if (err == EAGAIN || err == EWOULDBLOCK)
            return kc_null(env);
        return kc_throw_errno(env, err, "recvmsg");
    }

    /* CMSG_SPACE rounds up, so the kernel may deliver a few more fds than maxFds: close those
     * and report them as truncated, exactly as if the kernel had dropped them. */
    int fds[KC_MAX_FDS];
    size_t nfds = 0;
    bool dropped = false;
    if (max_fds > 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const unsigned char *p = CMSG_DATA(c);
            for (size_t i = 0; i < count; i++) {
                int rfd;
                memcpy(&rfd, p + i * sizeof(int), sizeof(int));
                if (nfds < (size_t)max_fds) {
                    fds[nfds++] = rfd;
                } else {
                    close(rfd);
                    dropped = true;
                }
            }
        }
    }
    bool truncated = (msg.msg_flags & MSG_TRUNC) != 0;
    bool fds_truncated = dropped || (msg.msg_flags & MSG_CTRUNC) != 0;
    bool eof = false;
    if (n == 0 && nfds == 0 && !fds_truncated) {
        /* 0 bytes is an orderly shutdown on STREAM and SEQPACKET sockets (our protocol never
         * sends empty datagrams); on a DGRAM socket it is an empty datagram. */
        int sotype = SOCK_STREAM;
        socklen_t optlen = sizeof(sotype);
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &sotype, &optlen);
        eof = sotype != SOCK_DGRAM;
    }

    napi_value result = build_recv_result(env, buf, (size_t)n, fds, nfds, truncated, fds_truncated, eof);
    if (temporary)
        free(buf);
    if (result == NULL) {
        /* The caller never saw these fds: do not leak them. */
        for (size_t i = 0; i < nfds; i++)
            close_keep_errno(fds[i]);
        return kc_throw_napi(env, napi_generic_failure, "recvmsg result");
    }
    return result;
}

napi_value kc_peer_cred(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        return kc_throw_errno(env, errno, "getsockopt");
    }
    napi_value result, pid, uid, gid;
    KC_CALL(env, napi_create_object(env, &result));
    KC_CALL(env, napi_create_int32(env, cred.pid, &pid));
    KC_CALL(env, napi_create_uint32(env, cred.uid, &uid));
    KC_CALL(env, napi_create_uint32(env, cred.gid, &gid));
    KC_CALL(env, napi_set_named_property(env, result, "pid", pid));
    KC_CALL(env, napi_set_named_property(env, result, "uid", uid));
    KC_CALL(env, napi_set_named_property(env, result, "gid", gid));
    return result;
}

/*
 * sendDatagram(socketPath, data[, fds]): one datagram on a new AF_UNIX SOCK_DGRAM socket, then
 * close. For the service manager's notification socket (docs/operations.md, "systemd"): Node has
 * no AF_UNIX datagrams. `fds` travel with it as SCM_RIGHTS (the fd store: FDSTORE=1). A path
 * starting with '@' is in the abstract namespace, as $NOTIFY_SOCKET may say. Returns the bytes
 * sent. Never waits: a receiver that stops reading fills its queue, and waiting for room would
 * stall the whole event loop; that is EAGAIN, and the caller queues and retries (fd-store.ts,
 * docs/operations.md "systemd").
 */
napi_value kc_send_datagram(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    char *path;
    size_t len;
    void *data;
    size_t data_len;
    if (!kc_get_args(env, info, 3, argv, NULL) || !kc_arg_string(env, argv[0], "socketPath", &path, &len))
        return NULL;
    if (!kc_arg_bytes(env, argv[1], "data", &data, &data_len)) {
        free(path);
        return NULL;
    }
    int fds[KC_MAX_FDS];
    uint32_t nfds = 0;
    {
        napi_valuetype t;
        KC_CALL(env, napi_typeof(env, argv[2], &t));
        if (t != napi_undefined) {
            bool is_array = false;
            KC_CALL(env, napi_is_array(env, argv[2], &is_array));
            if (!is_array) {
                free(path);
                return kc_throw_type(env, "ERR_INVALID_ARG_TYPE",
                                     "The \"fds\" argument must be an array of file descriptors");
            }
            KC_CALL(env, napi_get_array_length(env, argv[2], &nfds));
            if (nfds > KC_MAX_FDS) {
                free(path);
                return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                                      "The length of \"fds\" is out of range. It must be <= %d. Received %u",
                                      KC_MAX_FDS, nfds);
            }
            for (uint32_t i = 0; i < nfds; i++) {
                napi_value el;
                KC_CALL(env, napi_get_element(env, argv[2], i, &el));
                char name[16];
                snprintf(name, sizeof(name), "fds[%u]", i);
                if (!kc_arg_fd(env, el, name, &fds[i])) {
                    free(path);
                    return NULL;
                }
            }
        }
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    if (len < 2 || len >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@')) {
        kc_throw_errno_path(env, len >= sizeof(addr.sun_path) ? ENAMETOOLONG : EINVAL, "sendto", path);
        free(path);
        return NULL;
    }
    memcpy(addr.sun_path, path, len);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0';
    else
        alen++; /* the NUL of a filesystem path */
    struct iovec iov = { .iov_base = data, .iov_len = data_len };
    struct msghdr msg = { .msg_name = &addr, .msg_namelen = alen, .msg_iov = &iov, .msg_iovlen = 1 };
    fd_control control;
    attach_fds(&msg, &control, fds, nfds);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ssize_t n = -1;
    if (fd >= 0) {
        do
            n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
    }
    int err = errno;
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        kc_throw_errno_path(env, err, fd < 0 ? "socket" : "sendmsg", path);
        free(path);
        return NULL;
    }
    free(path);
    return kc_number(env, (double)n);
}
