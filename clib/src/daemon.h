/*
 * Client side of the kvmchand local socket protocol (docs/wire-protocol.md):
 * AF_UNIX SOCK_SEQPACKET, one frame {u16 id, u16 size, u32 seq} + payload per
 * datagram, fds as SCM_RIGHTS in the same datagram, little-endian.
 *
 * Every vchan owns one connection (the vchan lives as long as it), so there is
 * no global state here: fork and threads cannot share a connection by accident.
 */
#ifndef KVC_DAEMON_H
#define KVC_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#define KVC_PROTOCOL_VERSION 1u
#define KVC_MAX_PAYLOAD 16384u
#define KVC_MAX_FDS 8

#define KVC_CMD_GET_VERSION 0x0001u
#define KVC_CMD_VCHAN_SERVER_INIT 0x0010u
#define KVC_CMD_VCHAN_CLIENT_INIT 0x0011u
#define KVC_CMD_VCHAN_CLOSE 0x0012u
#define KVC_EVENT_BIT 0x8000u
#define KVC_EVENT_SHUTDOWN 0x8001u
#define KVC_EVENT_PEER_CLOSED 0x8002u

#define KVC_TIMEOUT_NONE 0u
#define KVC_TIMEOUT_INFINITE 0xFFFFFFFFu

struct kvc_conn {
    int fd;
    uint32_t seq;         /* seq of the last request sent */
    uint16_t pending_id;  /* id of the request awaiting a reply, 0 if none */
    uint32_t max_payload; /* from GET_VERSION */
};

/* VchanInfo (40 bytes on the wire). */
struct kvc_vchan_info {
    uint32_t handle;
    uint8_t role;
    uint8_t read_order, write_order;
    uint32_t local_domain, peer_domain, port;
    uint64_t shm_offset, shm_length;
};

/* fds of a VCHAN_*_INIT reply, in wire order. */
struct kvc_vchan_fds {
    int shm, wait, kick;
};

/* The socket path: $KVMCHAN_RUNTIME_DIR, /run/kvmchand (root), $XDG_RUNTIME_DIR/kvmchand,
 * /tmp/kvmchand-<uid>; each followed by /kvmchand.sock. Returns 0 or -ENAMETOOLONG. */
int kvc_socket_path(char *buf, size_t len);

/* Connects (SOCK_CLOEXEC) and exchanges GET_VERSION. 0 or -errno. */
int kvc_conn_open(struct kvc_conn *c);
void kvc_conn_close(struct kvc_conn *c);

/* Sends a request; 0 or -errno. Only one request may be outstanding. */
int kvc_conn_send(struct kvc_conn *c, uint16_t id, const void *payload, uint16_t size);

/*
 * Receives the reply to the outstanding request (events are skipped).
 * Returns the daemon's err (0 or negative errno), -EAGAIN if `nonblock` and
 * nothing is there yet, or another -errno for local/protocol failures (the
 * connection is then unusable). On err == 0, up to `max` data bytes are copied
 * to `data` (*len set) and the fds are returned (caller owns them); on any
 * error no fd is left open.
 */
int kvc_conn_recv_reply(struct kvc_conn *c, int nonblock, void *data, size_t max, size_t *len, int *fds, int max_fds,
                        int *nfds);

/* Request + reply in one call (blocking). */
int kvc_conn_call(struct kvc_conn *c, uint16_t id, const void *payload, uint16_t size, void *data, size_t max,
                  size_t *len, int *fds, int max_fds, int *nfds);

/* Builders / parsers of the vchan messages. */
int kvc_request_server_init(struct kvc_conn *c, uint32_t peer_domain, uint32_t port, uint32_t read_min,
                            uint32_t write_min);
int kvc_request_client_init(struct kvc_conn *c, uint32_t server_domain, uint32_t port, uint32_t timeout_ms);
/* Receives a VCHAN_*_INIT reply: 0 with info+fds, or negative errno. */
int kvc_recv_vchan_reply(struct kvc_conn *c, int nonblock, struct kvc_vchan_info *info, struct kvc_vchan_fds *fds);

#endif
