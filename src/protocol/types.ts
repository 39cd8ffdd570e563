/**
 * Typed bodies of every message (docs/wire-protocol.md §6–§7), and the frame-level unions the
 * daemon and the client switch on. Field names are the spec's, in camelCase.
 */
import type { Command, CommandId, EndpointState, Event, EventId, PoolState, ShutdownReason, VchanRole } from './constants.js';
import type { Empty } from './fields.js';

// ---- §6.1 GET_VERSION
export type GetVersionRequest = Empty;
export interface GetVersionReply {
  version: number;
  maxPayload: number;
}

// ---- §6.2 CHECK_COMMAND
export interface CheckCommandRequest {
  /** The command id asked about. */
  id: number;
}
export type CheckCommandReply = Empty;

// ---- §6.3 VCHAN_SERVER_INIT
export interface VchanServerInitRequest {
  peerDomain: number;
  port: number;
  readMin: number;
  writeMin: number;
}

/** §6.3: what an endpoint needs to map and drive its vchan; comes with fds [shm, wait, kick]. */
export interface VchanInfo {
  handle: number;
  role: VchanRole;
  readOrder: number;
  writeOrder: number;
  localDomain: number;
  peerDomain: number;
  port: number;
  shmOffset: number;
  shmLength: number;
}

// ---- §6.4 VCHAN_CLIENT_INIT
export interface VchanClientInitRequest {
  serverDomain: number;
  port: number;
  /** 0: fail at once (-ENOENT) if there is no server; 0xFFFFFFFF: wait forever. */
  timeoutMs: number;
  /** Must be 0 in version 1. */
  flags: number;
}

// ---- §6.5 VCHAN_CLOSE
export interface VchanCloseRequest {
  handle: number;
}

// ---- §6.6 LIST_DOMAINS / §6.7 LIST_VCHANS
export interface ListRequest {
  /** First domain id / handle to report (inclusive). */
  start: number;
}

export interface DomainEntry {
  domain: number;
  flags: number;
  vchans: number;
  name: string;
}

export interface ListDomainsReply {
  /** Cursor for the next call; 0 when the listing is complete. */
  next: number;
  entries: DomainEntry[];
}

export interface VchanEntry {
  handle: number;
  serverDomain: number;
  clientDomain: number;
  port: number;
  serverState: EndpointState;
  clientState: EndpointState;
  readOrder: number;
  writeOrder: number;
  serverPid: number;
  clientPid: number;
  bytesClientToServer: number;
  bytesServerToClient: number;
}

export interface ListVchansReply {
  next: number;
  entries: VchanEntry[];
}

// ---- §7.1 EVENT_SHUTDOWN
export interface ShutdownEvent {
  reason: ShutdownReason;
}

// ---- §7.3 EVENT_PEER_CLOSED
export interface PeerClosedEvent {
  /** The vchan (VchanInfo.handle) whose other side is gone. */
  handle: number;
}

// ---- §6.10 LIST_POOLS
export interface PoolEntry {
  pool: number;
  /** Member guests (0 = none: a host pool has one member). */
  memberA: number;
  memberB: number;
  vectors: number;
  freeVectors: number;
  vchans: number;
  state: PoolState;
  /** Bit 0: memberA attached, bit 1: memberB attached. */
  joined: number;
  size: number;
  freeBytes: number;
}

export interface ListPoolsReply {
  next: number;
  entries: PoolEntry[];
}

// ---- §6.8 guest ↔ host control
export interface GuestHelloRequest {
  version: number;
}
export interface GuestHelloReply {
  /** The guest's domain id, from the device it is attached to. */
  domain: number;
  name: string;
}
/** `conn` names the guest-local connection the request is for; the host scopes it to the guest. */
export interface GuestVchanServerInitRequest {
  conn: number;
  peerDomain: number;
  port: number;
  readMin: number;
  writeMin: number;
}
export interface GuestVchanClientInitRequest {
  conn: number;
  serverDomain: number;
  port: number;
  timeoutMs: number;
  flags: number;
}
export interface GuestVchanCloseRequest {
  conn: number;
  handle: number;
}
export interface GuestConnClosedRequest {
  conn: number;
}
/** A vchan on a pool device: the guest turns it into fds itself. */
export interface GuestVchanInfo {
  handle: number;
  role: VchanRole;
  readOrder: number;
  writeOrder: number;
  localDomain: number;
  peerDomain: number;
  port: number;
  /** Pool id (from EVENT_POOL_ADDED). */
  pool: number;
  /** Our interrupt vector on that pool. */
  vector: number;
  /** IVPosition and vector to ring to kick the peer. */
  peerId: number;
  peerVector: number;
  shmOffset: number;
  shmLength: number;
}
// ---- §7.2 EVENT_POOL_ADDED
export interface PoolAddedEvent {
  pool: number;
  /** Our IVPosition on the pool device. */
  peerId: number;
  vectors: number;
  size: number;
  /** Socket file name in the guest's device directory (simulated guests). */
  socket: string;
}

