/**
 * Numbers fixed by docs/wire-protocol.md. Every value here is part of the wire contract:
 * changing one is a protocol version bump (§9 of the spec).
 */

/** Value returned by GET_VERSION (wire-protocol.md §6.1). */
export const PROTOCOL_VERSION = 1;

/** Bytes in the frame header `{u16 id, u16 size, u32 seq}` (§2). */
export const HEADER_SIZE = 8;

/**
 * Largest payload this implementation sends or accepts (§2). The u16 `size` field could say
 * 65535; a bigger payload than this is a framing error, so a receiver's buffer is bounded.
 */
export const MAX_PAYLOAD = 16384;

/** Largest datagram on the seqpacket transport: a receive buffer of this size suffices (§3.1). */
export const MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD;

/** Room for this many fds must be reserved in the ancillary buffer of every recvmsg (§3.1). */
export const MAX_FDS = 8;

/** Bytes of `{s32 err, u32 padding}` at the start of every reply payload (§4.2). */
export const REPLY_HEADER_SIZE = 8;

/** Ids with this bit set are events (daemon → client, seq 0), never requests (§4.3). */
export const EVENT_BIT = 0x8000;

/** Command ids (§6). Replies repeat the id of their request. */
export const Command = {
  GET_VERSION: 0x0001,
  CHECK_COMMAND: 0x0002,
  VCHAN_SERVER_INIT: 0x0010,
  VCHAN_CLIENT_INIT: 0x0011,
  VCHAN_CLOSE: 0x0012,
  LIST_DOMAINS: 0x0020,
  LIST_VCHANS: 0x0021,
  LIST_POOLS: 0x0022,
  // Shared-memory regions (§6.11, docs/shmem.md), seqpacket only: the replies carry an fd.
  SHM_SHARE: 0x0030,
  SHM_MAP: 0x0031,
  SHM_UNMAP: 0x0032,
  SHM_RELEASE: 0x0033,
  /** The regions a caller may see, for `kvmchan status` (§6.11). */
  LIST_REGIONS: 0x0034,
  // Guest link (guest ↔ host, §6.8), stream transport only.
  GUEST_HELLO: 0x0101,
  GUEST_VCHAN_SERVER_INIT: 0x0110,
  GUEST_VCHAN_CLIENT_INIT: 0x0111,
  GUEST_VCHAN_CLOSE: 0x0112,
  GUEST_CONN_CLOSED: 0x0113,
  // Shared-memory regions for a guest's local clients (§6.8, docs/shmem.md §6).
  GUEST_SHM_SHARE: 0x0114,
  GUEST_SHM_MAP: 0x0115,
  GUEST_SHM_UNMAP: 0x0116,
  GUEST_SHM_RELEASE: 0x0117,
} as const;
export type CommandId = (typeof Command)[keyof typeof Command];
export type CommandName = keyof typeof Command;

/** Event ids (§7). */
export const Event = {
  SHUTDOWN: 0x8001,
  /** One side of a vchan the connection holds is gone (§7.3): re-check that vchan's ring. */
  PEER_CLOSED: 0x8002,
  /** Host → guest: a pool device to attach to (§7.2). */
  POOL_ADDED: 0x8101,
} as const;
export type EventId = (typeof Event)[keyof typeof Event];
export type EventName = keyof typeof Event;

/** Id ranges reserved for later issues (§6): a v1 daemon answers -ENOSYS to them. */
export const RESERVED_RANGES: readonly (readonly [first: number, last: number, use: string])[] = [
  [0x0035, 0x003f, 'shared-memory regions'],
  [0x0102, 0x010f, 'guest-host control'],
  [0x0118, 0x01ff, 'guest-host control'],
];

/** VchanInfo.role (§6.3). */
export const VchanRole = { SERVER: 0, CLIENT: 1 } as const;
export type VchanRole = (typeof VchanRole)[keyof typeof VchanRole];

/** Endpoint states in LIST_VCHANS, same values as the ring control page (ring-protocol.md §2.1). */
export const EndpointState = { CLOSED: 0, CONNECTED: 1, WAITING: 2 } as const;
export type EndpointState = (typeof EndpointState)[keyof typeof EndpointState];

/** Ring orders a VchanInfo may carry (ring-protocol.md §1: 1 KiB … 256 MiB per direction). */
export const MIN_RING_ORDER = 10;
export const MAX_RING_ORDER = 28;

/** VCHAN_CLIENT_INIT.timeout_ms special values (§6.4). */
export const TIMEOUT_NONE = 0;
export const TIMEOUT_INFINITE = 0xffffffff;

/** VCHAN_CLIENT_INIT.flags: no flag is defined in version 1, so the field must be 0. */
export const CLIENT_INIT_FLAGS_MASK = 0;

/** DomainEntry.flags bits (§6.6). Readers ignore bits they do not know. */
export const DomainFlag = {
  HOST: 1 << 0,
  CONTROL_UP: 1 << 1,
  SELF: 1 << 2,
} as const;

/** Bytes of DomainEntry.name, including at least one terminating NUL (§6.6). */
export const DOMAIN_NAME_SIZE = 32;

/** EVENT_SHUTDOWN.reason (§7.1). */
export const ShutdownReason = { STOP: 0, RESTART: 1, FAILURE: 2 } as const;
export type ShutdownReason = (typeof ShutdownReason)[keyof typeof ShutdownReason];

/**
 * Linux errno values (asm-generic numbering, shared by x86-64, arm and arm64). Replies carry
 * them negated. A C implementation uses <errno.h>; these must agree with it.
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOSPC: 28,
  EPIPE: 32,
  ERANGE: 34,
  ENOSYS: 38,
  EPROTO: 71,
  EOVERFLOW: 75,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EDQUOT: 122,
  ECANCELED: 125,
} as const;
export type ErrnoName = keyof typeof Errno;

const errnoNames = new Map<number, ErrnoName>((Object.entries(Errno) as [ErrnoName, number][]).map(([name, value]) => [value, name]));

/** `2` or `-2` → `'ENOENT'`; a number outside the table → `'E<n>'` (e.g. `'E200'`). */
export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  return errnoNames.get(n) ?? `E${n}`;
}

/** `'ENOENT'` → 2; undefined for names outside the table. */
export function errnoValue(name: string): number | undefined {
  return Object.hasOwn(Errno, name) ? Errno[name as ErrnoName] : undefined;
}

/** RegionEntry.flags bits (§6.11). Readers ignore bits they do not know. */
export const RegionFlag = {
  RELEASED: 1 << 0,
} as const;

/** RegionEntry.creator_uid of a region a guest created: no host uid (§6.11). */
export const NO_UID = 0xffffffff;

/** Page size of shared-memory regions: SHM_SHARE counts pages of this size (§6.11). */
export const SHM_PAGE_SIZE = 4096;
/** Most pages of one region (1 GiB): SHM_SHARE above it is -EMSGSIZE (§6.11). */
export const MAX_SHM_PAGES = 262144;

/** Bytes of EVENT_POOL_ADDED.socket, including at least one terminating NUL (§7.2). */
export const POOL_SOCKET_NAME_SIZE = 64;

/** PoolEntry.state (§6.10). */
export const PoolState = { READY: 0, PENDING: 1, RETIRED: 2 } as const;
export type PoolState = (typeof PoolState)[keyof typeof PoolState];
/** The same states by name, indexed by their wire value: the daemon's and the CLI's words. */
export const POOL_STATE_NAMES = ['ready', 'pending', 'retired'] as const;
export type PoolStateName = (typeof POOL_STATE_NAMES)[number];
