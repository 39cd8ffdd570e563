/* eventfd: the doorbell between ring peers (docs/architecture.md, "The native addon"). */
#include "kvmchan.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

napi_value kc_eventfd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t initval, flags;
  if (!kc_get_args(env, info, 2, argv, NULL) ||
      !kc_arg_int(env, argv[0], "initval", 0, UINT32_MAX, &initval) ||
      !kc_arg_int(env, argv[1], "flags", 0, EFD_NONBLOCK | EFD_SEMAPHORE | EFD_CLOEXEC, &flags)) {
    return NULL;
  }
  if ((flags & ~(int64_t)(EFD_NONBLOCK | EFD_SEMAPHORE | EFD_CLOEXEC)) != 0) {
    return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                          "The \"flags\" argument may only contain EFD_NONBLOCK, EFD_SEMAPHORE "
                          "and EFD_CLOEXEC. Received %lld",
                          (long long)flags);
  }
  /* Always close-on-exec: children get fds only by explicit passing. */
  int fd = eventfd((unsigned int)initval, (int)flags | EFD_CLOEXEC);
  if (fd < 0) return kc_throw_errno(env, errno, "eventfd");
  return kc_number(env, fd);
}

napi_value kc_eventfd_read(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!kc_get_args(env, info, 1, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd)) return NULL;
  uint64_t value;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof(value));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return kc_null(env);
    return kc_throw_errno(env, errno, "read");
  }
  if (n != (ssize_t)sizeof(value)) return kc_throw_errno(env, EINVAL, "read");
  return kc_number(env, (double)value);
}

napi_value kc_eventfd_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint64_t value;
  if (!kc_get_args(env, info, 2, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
      !kc_arg_size(env, argv[1], "value", UINT64_MAX, &value)) {
    return NULL;
  }
  ssize_t n;
  do {
    n = write(fd, &value, sizeof(value));
  } while (n < 0 && errno == EINTR);
  /* EAGAIN means the counter is saturated: the peer has a wake-up pending anyway. */
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return kc_throw_errno(env, errno, "write");
  return kc_undefined(env);
}
