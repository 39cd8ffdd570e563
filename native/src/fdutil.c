/* Generic file descriptor operations. */
#include "kvmchan.h"

#include <errno.h>
#include <fcntl.h>
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
