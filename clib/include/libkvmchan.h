/*
 * libkvmchan.h - the libkvmchan API, implemented by kvmchan.
 *
 * Link with libkvmchan (pkg-config --cflags --libs kvmchan). Source-compatible
 * with programs written for the original libkvmchan: its vchan calls and its
 * shared-memory region calls (libkvmchan_shmem_*, at the end of this file).
 *
 * All I/O calls block. libkvmchan_get_eventfd() returns a descriptor that is
 * readable whenever data is waiting or the peer has closed (no data_ready() call
 * needed), and for freed space once libkvmchan_buffer_space() asked for it;
 * clear it with libkvmchan_clear_eventfd() before waiting on it again. It is an epoll
 * descriptor (the vchan's eventfd and its daemon connection, which reports the peer's death):
 * poll, select or epoll it, never read it. docs/clib.md lists the differences from the
 * original library.
 */
#ifndef KVMCHAN_LIBKVMCHAN_H
#define KVMCHAN_LIBKVMCHAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Values of libkvmchan_get_state(). */
#ifndef VCHAN_DISCONNECTED
#define VCHAN_DISCONNECTED 0 /* peer closed or its domain died */
#define VCHAN_CONNECTED 1    /* both ends attached */
#define VCHAN_WAITING 2      /* server without a client yet */
#endif

/* Opaque vchan handle. */
struct libkvmchan;

/* Server end towards `domain` on `port`; rings of at least read_min / write_min
 * bytes (powers of two, 1 KiB .. 256 MiB). NULL with errno set on failure. */
struct libkvmchan *libkvmchan_server_init(uint32_t domain, uint32_t port, size_t read_min, size_t write_min);

/* Client end; waits for the server to appear. NULL with errno set on failure. */
struct libkvmchan *libkvmchan_client_init(uint32_t domain, uint32_t port);

/* Packet receive / send (exactly `size` bytes) and stream read / write (read:
 * at least one byte; write: all of them). Return the byte count, or -1 with
 * errno set (EPIPE: the peer is gone; EMSGSIZE: larger than the ring). */
int libkvmchan_recv(struct libkvmchan *chan, void *data, size_t size);
int libkvmchan_send(struct libkvmchan *chan, void *data, size_t size);
int libkvmchan_read(struct libkvmchan *chan, void *data, size_t size);
int libkvmchan_write(struct libkvmchan *chan, void *data, size_t size);

/* The descriptor to select()/poll() on, and how to consume its event. */
int libkvmchan_get_eventfd(struct libkvmchan *chan);
void libkvmchan_clear_eventfd(struct libkvmchan *chan);

/* Closes and frees the vchan. Returns false only for a NULL handle. */
bool libkvmchan_close(struct libkvmchan *chan);

/* Bytes readable / writable now (each also arms the matching notification). */
size_t libkvmchan_data_ready(struct libkvmchan *chan);
size_t libkvmchan_buffer_space(struct libkvmchan *chan);

/* VCHAN_CONNECTED, VCHAN_WAITING or VCHAN_DISCONNECTED, from shared memory;
 * -1 for a NULL handle. */
int libkvmchan_get_state(struct libkvmchan *chan);

/*
 * Shared-memory regions: page_count pages shared with one other domain under one
 * uint32_t id (docs/shmem.md; docs/clib.md, "libkvmchan_shmem_*"). The same
 * regions as <kvmchan-shmem.h>: a region created here can be mapped there and
 * the reverse. Every call is thread-safe; -1 or NULL set errno.
 */

/* Opaque handle: one connection to kvmchand and the regions obtained through it. */
struct libkvmchan_shmem;

/* Opens a handle. NULL with errno (ENOENT/ECONNREFUSED: no daemon; EPERM: the
 * socket is served by neither root nor this user). */
struct libkvmchan_shmem *libkvmchan_shmem_start(void);

/* Closes every region still open in the handle (as libkvmchan_shmem_region_close
 * would: regions it created are released) and frees it. NULL is ignored. */
void libkvmchan_shmem_end(struct libkvmchan_shmem *handle);

/* Allocates page_count zero-filled 4096-byte pages (1 .. 262144) that client_dom
 * (0: the host) may map, maps them read-write here and returns them; the id that
 * names the whole region goes to *region_id_out (may be NULL). NULL with errno:
 * EINVAL (NULL handle, page_count 0), EMSGSIZE (too many pages), ESRCH (unknown
 * domain), EOPNOTSUPP (a domain this daemon cannot share with yet), EDQUOT,
 * ENOSPC, ENOMEM. */
void *libkvmchan_shmem_region_create(struct libkvmchan_shmem *handle, uint32_t client_dom, uint32_t page_count,
                                     uint32_t *region_id_out);

/* Maps region region_id that server_dom created for this domain; each call maps
 * it again. NULL with errno ENOENT - for an id that does not exist, was closed by
 * its creator, or that this process may not map (the same answer) - or EINVAL. */
void *libkvmchan_shmem_region_connect(struct libkvmchan_shmem *handle, uint32_t server_dom, uint32_t region_id);

/* Closes the region mapped at ptr (a pointer returned by _region_create or
 * _region_connect of this handle). Creator: the region is released - nobody new
 * can connect, existing connections keep valid memory, the memory is freed when
 * the last is closed - and unmapped here. Connector: unmapped here; it can connect
 * again while the creator keeps the region. -1 with errno EINVAL for any other
 * pointer (a second close included). */
int libkvmchan_shmem_region_close(struct libkvmchan_shmem *handle, void *ptr);

/* As libkvmchan_shmem_region_close, for the mapping of this handle named by the
 * other domain (client_dom for a region it created, server_dom for one it
 * connected to) and the id; of several such mappings, the most recent. -1 with
 * errno ENOENT when this handle has none. */
int libkvmchan_shmem_region_close_by_id(struct libkvmchan_shmem *handle, uint32_t peer_dom, uint32_t region_id);

#ifdef __cplusplus
}
#endif

#endif /* KVMCHAN_LIBKVMCHAN_H */
