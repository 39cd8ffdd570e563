/*
 * kvmchan-shmem.h - shared-memory regions (part of libvchan-kvm; pkg-config vchan-kvm).
 *
 * A region is N pages one process shares with one target domain under a single uint32_t id,
 * however large it is (a 3840x2160x4 framebuffer is one id): write the id into a vchan, and the
 * other side maps the region by (source domain, id). docs/shmem.md states the semantics,
 * docs/clib.md this API.
 *
 * Every call returns -1 or NULL with errno set on failure. A handle may be used from several
 * threads at once: calls on one handle are serialised. Everything obtained through a handle -
 * regions it shared, mappings, mmap parameters - belongs to its connection to kvmchand: closing
 * the handle (or the process's death) releases the regions it shared and gives its mappings back.
 *
 * Who may map: the creator and the target domain; when both are host processes, only processes
 * of the creator's uid. Anyone else gets ENOENT, exactly as for an id that does not exist.
 */
#ifndef KVMCHAN_SHMEM_H
#define KVMCHAN_SHMEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque handle, like libvchan_t. */
typedef struct kvmchan_shmem kvmchan_shmem_t;

/* What a consumer needs to call mmap() itself:
 *   mmap(NULL, p.length, p.prot, p.flags, p.fd, p.offset)
 * The caller owns fd and must close() it (right after mmap() is fine). */
struct kvmchan_shmem_mmap_params {
    int fd;
    off_t offset;
    size_t length;
    int prot;  /* PROT_READ | PROT_WRITE */
    int flags; /* MAP_SHARED */
};

/* Connects to kvmchand. NULL with errno (ENOENT/ECONNREFUSED: no daemon; EPERM: the socket is
 * served by neither root nor this user). */
kvmchan_shmem_t *kvmchan_shmem_open(void);

/* Unmaps every region mapped through h with kvmchan_shmem_share/_map, releases the regions h
 * shared, gives back the mappings counted for mmap parameters, and frees h. NULL is ignored. */
void kvmchan_shmem_close(kvmchan_shmem_t *h);

/* Shares `pages` zero-filled 4096-byte pages (1 .. 262144) with `domain` (0: the host). Returns
 * the region mapped read-write in this process, and its id in *id_out. Errors: EINVAL (bad
 * argument), EMSGSIZE (too many pages), ESRCH (unknown domain), EOPNOTSUPP (a domain this daemon
 * cannot share with yet), EDQUOT (this user's quota), ENOSPC (the daemon's limit), ENOMEM. */
void *kvmchan_shmem_share(kvmchan_shmem_t *h, int domain, size_t pages, uint32_t *id_out);

/* The mmap parameters of region `id` created in `domain`. The daemon counts them as one
 * mapping of h until kvmchan_shmem_close(h): unmap your own mapping with munmap(). Errors:
 * ENOENT (no such region, released, or not yours to map), EINVAL. */
int kvmchan_shmem_mmap_params(kvmchan_shmem_t *h, int domain, uint32_t id, struct kvmchan_shmem_mmap_params *out);

/* Maps region `id` created in `domain`, read-write; its length in *length_out (may be NULL).
 * Errors as kvmchan_shmem_mmap_params. */
void *kvmchan_shmem_map(kvmchan_shmem_t *h, int domain, uint32_t id, size_t *length_out);

/* Unmaps a region mapped by kvmchan_shmem_share or _map (addr as they returned it) and tells
 * the daemon. EINVAL: addr is not such a mapping of h. */
int kvmchan_shmem_unmap(kvmchan_shmem_t *h, void *addr);

/* Releases a region h shared: nobody new can map it; existing mappings (this process's
 * included) stay valid, and its memory is freed once the last is gone. ENOENT: no such
 * region of this domain (or already released); EPERM: shared through another handle. */
int kvmchan_shmem_release(kvmchan_shmem_t *h, uint32_t id);

#ifdef __cplusplus
}
#endif

#endif /* KVMCHAN_SHMEM_H */
