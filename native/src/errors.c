/* Error objects thrown to JS (contract: src/native.ts header comment). */
#include "kvmchan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define KC_HAVE_STRERRORNAME_NP 1
#endif

#ifndef KC_HAVE_STRERRORNAME_NP
/* Names for libcs without strerrorname_np (glibc < 2.32, musl): the errnos our calls can yield. */
static const struct {
    int err;
    const char *name;
} errno_names[] = {
    { EPERM, "EPERM" },
    { ENOENT, "ENOENT" },
    { EINTR, "EINTR" },
    { EIO, "EIO" },
    { ENXIO, "ENXIO" },
    { E2BIG, "E2BIG" },
    { EBADF, "EBADF" },
    { EAGAIN, "EAGAIN" },
    { ENOMEM, "ENOMEM" },
    { EACCES, "EACCES" },
    { EFAULT, "EFAULT" },
    { EBUSY, "EBUSY" },
    { EEXIST, "EEXIST" },
    { ENODEV, "ENODEV" },
    { ENOTDIR, "ENOTDIR" },
    { EISDIR, "EISDIR" },
    { EINVAL, "EINVAL" },
    { ENFILE, "ENFILE" },
    { EMFILE, "EMFILE" },
    { ENOTTY, "ENOTTY" },
    { EFBIG, "EFBIG" },
    { ENOSPC, "ENOSPC" },
    { ESPIPE, "ESPIPE" },
    { EROFS, "EROFS" },
    { EPIPE, "EPIPE" },
    { ERANGE, "ERANGE" },
    { ENAMETOOLONG, "ENAMETOOLONG" },
    { ENOSYS, "ENOSYS" },
    { ELOOP, "ELOOP" },
    { ENOTSOCK, "ENOTSOCK" },
    { EDESTADDRREQ, "EDESTADDRREQ" },
    { EMSGSIZE, "EMSGSIZE" },
    { EPROTOTYPE, "EPROTOTYPE" },
    { ENOPROTOOPT, "ENOPROTOOPT" },
    { EPROTONOSUPPORT, "EPROTONOSUPPORT" },
    { EOPNOTSUPP, "EOPNOTSUPP" },
    { EAFNOSUPPORT, "EAFNOSUPPORT" },
    { EADDRINUSE, "EADDRINUSE" },
    { EADDRNOTAVAIL, "EADDRNOTAVAIL" },
    { ENETDOWN, "ENETDOWN" },
    { ECONNABORTED, "ECONNABORTED" },
    { ECONNRESET, "ECONNRESET" },
    { ENOBUFS, "ENOBUFS" },
    { EISCONN, "EISCONN" },
    { ENOTCONN, "ENOTCONN" },
    { ETIMEDOUT, "ETIMEDOUT" },
    { ECONNREFUSED, "ECONNREFUSED" },
    { EALREADY, "EALREADY" },
    { EINPROGRESS, "EINPROGRESS" },
    { EOVERFLOW, "EOVERFLOW" },
};
#endif

const char *kc_errno_name(int err)
{
#ifdef KC_HAVE_STRERRORNAME_NP
    const char *name = strerrorname_np(err);
    return name != NULL ? name : "UNKNOWN";
#else
    for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
        if (errno_names[i].err == err)
            return errno_names[i].name;
    }
    return "UNKNOWN";
#endif
}

static void set_string(napi_env env, napi_value obj, const char *key, const char *value)
{
    napi_value v;
    if (napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v) == napi_ok) {
        napi_set_named_property(env, obj, key, v);
    }
}

napi_value kc_errno_error(napi_env env, int err, const char *syscall, const char *path)
{
    const char *name = kc_errno_name(err);
    char desc[128];
    /* GNU strerror_r returns a pointer that may or may not be `desc`. */
    const char *text = strerror_r(err, desc, sizeof(desc));
    char msg[512];
    if (path != NULL) {
        snprintf(msg, sizeof(msg), "%s: %s, %s '%s'", name, text, syscall, path);
    } else {
        snprintf(msg, sizeof(msg), "%s: %s, %s", name, text, syscall);
    }
    napi_value code_v, msg_v, error, errno_v;
    if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code_v) != napi_ok)
        return NULL;
    if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v) != napi_ok)
        return NULL;
    if (napi_create_error(env, code_v, msg_v, &error) != napi_ok)
        return NULL;
    if (napi_create_int32(env, err, &errno_v) == napi_ok) {
        napi_set_named_property(env, error, "errno", errno_v);
    }
    set_string(env, error, "syscall", syscall);
    if (path != NULL)
        set_string(env, error, "path", path);
    return error;
}

static bool exception_pending(napi_env env)
{
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    return pending;
}

napi_value kc_throw_errno_path(napi_env env, int err, const char *syscall, const char *path)
{
    if (exception_pending(env))
        return NULL;
    napi_value error = kc_errno_error(env, err, syscall, path);
    if (error != NULL) {
        napi_throw(env, error);
    } else {
        napi_throw_error(env, kc_errno_name(err), syscall);
    }
    return NULL;
}

napi_value kc_throw_errno(napi_env env, int err, const char *syscall)
{
    return kc_throw_errno_path(env, err, syscall, NULL);
}

typedef napi_status (*thrower)(napi_env, const char *, const char *);

static napi_value throw_fmt(napi_env env, thrower fn, const char *code, const char *fmt, va_list ap)
{
    if (exception_pending(env))
        return NULL;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fn(env, code, msg);
    return NULL;
}

napi_value kc_throw_type(napi_env env, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    throw_fmt(env, napi_throw_type_error, code, fmt, ap);
    va_end(ap);
    return NULL;
}

napi_value kc_throw_range(napi_env env, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    throw_fmt(env, napi_throw_range_error, code, fmt, ap);
    va_end(ap);
    return NULL;
}

napi_value kc_throw_error(napi_env env, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    throw_fmt(env, napi_throw_error, code, fmt, ap);
    va_end(ap);
    return NULL;
}

napi_value kc_throw_napi(napi_env env, napi_status status, const char *what)
{
    /* Read the error info first: napi_is_exception_pending() resets it. */
    const napi_extended_error_info *info = NULL;
    char detail[160] = "unknown Node-API failure";
    if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL && info->error_message != NULL) {
        snprintf(detail, sizeof(detail), "%s", info->error_message);
    }
    if (exception_pending(env))
        return NULL;
    return kc_throw_error(env, "ERR_KVMCHAN_NAPI", "kvmchan native: %s failed (status %d: %s)", what, (int)status,
                          detail);
}

napi_value kc_number(napi_env env, double value)
{
    napi_value v;
    if (napi_create_double(env, value, &v) != napi_ok)
        return NULL;
    return v;
}

napi_value kc_undefined(napi_env env)
{
    napi_value v;
    if (napi_get_undefined(env, &v) != napi_ok)
        return NULL;
    return v;
}

napi_value kc_null(napi_env env)
{
    napi_value v;
    if (napi_get_null(env, &v) != napi_ok)
        return NULL;
    return v;
}