// ---- §6.11 shared-memory regions (docs/shmem.md)
export interface ShmShareRequest {
  /** The target domain: the one domain besides the creator that may map the region. */
  domain: number;
  pages: number;
}
export interface ShmMapRequest {
  /** The owner (creator's) domain: with the id, the region's name. */
  domain: number;
  id: number;
}
export type ShmUnmapRequest = ShmMapRequest;
export interface ShmReleaseRequest {
  id: number;
}
/** §6.11: a region and where it is in the `shm` fd that comes with it (the mmap parameters). */
export interface ShmRegionInfo {
  id: number;
  ownerDomain: number;
  targetDomain: number;
  pages: number;
  shmOffset: number;
  shmLength: number;
}

/** §6.11 LIST_REGIONS: one region as `kvmchan status` shows it. */
export interface RegionEntry {
  id: number;
  ownerDomain: number;
  targetDomain: number;
  pages: number;
  /** RegionFlag bits. */
  flags: number;
  /** Mappings not yet given back (SHM_SHARE / SHM_MAP holds), all connections summed. */
  holds: number;
  /** The creating host process's uid; NO_UID when a guest created the region. */
  creatorUid: number;
  /** Its pid; 0 when unknown or not shown to the caller. */
  creatorPid: number;
}
export interface ListRegionsReply {
  next: number;
  entries: RegionEntry[];
}

// ---- §6.8 shared-memory regions on the guest link (docs/shmem.md §6)
export interface GuestShmShareRequest extends ShmShareRequest {
  /** The guest-local connection the region is created for. */
  conn: number;
}
export interface GuestShmMapRequest extends ShmMapRequest {
  conn: number;
}
export type GuestShmUnmapRequest = GuestShmMapRequest;
export interface GuestShmReleaseRequest extends ShmReleaseRequest {
  conn: number;
}
/** A region on a pool device: the guest maps `shmLength` bytes at `shmOffset` of pool `pool`. */
export interface GuestShmRegionInfo extends ShmRegionInfo {
  pool: number;
}

/** Request body by command id. */
export interface RequestBodies {
  [Command.GET_VERSION]: GetVersionRequest;
  [Command.CHECK_COMMAND]: CheckCommandRequest;
  [Command.VCHAN_SERVER_INIT]: VchanServerInitRequest;
  [Command.VCHAN_CLIENT_INIT]: VchanClientInitRequest;
  [Command.VCHAN_CLOSE]: VchanCloseRequest;
  [Command.LIST_DOMAINS]: ListRequest;
  [Command.LIST_VCHANS]: ListRequest;
  [Command.LIST_POOLS]: ListRequest;
  [Command.SHM_SHARE]: ShmShareRequest;
  [Command.SHM_MAP]: ShmMapRequest;
  [Command.SHM_UNMAP]: ShmUnmapRequest;
  [Command.SHM_RELEASE]: ShmReleaseRequest;
  [Command.LIST_REGIONS]: ListRequest;
  [Command.GUEST_HELLO]: GuestHelloRequest;
  [Command.GUEST_VCHAN_SERVER_INIT]: GuestVchanServerInitRequest;
  [Command.GUEST_VCHAN_CLIENT_INIT]: GuestVchanClientInitRequest;
  [Command.GUEST_VCHAN_CLOSE]: GuestVchanCloseRequest;
  [Command.GUEST_CONN_CLOSED]: GuestConnClosedRequest;
  [Command.GUEST_SHM_SHARE]: GuestShmShareRequest;
  [Command.GUEST_SHM_MAP]: GuestShmMapRequest;
  [Command.GUEST_SHM_UNMAP]: GuestShmUnmapRequest;
  [Command.GUEST_SHM_RELEASE]: GuestShmReleaseRequest;
}

