/*
 * mmap'd regions exposed as non-shared external ArrayBuffers (docs/ring-protocol.md §10).
 *
 * The finalize hint is a small struct rather than the address alone because V8 still runs the
 * finalizer after napi_detach_arraybuffer (docs/architecture.md, "The native addon"): by then the address may belong to a new
 * mapping, so the struct records whether munmap() already released it. munmap() finds the
 * struct from the ArrayBuffer itself (type tag + napi_wrap), which keeps working after the
 * buffer was detached and makes a second munmap() a no-op.
 */
#include "kvmchan.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct kc_mapping {
  void *addr;
  size_t len;
  bool unmapped;
} kc_mapping;

static const napi_type_tag mapping_tag = {0x6b766d6368616e2dULL, 0x6d6170706564ab01ULL};

/* Process-wide: finalizers of different worker threads may run concurrently. */
static size_t live_mappings;

static void release(kc_mapping *m) {
  if (m->unmapped) return;
  m->unmapped = true;
  munmap(m->addr, m->len);
  __atomic_sub_fetch(&live_mappings, 1, __ATOMIC_RELAXED);
}

static void finalize_mapping(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  kc_mapping *m = hint;
  release(m);
  free(m);
}

napi_value kc_mmap(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd;
  uint64_t length, offset;
  bool writable;
  if (!kc_get_args(env, info, 4, argv, NULL) || !kc_arg_fd(env, argv[0], "fd", &fd) ||
      !kc_arg_size(env, argv[1], "length", SIZE_MAX, &length) ||
      !kc_arg_size(env, argv[2], "offset", INT64_MAX, &offset) ||
      !kc_arg_bool(env, argv[3], "writable", &writable)) {
    return NULL;
  }
  if (length == 0) {
    return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                          "The value of \"length\" is out of range. It must be > 0. Received 0");
  }
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  if (offset % page != 0) {
    return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                          "The value of \"offset\" is out of range. It must be a multiple of the "
                          "page size (%llu). Received %llu",
                          (unsigned long long)page, (unsigned long long)offset);
  }
  /* Touching a page past the end of a file raises SIGBUS, which would kill the process on the
   * first access from JS: refuse such mappings of regular files (memfds, sysfs BAR files).
   * Device nodes report no meaningful size and are not checked. */
  struct stat sb;
  if (fstat(fd, &sb) != 0) return kc_throw_errno(env, errno, "fstat");
  if (S_ISREG(sb.st_mode) && offset + length > (uint64_t)sb.st_size) {
    return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                          "The mapping [%llu, %llu) extends past the end of the file (%lld bytes)",
                          (unsigned long long)offset, (unsigned long long)(offset + length),
                          (long long)sb.st_size);
  }
  kc_mapping *m = calloc(1, sizeof(*m));
  if (m == NULL) return kc_throw_errno(env, ENOMEM, "calloc");
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void *addr = mmap(NULL, (size_t)length, prot, MAP_SHARED, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    int err = errno;
    free(m);
    return kc_throw_errno(env, err, "mmap");
  }
  m->addr = addr;
  m->len = (size_t)length;
  __atomic_add_fetch(&live_mappings, 1, __ATOMIC_RELAXED);

  napi_value ab;
  napi_status st = napi_create_external_arraybuffer(env, addr, (size_t)length, finalize_mapping, m, &ab);
  if (st != napi_ok) {
    release(m);
    free(m);
    return kc_throw_napi(env, st, "napi_create_external_arraybuffer");
  }
  /* From here the finalizer owns `m`: on failure just throw and let GC release the mapping. */
  KC_CALL(env, napi_type_tag_object(env, ab, &mapping_tag));
  KC_CALL(env, napi_wrap(env, ab, m, NULL, NULL, NULL));
  return ab;
}

static napi_value throw_not_mapping(napi_env env) {
  napi_value error = kc_errno_error(env, EINVAL, "munmap", NULL);
  if (error == NULL) return kc_throw_errno(env, EINVAL, "munmap");
  napi_value msg;
  if (napi_create_string_utf8(env, "EINVAL: not an ArrayBuffer returned by mmap(), munmap",
                              NAPI_AUTO_LENGTH, &msg) == napi_ok) {
    napi_set_named_property(env, error, "message", msg);
  }
  napi_throw(env, error);
  return NULL;
}

napi_value kc_munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!kc_get_args(env, info, 1, argv, NULL)) return NULL;
  bool is_ab = false;
  KC_CALL(env, napi_is_arraybuffer(env, argv[0], &is_ab));
  if (!is_ab) {
    return kc_throw_type(env, "ERR_INVALID_ARG_TYPE",
                         "The \"buffer\" argument must be an instance of ArrayBuffer");
  }
  bool ours = false;
  KC_CALL(env, napi_check_object_type_tag(env, argv[0], &mapping_tag, &ours));
  if (!ours) return throw_not_mapping(env);
  void *data = NULL;
  KC_CALL(env, napi_unwrap(env, argv[0], &data));
  kc_mapping *m = data;
  if (m->unmapped) return kc_undefined(env);
  /* Detach before unmapping: should detaching fail, JS must keep valid memory behind its views. */
  KC_CALL(env, napi_detach_arraybuffer(env, argv[0]));
  release(m);
  return kc_undefined(env);
}

napi_value kc_mapping_count(napi_env env, napi_callback_info info) {
  (void)info;
  return kc_number(env, (double)__atomic_load_n(&live_mappings, __ATOMIC_RELAXED));
}
