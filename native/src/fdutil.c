/* Generic file descriptor operations. */
#include "kvmchan.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

napi_value kc_close(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    /* On Linux the fd is released whatever close() reports, except EBADF: retrying could close
     * an fd another thread just got, and an error from the file's flush (EIO from a FUSE file a
     * hostile peer passed us, EINTR, ENOSPC on NFS) is about that file, not about us. Only EBADF
     * — a bug of ours — is reported (docs/security.md, "Passed fds"). */
    if (close(fd) != 0 && errno == EBADF)
        return kc_throw_errno(env, errno, "close");
    return kc_undefined(env);
}

napi_value kc_dup(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0)
        return kc_throw_errno(env, errno, "dup");
    return kc_number(env, copy);
}

napi_value kc_set_nonblocking(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    int fd;
    bool on;
    if (!kc_get_args(env, info, 2, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
        !kc_arg_bool(env, argv[1], "nonblocking", &on)) {
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return kc_throw_errno(env, errno, "fcntl");
    int wanted = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (wanted != flags && fcntl(fd, F_SETFL, wanted) < 0)
        return kc_throw_errno(env, errno, "fcntl");
    return kc_undefined(env);
}

napi_value kc_fd_size(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    int fd;
    if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd))
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return kc_throw_errno(env, errno, "fstat");
    return kc_number(env, (double)st.st_size);
}

/*
 * raiseNofileLimit() → number: lifts RLIMIT_NOFILE's soft limit to the hard limit and returns
 * the soft limit now in force. Every vchan costs the daemon fds (a memfd and two eventfds on
 * the host), so the limits it enforces must fit the fd limit it really has (docs/security.md,
 * "Quotas"); distributions start services at a soft limit of 1024.
 */
napi_value kc_raise_nofile_limit(napi_env env, napi_callback_info info)
{
    (void)info;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return kc_throw_errno(env, errno, "getrlimit");
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    double soft = rl.rlim_cur == RLIM_INFINITY ? 1e15 : (double)rl.rlim_cur;
    return kc_number(env, soft);
}
