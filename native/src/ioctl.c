/* ioctl and positioned I/O: device control (ivshmem/VFIO, docs/ivshmem.md §8) and memfd access. */
#include "kvmchan.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Legacy ioctls (e.g. FIONREAD) do not encode their argument size; a buffer shorter than
 * this is bounced through a zeroed scratch area so an int/long-sized write cannot overrun it. */
#define IOCTL_BOUNCE 64

napi_value kc_ioctl(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  int64_t request;
  if (!kc_get_args(env, info, 3, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
      /* Request codes are 32-bit; accept them signed or unsigned (0xc0..... is > INT32_MAX). */
      !kc_arg_int(env, argv[1], "request", INT32_MIN, UINT32_MAX, &request)) {
    return NULL;
  }
  unsigned long req = (unsigned int)(uint32_t)request;
  napi_valuetype t;
  KC_CALL(env, napi_typeof(env, argv[2], &t));
  int r;
  if (t == napi_number) {
    /* _IOR/_IOW/_IOWR requests take a pointer: a number there would let JS hand the kernel an
     * arbitrary address in this process. */
    if (_IOC_DIR(req) != _IOC_NONE) {
      return kc_throw_type(env, "ERR_INVALID_ARG_TYPE",
                           "The \"arg\" argument of ioctl 0x%lx must be a buffer", req);
    }
    int64_t arg;
    if (!kc_arg_int(env, argv[2], "arg", -KC_MAX_SAFE_INTEGER, KC_MAX_SAFE_INTEGER, &arg)) {
      return NULL;
    }
    do {
      r = ioctl(fd, req, (long)arg);
    } while (r < 0 && errno == EINTR);
  } else {
    void *data;
    size_t len;
    if (!kc_arg_bytes(env, argv[2], "arg", &data, &len)) return NULL;
    /* Encoded requests carry the size the kernel will read or write: hold the buffer to it. */
    size_t need = _IOC_DIR(req) != _IOC_NONE ? _IOC_SIZE(req) : 0;
    if (len < need) {
      return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                            "The \"arg\" buffer is too small for ioctl 0x%lx: it needs %zu bytes, "
                            "received %zu",
                            req, need, len);
    }
    if (len < IOCTL_BOUNCE) {
      _Alignas(8) unsigned char bounce[IOCTL_BOUNCE];
      memset(bounce, 0, sizeof(bounce));
      if (len > 0) memcpy(bounce, data, len);
      do {
        r = ioctl(fd, req, bounce);
      } while (r < 0 && errno == EINTR);
      if (len > 0) memcpy(data, bounce, len);
    } else {
      do {
        r = ioctl(fd, req, data);
      } while (r < 0 && errno == EINTR);
    }
  }
  if (r < 0) return kc_throw_errno(env, errno, "ioctl");
  return kc_number(env, r);
}

typedef ssize_t (*pio_fn)(int, void *, size_t, off_t);

static ssize_t do_pwrite(int fd, void *buf, size_t len, off_t off) {
  return pwrite(fd, buf, len, off);
}

static napi_value positioned_io(napi_env env, napi_callback_info info, pio_fn fn,
                                const char *syscall) {
  napi_value argv[3];
  int fd;
  void *data;
  size_t len;
  int64_t offset;
  if (!kc_get_args(env, info, 3, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
      !kc_arg_bytes(env, argv[1], "buffer", &data, &len) ||
      !kc_arg_offset(env, argv[2], "offset", &offset)) {
    return NULL;
  }
  ssize_t n;
  do {
    n = fn(fd, data, len, (off_t)offset);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return kc_throw_errno(env, errno, syscall);
  return kc_number(env, (double)n);
}

napi_value kc_pread(napi_env env, napi_callback_info info) {
  return positioned_io(env, info, pread, "pread");
}

napi_value kc_pwrite(napi_env env, napi_callback_info info) {
  return positioned_io(env, info, do_pwrite, "pwrite");
}
