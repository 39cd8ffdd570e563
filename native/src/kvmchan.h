/*
 * Shared declarations of the kvmchan native addon (plain C over Node-API).
 *
 * Conventions used by every exported function:
 *  - a JS-facing function validates all its arguments before any syscall and
 *    throws TypeError('ERR_INVALID_ARG_TYPE') / RangeError('ERR_OUT_OF_RANGE')
 *    on bad input, so no input can abort or crash the process;
 *  - a failing syscall throws an Error with code (errno name), errno (positive)
 *    and syscall, like Node's own fs/net errors (but errno is positive, as the
 *    contract in src/native.ts says);
 *  - helpers return false / NULL after having thrown, and callers return NULL
 *    to JS, which leaves the pending exception to propagate.
 */
#ifndef KVMCHAN_NATIVE_H
#define KVMCHAN_NATIVE_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Largest integer a JS number holds exactly (Number.MAX_SAFE_INTEGER). */
#define KC_MAX_SAFE_INTEGER 9007199254740991LL

/* SCM_MAX_FD in the kernel (include/net/scm.h): more fds per message fail with EINVAL. */
#define KC_MAX_FDS 253

/* ---- errors.c ---- */

/* Throws Error{code: errno name, errno, syscall[, path]}; returns NULL for `return kc_throw_errno(...)`. */
napi_value kc_throw_errno(napi_env env, int err, const char *syscall);
napi_value kc_throw_errno_path(napi_env env, int err, const char *syscall, const char *path);
/* Builds (without throwing) the same error object; NULL if even that failed. */
napi_value kc_errno_error(napi_env env, int err, const char *syscall, const char *path);
/* Throws TypeError / RangeError / Error with the given code and a printf-style message. */
napi_value kc_throw_type(napi_env env, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
napi_value kc_throw_range(napi_env env, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
napi_value kc_throw_error(napi_env env, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Reports a failed napi_* call (status != napi_ok) unless an exception is already pending. */
napi_value kc_throw_napi(napi_env env, napi_status status, const char *what);
const char *kc_errno_name(int err);

/* Evaluates a napi_* call; on failure throws (if nothing is pending) and returns NULL. */
#define KC_CALL(env, call)                                  \
    do {                                                    \
        napi_status kc_status_ = (call);                    \
        if (kc_status_ != napi_ok) {                        \
            return kc_throw_napi((env), kc_status_, #call); \
        }                                                   \
    } while (0)

/* Same, for helpers returning bool. */
#define KC_CALL_BOOL(env, call)                      \
    do {                                             \
        napi_status kc_status_ = (call);             \
        if (kc_status_ != napi_ok) {                 \
            kc_throw_napi((env), kc_status_, #call); \
            return false;                            \
        }                                            \
    } while (0)

/* ---- args.c: argument validation ---- */

/* Fetches exactly `n` arguments (missing ones are undefined) and optionally `this`. */
bool kc_get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, napi_value *this_arg);
/* A number that is an integer in [min, max]. */
bool kc_arg_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out);
/* A file descriptor: an integer in [0, INT32_MAX]. */
bool kc_arg_fd(napi_env env, napi_value v, const char *name, int *out);
/* A non-negative safe integer no larger than max. */
bool kc_arg_size(napi_env env, napi_value v, const char *name, uint64_t max, uint64_t *out);
bool kc_arg_bool(napi_env env, napi_value v, const char *name, bool *out);
/* A string without NUL characters, returned as malloc'ed UTF-8 (caller frees). */
bool kc_arg_string(napi_env env, napi_value v, const char *name, char **out, size_t *len);
/* Any TypedArray or DataView: its bytes (data may be NULL when the length is 0). */
bool kc_arg_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len);
/* A file offset given as a number (safe integer) or a bigint, in [0, INT64_MAX]. */
bool kc_arg_offset(napi_env env, napi_value v, const char *name, int64_t *out);
/* 'stream' | 'seqpacket' → SOCK_STREAM | SOCK_SEQPACKET. */
bool kc_arg_socktype(napi_env env, napi_value v, const char *name, int *out);
/* A function. */
bool kc_arg_function(napi_env env, napi_value v, const char *name);

/* ---- return value helpers ---- */
napi_value kc_number(napi_env env, double value);
napi_value kc_undefined(napi_env env);
napi_value kc_null(napi_env env);

/* ---- per-environment state (addon.c) ---- */
typedef struct kc_env_state {
    /* Scratch buffer recvmsg() receives into before copying the bytes out. */
    unsigned char *scratch;
    size_t scratch_len;
    /* Symbol under which a Poller keeps its callback (poller.c). */
    napi_ref poller_callback_key;
    /* This thread's timer that bounds eventfd reads and writes (eventfd.c). */
    timer_t io_timer;
    int io_timer_ready;
} kc_env_state;

/* Deletes the state's eventfd timer, if any (eventfd.c). */
void kc_eventfd_cleanup(kc_env_state *state);

kc_env_state *kc_state(napi_env env);

/* ---- exported functions, one file per concept ---- */
napi_value kc_memfd_create(napi_env env, napi_callback_info info); /* memfd.c */
napi_value kc_punch_hole(napi_env env, napi_callback_info info);
napi_value kc_mmap(napi_env env, napi_callback_info info); /* mmap.c */
napi_value kc_munmap(napi_env env, napi_callback_info info);
napi_value kc_mapping_count(napi_env env, napi_callback_info info);
napi_value kc_eventfd(napi_env env, napi_callback_info info); /* eventfd.c */
napi_value kc_eventfd_read(napi_env env, napi_callback_info info);
napi_value kc_eventfd_write(napi_env env, napi_callback_info info);
napi_value kc_close(napi_env env, napi_callback_info info); /* fdutil.c */
napi_value kc_dup(napi_env env, napi_callback_info info);
napi_value kc_set_nonblocking(napi_env env, napi_callback_info info);
napi_value kc_fd_size(napi_env env, napi_callback_info info);
napi_value kc_raise_nofile_limit(napi_env env, napi_callback_info info);
napi_value kc_socketpair(napi_env env, napi_callback_info info); /* socket.c */
napi_value kc_listen_unix(napi_env env, napi_callback_info info);
napi_value kc_accept(napi_env env, napi_callback_info info);
napi_value kc_connect_unix(napi_env env, napi_callback_info info);
napi_value kc_send_datagram(napi_env env, napi_callback_info info);
napi_value kc_shutdown(napi_env env, napi_callback_info info);
napi_value kc_sendmsg(napi_env env, napi_callback_info info);
napi_value kc_recvmsg(napi_env env, napi_callback_info info);
napi_value kc_peer_cred(napi_env env, napi_callback_info info);
napi_value kc_peer_groups(napi_env env, napi_callback_info info); /* identity.c */
napi_value kc_group_id(napi_env env, napi_callback_info info);
napi_value kc_ioctl(napi_env env, napi_callback_info info); /* ioctl.c */
napi_value kc_pread(napi_env env, napi_callback_info info);
napi_value kc_pwrite(napi_env env, napi_callback_info info);
napi_value kc_copy_bytes(napi_env env, napi_callback_info info);

/* poller.c: defines the Poller class on `exports`. */
bool kc_poller_init(napi_env env, napi_value exports);

#endif /* KVMCHAN_NATIVE_H */