/** Body of a successful (err 0) reply by command id. */
export interface ReplyBodies {
  [Command.GET_VERSION]: GetVersionReply;
  [Command.CHECK_COMMAND]: CheckCommandReply;
  [Command.VCHAN_SERVER_INIT]: VchanInfo;
  [Command.VCHAN_CLIENT_INIT]: VchanInfo;
  [Command.VCHAN_CLOSE]: Empty;
  [Command.LIST_DOMAINS]: ListDomainsReply;
  [Command.LIST_VCHANS]: ListVchansReply;
  [Command.LIST_POOLS]: ListPoolsReply;
  [Command.SHM_SHARE]: ShmRegionInfo;
  [Command.SHM_MAP]: ShmRegionInfo;
  [Command.SHM_UNMAP]: Empty;
  [Command.SHM_RELEASE]: Empty;
  [Command.LIST_REGIONS]: ListRegionsReply;
  [Command.GUEST_HELLO]: GuestHelloReply;
  [Command.GUEST_VCHAN_SERVER_INIT]: GuestVchanInfo;
  [Command.GUEST_VCHAN_CLIENT_INIT]: GuestVchanInfo;
  [Command.GUEST_VCHAN_CLOSE]: Empty;
  [Command.GUEST_CONN_CLOSED]: Empty;
  [Command.GUEST_SHM_SHARE]: GuestShmRegionInfo;
  [Command.GUEST_SHM_MAP]: GuestShmRegionInfo;
  [Command.GUEST_SHM_UNMAP]: Empty;
  [Command.GUEST_SHM_RELEASE]: Empty;
}

export interface EventBodies {
  [Event.SHUTDOWN]: ShutdownEvent;
  [Event.PEER_CLOSED]: PeerClosedEvent;
  [Event.POOL_ADDED]: PoolAddedEvent;
}

/** A frame as it came off a transport, before the payload is interpreted (§2, §3). */
export interface Frame {
  readonly id: number;
  readonly seq: number;
  /** The payload; may be a view into the receive buffer, copy it to keep it. */
  readonly payload: Buffer;
  /** fds received with the frame (seqpacket only). The receiver owns and must close them. */
  readonly fds: readonly number[];
}

export interface RequestOf<K extends CommandId> {
  readonly kind: 'request';
  readonly id: K;
  readonly seq: number;
  readonly body: RequestBodies[K];
  readonly fds: readonly number[];
}

/** A decoded request; `switch (req.id)` narrows `req.body`. */
export type AnyRequest = { [K in CommandId]: RequestOf<K> }[CommandId];

export interface ReplyOkOf<K extends CommandId> {
  readonly kind: 'reply';
  readonly ok: true;
  readonly id: K;
  readonly seq: number;
  readonly err: 0;
  readonly body: ReplyBodies[K];
  readonly fds: readonly number[];
}

export interface ReplyErrOf<K extends number> {
  readonly kind: 'reply';
  readonly ok: false;
  readonly id: K;
  readonly seq: number;
  /** A negative errno (§4.2). */
  readonly err: number;
  readonly body: undefined;
  readonly fds: readonly number[];
}

export type ReplyOf<K extends CommandId> = ReplyOkOf<K> | ReplyErrOf<K>;

/**
 * A decoded reply; `if (r.ok)` narrows to the success replies, then `switch (r.id)` narrows the
 * body. An error reply may carry any id: the daemon answers -ENOSYS to ids it does
 * not know, repeating them.
 */
export type AnyReply = { [K in CommandId]: ReplyOf<K> }[CommandId] | ReplyErrOf<number>;

export interface EventOf<K extends EventId> {
  readonly kind: 'event';
  readonly id: K;
  readonly seq: 0;
  readonly body: EventBodies[K];
}

export type AnyEvent = { [K in EventId]: EventOf<K> }[EventId];

/** Transports (§3). */
export type Transport = 'seqpacket' | 'stream';
