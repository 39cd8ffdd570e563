/*
 * libvchan.h - Qubes-compatible vchan API for KVM/QEMU (kvmchan).
 *
 * Link with libvchan-kvm (pkg-config --cflags --libs vchan-kvm). Programs written
 * for the Qubes OS libvchan interface (qrexec, qubesdb, the GUI agent, ...) build
 * unchanged against this header. Setup goes through the local kvmchand daemon;
 * every byte then moves through shared memory, signalled by eventfds.
 *
 * Semantics follow the Xen/Qubes contract; docs/clib.md lists the differences.
 * Summary:
 *  - write/read are stream calls (any amount), send/recv are packet calls
 *    (all or nothing).
 *  - In blocking mode (the default) they wait; in non-blocking mode they return
 *    0 when nothing can be done now.
 *  - They return -1 once the peer is gone: writes at once, reads after the data
 *    still in the ring has been read.
 *  - libvchan_fd_for_select() becomes readable for new data, for freed space
 *    and for the peer closing, provided the caller armed the notification with
 *    libvchan_data_ready()/libvchan_buffer_space() before polling; after it polls
 *    readable, call libvchan_wait() to consume the event.
 *  - One thread may read while another writes; other concurrent use of one
 *    vchan needs the caller's own locking. Different vchans are independent.
 */
#ifndef KVMCHAN_LIBVCHAN_H
#define KVMCHAN_LIBVCHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* This is the KVM implementation of the interface. */
#define LIBVCHAN_KVM 1

/* An event handle: a pollable file descriptor. */
typedef int EVTCHN;

/* Values of libvchan_is_open(). */
#ifndef VCHAN_DISCONNECTED
#define VCHAN_DISCONNECTED 0 /* peer closed or its domain died */
#define VCHAN_CONNECTED 1    /* both ends attached */
#define VCHAN_WAITING 2      /* server without a client yet, or async client without a server yet */
#endif

/* Opaque vchan handle. */
struct libvchan;
typedef struct libvchan libvchan_t;

/*
 * Creates the server end of a vchan towards `domain` (0 is the host) on `port`.
 * The ring this side reads holds at least read_min bytes, the ring it writes at
 * least write_min bytes (each rounded up to a power of two, minimum 1 KiB,
 * maximum 256 MiB); libvchan_buffer_space() right after this call reports the
 * real size of the write ring. The vchan starts in blocking mode. Returns NULL
 * with errno set on failure (EEXIST: this port toward this domain is already
 * served; docs/clib.md lists the others).
 */
libvchan_t *libvchan_server_init(int domain, int port, size_t read_min, size_t write_min);

/*
 * Connects to the server of `domain` on `port`, waiting as long as needed for
 * the server to appear (or, when its vchan already has a client, to serve the
 * port again). Fails (NULL, errno set) if the domain goes away (ESRCH), or if
 * the daemon cannot be reached. The vchan starts in blocking mode.
 */
libvchan_t *libvchan_client_init(int domain, int port);

/*
 * Starts connecting without blocking. Returns a handle that is not connected
 * yet and stores in *watch_fd a descriptor to poll for readability; each time
 * it is readable call libvchan_client_init_async_finish(). The descriptor
 * belongs to the vchan: do not close it. To give up, libvchan_close() the handle.
 */
libvchan_t *libvchan_client_init_async(int domain, int port, EVTCHN *watch_fd);

/*
 * Continues an asynchronous connect: 0 when connected (the vchan is then in
 * the given blocking mode), 1 when still waiting, a negative value on failure
 * (the caller then closes the handle).
 */
int libvchan_client_init_async_finish(libvchan_t *ctrl, bool blocking);

/* Stream write: blocking mode writes everything and returns size; non-blocking
 * writes what fits now (possibly 0). -1 if the peer is gone. */
int libvchan_write(libvchan_t *ctrl, const void *data, size_t size);

/* Packet send: all `size` bytes or nothing. Blocking mode waits for room and
 * fails (-1, EMSGSIZE) if size exceeds the ring; non-blocking returns 0 when
 * there is not enough room. -1 if the peer is gone. */
int libvchan_send(libvchan_t *ctrl, const void *data, size_t size);

/* Stream read: at most `size` bytes; blocking mode waits for at least one.
 * Returns 0 in non-blocking mode when nothing is there; -1 once the peer is
 * gone and everything it wrote has been read. */
int libvchan_read(libvchan_t *ctrl, void *data, size_t size);

/* Packet receive: exactly `size` bytes or nothing (same waiting rules as send). */
int libvchan_recv(libvchan_t *ctrl, void *data, size_t size);

/* Blocks until the event descriptor fires and consumes the event. Always
 * blocking, whatever the mode. Returns 0, or -1 on error; 0 at once on a
 * client that is not connected yet. */
int libvchan_wait(libvchan_t *ctrl);

/* Closes this end (the peer sees VCHAN_DISCONNECTED and its fd fires) and frees
 * the handle. NULL is accepted. In a forked child, only the child's copies of
 * the resources are released; the parent's vchan is not affected. */
void libvchan_close(libvchan_t *ctrl);

/* The descriptor to poll: readable when an event is pending. -1 (errno
 * EAGAIN) on a client that is not connected yet. */
EVTCHN libvchan_fd_for_select(libvchan_t *ctrl);

/* VCHAN_CONNECTED, VCHAN_WAITING or VCHAN_DISCONNECTED, read from shared
 * memory (no daemon round trip). A ring corrupted by the peer reads as
 * VCHAN_DISCONNECTED. */
int libvchan_is_open(libvchan_t *ctrl);

/* Bytes ready to read; also asks the peer to signal the next write, so that
 * "check, then poll fd_for_select" never misses data. */
int libvchan_data_ready(libvchan_t *ctrl);

/* Bytes that can be written now; also asks the peer to signal when it reads. */
int libvchan_buffer_space(libvchan_t *ctrl);

/* Switches between blocking (true) and non-blocking (false) I/O. Called before
 * an asynchronous connect completed, the choice is remembered, but the
 * `blocking` argument of libvchan_client_init_async_finish() takes precedence. */
void libvchan_set_blocking(libvchan_t *ctrl, bool blocking);

#ifdef __cplusplus
}
#endif

#endif /* KVMCHAN_LIBVCHAN_H */
