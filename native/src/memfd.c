/* memfd_create for ring and shared-memory regions (sealed: docs/ivshmem.md §5). */
#include "kvmchan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* The kernel limits memfd names to NAME_MAX minus the "memfd:" prefix. */
#define MEMFD_NAME_MAX 249

napi_value kc_memfd_create(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char *name = NULL;
  size_t name_len;
  uint64_t size;
  bool seal;
  if (!kc_get_args(env, info, 3, argv, NULL) ||
      !kc_arg_size(env, argv[1], "size", INT64_MAX, &size) ||
      !kc_arg_bool(env, argv[2], "seal", &seal) ||
      !kc_arg_string(env, argv[0], "name", &name, &name_len)) {
    return NULL;
  }
  if (name_len > MEMFD_NAME_MAX) {
    free(name);
    return kc_throw_range(env, "ERR_OUT_OF_RANGE",
                          "The \"name\" argument must be at most %d bytes long. Received %zu",
                          MEMFD_NAME_MAX, name_len);
  }
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  free(name);
  if (fd < 0) return kc_throw_errno(env, errno, "memfd_create");
  if (ftruncate(fd, (off_t)size) != 0) {
    int err = errno;
    close(fd);
    return kc_throw_errno(env, err, "ftruncate");
  }
  /* A peer that shrinks a mapped memfd makes QEMU (and us) fault: fix the size for good. */
  if (seal && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    int err = errno;
    close(fd);
    return kc_throw_errno(env, err, "fcntl");
  }
  return kc_number(env, fd);
}
