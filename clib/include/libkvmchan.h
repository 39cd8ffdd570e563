/*
 * libkvmchan.h - the libkvmchan vchan API, implemented by kvmchan.
 *
 * Link with libkvmchan (pkg-config --cflags --libs kvmchan). Source-compatible
 * with programs written for the original libkvmchan's vchan calls; the
 * shared-memory region calls (libkvmchan_shmem_*) are not provided yet.
 *
 * All I/O calls block. libkvmchan_get_eventfd() returns a descriptor that is
 * readable whenever data is waiting or the peer has closed (no data_ready() call
 * needed), and for freed space once libkvmchan_buffer_space() asked for it;
 * clear it with libkvmchan_clear_eventfd() before waiting on it again. docs/clib.md lists the differences from the
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

#ifdef __cplusplus
}
#endif

#endif /* KVMCHAN_LIBKVMCHAN_H */
