/**
 * THE TABLE (docs/wire-protocol.md §6–§7): for every id, its layouts, how many fds travel with
 * it and on which transports it may be used. The codec consults nothing else.
 */
import {
  CLIENT_INIT_FLAGS_MASK,
  Command,
  type CommandId,
  type CommandName,
  DOMAIN_NAME_SIZE,
  EndpointState,
  Event,
  EVENT_BIT,
  type EventId,
  type EventName,
  MAX_FDS,
  MAX_PAYLOAD,
  MAX_RING_ORDER,
  MIN_RING_ORDER,
  POOL_SOCKET_NAME_SIZE,
  PoolState,
  REPLY_HEADER_SIZE,
  ShutdownReason,
  VchanRole,
} from './constants.js';
import {
  arrayOf,
  countOf,
  type Empty,
  enumOf,
  fixedString,
  flags32,
  pad16,
  pad32,
  pad8,
  rangeU8,
  type Struct,
  struct,
  u16,
  u32,
  u64,
} from './fields.js';
import type {
  CheckCommandRequest,
  DomainEntry,
  EventBodies,
  GetVersionReply,
  ListDomainsReply,
  ListRequest,
  ListVchansReply,
  ReplyBodies,
  RequestBodies,
  ShutdownEvent,
  Transport,
  VchanClientInitRequest,
  VchanCloseRequest,
  VchanEntry,
  VchanInfo,
  VchanServerInitRequest,
  GuestHelloReply,
  GuestHelloRequest,
  GuestVchanServerInitRequest,
  GuestVchanClientInitRequest,
  GuestVchanCloseRequest,
  GuestConnClosedRequest,
  GuestVchanInfo,
  PoolAddedEvent,
  PeerClosedEvent,
  PoolEntry,
  ListPoolsReply,
  ShmShareRequest,
  ShmMapRequest,
  ShmReleaseRequest,
  ShmRegionInfo,
  RegionEntry,
  ListRegionsReply,
  GuestShmShareRequest,
  GuestShmMapRequest,
  GuestShmReleaseRequest,
  GuestShmRegionInfo,
} from './types.js';

// ---- shared layouts

const empty = struct<Empty>('Empty')([]);
const ringOrder = rangeU8(MIN_RING_ORDER, MAX_RING_ORDER);
const listRequest = struct<ListRequest>('ListRequest')([['start', u32], pad32]);

export const VCHAN_INFO = struct<VchanInfo>('VchanInfo')([
  ['handle', u32],
  ['role', enumOf<VchanRole>(1, [VchanRole.SERVER, VchanRole.CLIENT])],
  ['readOrder', ringOrder],
  ['writeOrder', ringOrder],
  pad8,
  ['localDomain', u32],
  ['peerDomain', u32],
  ['port', u32],
  pad32,
  ['shmOffset', u64],
  ['shmLength', u64],
]);

/** §6.8: a vchan on a pool device (56 bytes; shm_offset and shm_length at offsets 40 and 48). */
export const GUEST_VCHAN_INFO = struct<GuestVchanInfo>('GuestVchanInfo')([
  ['handle', u32],
  ['role', enumOf<VchanRole>(1, [VchanRole.SERVER, VchanRole.CLIENT])],
  ['readOrder', ringOrder],
  ['writeOrder', ringOrder],
  pad8,
  ['localDomain', u32],
  ['peerDomain', u32],
  ['port', u32],
  ['pool', u32],
  ['vector', u32],
  ['peerId', u32],
  ['peerVector', u32],
  pad32,
  ['shmOffset', u64],
  ['shmLength', u64],
]);

export const DOMAIN_ENTRY = struct<DomainEntry>('DomainEntry')([
  ['domain', u32],
  // Unknown flag bits are ignored by readers (§6.6), so this is a plain u32.
  ['flags', u32],
  ['vchans', u32],
  pad32,
  ['name', fixedString(DOMAIN_NAME_SIZE)],
]);

export const VCHAN_ENTRY = struct<VchanEntry>('VchanEntry')([
  ['handle', u32],
  ['serverDomain', u32],
  ['clientDomain', u32],
  ['port', u32],
  ['serverState', enumOf<EndpointState>(1, [EndpointState.CLOSED, EndpointState.CONNECTED])],
  ['clientState', enumOf<EndpointState>(1, [EndpointState.CLOSED, EndpointState.CONNECTED, EndpointState.WAITING])],
  ['readOrder', ringOrder],
  ['writeOrder', ringOrder],
  ['serverPid', u32],
  ['clientPid', u32],
  pad32,
  ['bytesClientToServer', u64],
  ['bytesServerToClient', u64],
]);

export const POOL_ENTRY = struct<PoolEntry>('PoolEntry')([
  ['pool', u32],
  ['memberA', u32],
  ['memberB', u32],
  ['vectors', u32],
  ['freeVectors', u32],
  ['vchans', u32],
  ['state', enumOf<PoolState>(1, [PoolState.READY, PoolState.PENDING, PoolState.RETIRED])],
  ['joined', rangeU8(0, 3)],
  pad16,
  pad32,
  ['size', u64],
  ['freeBytes', u64],
]);

/** §6.11: a shared-memory region and its place in the `shm` fd (32 bytes). */
export const SHM_REGION_INFO = struct<ShmRegionInfo>('ShmRegionInfo')([
  ['id', u32],
  ['ownerDomain', u32],
  ['targetDomain', u32],
  ['pages', u32],
  ['shmOffset', u64],
  ['shmLength', u64],
]);
/** §6.11 LIST_REGIONS: one region (32 bytes). */
export const REGION_ENTRY = struct<RegionEntry>('RegionEntry')([
  ['id', u32],
  ['ownerDomain', u32],
  ['targetDomain', u32],
  ['pages', u32],
  // Unknown flag bits are ignored by readers (§6.11), so this is a plain u32.
  ['flags', u32],
  ['holds', u32],
  ['creatorUid', u32],
  ['creatorPid', u32],
]);
const shmName = struct<ShmMapRequest>('ShmMapRequest')([
  ['domain', u32],
  ['id', u32],
]);

/** §6.8: a region on a pool device (40 bytes): a ShmRegionInfo with the pool instead of an fd. */
export const GUEST_SHM_REGION_INFO = struct<GuestShmRegionInfo>('GuestShmRegionInfo')([
  ['id', u32],
  ['ownerDomain', u32],
  ['targetDomain', u32],
  ['pages', u32],
  ['pool', u32],
  pad32,
  ['shmOffset', u64],
  ['shmLength', u64],
]);

const guestShmName = struct<GuestShmMapRequest>('GuestShmMapRequest')([['conn', u32], ['domain', u32], ['id', u32], pad32]);

/** Entries that fit one list reply: MAX_PAYLOAD − {err, pad} − {count, next}. */
export const MAX_DOMAIN_ENTRIES = Math.floor((MAX_PAYLOAD - REPLY_HEADER_SIZE - 8) / DOMAIN_ENTRY.fixedSize);
export const MAX_VCHAN_ENTRIES = Math.floor((MAX_PAYLOAD - REPLY_HEADER_SIZE - 8) / VCHAN_ENTRY.fixedSize);
export const MAX_POOL_ENTRIES = Math.floor((MAX_PAYLOAD - REPLY_HEADER_SIZE - 8) / POOL_ENTRY.fixedSize);
export const MAX_REGION_ENTRIES = Math.floor((MAX_PAYLOAD - REPLY_HEADER_SIZE - 8) / REGION_ENTRY.fixedSize);

// ---- the command table

export interface CommandSpec<K extends CommandId> {
  readonly id: K;
  readonly name: CommandName;
  readonly request: Struct<RequestBodies[K]>;
  /** Layout of the data after `{err, pad}` in a successful reply. */
  readonly reply: Struct<ReplyBodies[K]>;
  /** Exact number of fds a request carries. */
  readonly requestFds: number;
  /** Exact number of fds a successful reply carries (error replies carry none). */
  readonly replyFds: number;
  readonly transports: readonly Transport[];
}

const both: readonly Transport[] = ['seqpacket', 'stream'];
const seqpacketOnly: readonly Transport[] = ['seqpacket'];
const streamOnly: readonly Transport[] = ['stream'];

export const COMMANDS: { readonly [K in CommandId]: CommandSpec<K> } = {
  [Command.GET_VERSION]: {
    id: Command.GET_VERSION,
    name: 'GET_VERSION',
    request: empty,
    reply: struct<GetVersionReply>('GetVersionReply')([
      ['version', u32],
      ['maxPayload', u32],
    ]),
    requestFds: 0,
    replyFds: 0,
    transports: both,
  },
  [Command.CHECK_COMMAND]: {
    id: Command.CHECK_COMMAND,
    name: 'CHECK_COMMAND',
    request: struct<CheckCommandRequest>('CheckCommandRequest')([['id', u16], pad16, pad32]),
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: both,
  },
  [Command.VCHAN_SERVER_INIT]: {
    id: Command.VCHAN_SERVER_INIT,
    name: 'VCHAN_SERVER_INIT',
    request: struct<VchanServerInitRequest>('VchanServerInitRequest')([
      ['peerDomain', u32],
      ['port', u32],
      ['readMin', u32],
      ['writeMin', u32],
    ]),
    reply: VCHAN_INFO,
    requestFds: 0,
    replyFds: 3,
    transports: seqpacketOnly,
  },
  [Command.VCHAN_CLIENT_INIT]: {
    id: Command.VCHAN_CLIENT_INIT,
    name: 'VCHAN_CLIENT_INIT',
    request: struct<VchanClientInitRequest>('VchanClientInitRequest')([
      ['serverDomain', u32],
      ['port', u32],
      ['timeoutMs', u32],
      ['flags', flags32(CLIENT_INIT_FLAGS_MASK)],
    ]),
    reply: VCHAN_INFO,
    requestFds: 0,
    replyFds: 3,
    transports: seqpacketOnly,
  },
  [Command.VCHAN_CLOSE]: {
    id: Command.VCHAN_CLOSE,
    name: 'VCHAN_CLOSE',
    request: struct<VchanCloseRequest>('VchanCloseRequest')([['handle', u32], pad32]),
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: both,
  },
  [Command.LIST_DOMAINS]: {
    id: Command.LIST_DOMAINS,
    name: 'LIST_DOMAINS',
    request: listRequest,
    reply: struct<ListDomainsReply>('ListDomainsReply')([countOf('entries'), ['next', u32], ['entries', arrayOf(DOMAIN_ENTRY)]]),
    requestFds: 0,
    replyFds: 0,
    transports: both,
  },
  [Command.LIST_VCHANS]: {
    id: Command.LIST_VCHANS,
    name: 'LIST_VCHANS',
    request: listRequest,
    reply: struct<ListVchansReply>('ListVchansReply')([countOf('entries'), ['next', u32], ['entries', arrayOf(VCHAN_ENTRY)]]),
    requestFds: 0,
    replyFds: 0,
    transports: both,
  },
  [Command.LIST_POOLS]: {
    id: Command.LIST_POOLS,
    name: 'LIST_POOLS',
    request: listRequest,
    reply: struct<ListPoolsReply>('ListPoolsReply')([countOf('entries'), ['next', u32], ['entries', arrayOf(POOL_ENTRY)]]),
    requestFds: 0,
    replyFds: 0,
    transports: both,
  },
  [Command.SHM_SHARE]: {
    id: Command.SHM_SHARE,
    name: 'SHM_SHARE',
    request: struct<ShmShareRequest>('ShmShareRequest')([
      ['domain', u32],
      ['pages', u32],
    ]),
    reply: SHM_REGION_INFO,
    requestFds: 0,
    replyFds: 1,
    transports: seqpacketOnly,
  },
  [Command.SHM_MAP]: {
    id: Command.SHM_MAP,
    name: 'SHM_MAP',
    request: shmName,
    reply: SHM_REGION_INFO,
    requestFds: 0,
    replyFds: 1,
    transports: seqpacketOnly,
  },
  [Command.SHM_UNMAP]: {
    id: Command.SHM_UNMAP,
    name: 'SHM_UNMAP',
    request: shmName,
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: seqpacketOnly,
  },
  [Command.SHM_RELEASE]: {
    id: Command.SHM_RELEASE,
    name: 'SHM_RELEASE',
    request: struct<ShmReleaseRequest>('ShmReleaseRequest')([['id', u32], pad32]),
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: seqpacketOnly,
  },
  [Command.LIST_REGIONS]: {
    id: Command.LIST_REGIONS,
    name: 'LIST_REGIONS',
    request: listRequest,
    reply: struct<ListRegionsReply>('ListRegionsReply')([countOf('entries'), ['next', u32], ['entries', arrayOf(REGION_ENTRY)]]),
    requestFds: 0,
    replyFds: 0,
    // Regions are served on local sockets only (§6.11); a guest link has no use for it yet.
    transports: seqpacketOnly,
  },
  [Command.GUEST_HELLO]: {
    id: Command.GUEST_HELLO,
    name: 'GUEST_HELLO',
    request: struct<GuestHelloRequest>('GuestHelloRequest')([['version', u32], pad32]),
    reply: struct<GuestHelloReply>('GuestHelloReply')([['domain', u32], pad32, ['name', fixedString(DOMAIN_NAME_SIZE)]]),
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_VCHAN_SERVER_INIT]: {
    id: Command.GUEST_VCHAN_SERVER_INIT,
    name: 'GUEST_VCHAN_SERVER_INIT',
    request: struct<GuestVchanServerInitRequest>('GuestVchanServerInitRequest')([
      ['conn', u32],
      ['peerDomain', u32],
      ['port', u32],
      ['readMin', u32],
      ['writeMin', u32],
      pad32,
    ]),
    reply: GUEST_VCHAN_INFO,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_VCHAN_CLIENT_INIT]: {
    id: Command.GUEST_VCHAN_CLIENT_INIT,
    name: 'GUEST_VCHAN_CLIENT_INIT',
    request: struct<GuestVchanClientInitRequest>('GuestVchanClientInitRequest')([
      ['conn', u32],
      ['serverDomain', u32],
      ['port', u32],
      ['timeoutMs', u32],
      ['flags', flags32(CLIENT_INIT_FLAGS_MASK)],
      pad32,
    ]),
    reply: GUEST_VCHAN_INFO,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_VCHAN_CLOSE]: {
    id: Command.GUEST_VCHAN_CLOSE,
    name: 'GUEST_VCHAN_CLOSE',
    request: struct<GuestVchanCloseRequest>('GuestVchanCloseRequest')([
      ['conn', u32],
      ['handle', u32],
    ]),
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_CONN_CLOSED]: {
    id: Command.GUEST_CONN_CLOSED,
    name: 'GUEST_CONN_CLOSED',
    request: struct<GuestConnClosedRequest>('GuestConnClosedRequest')([['conn', u32], pad32]),
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_SHM_SHARE]: {
    id: Command.GUEST_SHM_SHARE,
    name: 'GUEST_SHM_SHARE',
    request: struct<GuestShmShareRequest>('GuestShmShareRequest')([['conn', u32], ['domain', u32], ['pages', u32], pad32]),
    reply: GUEST_SHM_REGION_INFO,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_SHM_MAP]: {
    id: Command.GUEST_SHM_MAP,
    name: 'GUEST_SHM_MAP',
    request: guestShmName,
    reply: GUEST_SHM_REGION_INFO,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_SHM_UNMAP]: {
    id: Command.GUEST_SHM_UNMAP,
    name: 'GUEST_SHM_UNMAP',
    request: guestShmName,
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
  [Command.GUEST_SHM_RELEASE]: {
    id: Command.GUEST_SHM_RELEASE,
    name: 'GUEST_SHM_RELEASE',
    request: struct<GuestShmReleaseRequest>('GuestShmReleaseRequest')([
      ['conn', u32],
      ['id', u32],
    ]),
    reply: empty,
    requestFds: 0,
    replyFds: 0,
    transports: streamOnly,
  },
};

// ---- the event table

export interface EventSpec<K extends EventId> {
  readonly id: K;
  readonly name: EventName;
  readonly body: Struct<EventBodies[K]>;
  readonly transports: readonly Transport[];
}

export const EVENTS: { readonly [K in EventId]: EventSpec<K> } = {
  [Event.SHUTDOWN]: {
    id: Event.SHUTDOWN,
    name: 'SHUTDOWN',
    body: struct<ShutdownEvent>('ShutdownEvent')([
      ['reason', enumOf<ShutdownReason>(4, [ShutdownReason.STOP, ShutdownReason.RESTART, ShutdownReason.FAILURE])],
      pad32,
    ]),
    transports: both,
  },
  [Event.PEER_CLOSED]: {
    id: Event.PEER_CLOSED,
    name: 'PEER_CLOSED',
    body: struct<PeerClosedEvent>('PeerClosedEvent')([['handle', u32], pad32]),
    transports: seqpacketOnly,
  },
  [Event.POOL_ADDED]: {
    id: Event.POOL_ADDED,
    name: 'POOL_ADDED',
    body: struct<PoolAddedEvent>('PoolAddedEvent')([
      ['pool', u32],
      ['peerId', u32],
      ['vectors', u32],
      pad32,
      ['size', u64],
      ['socket', fixedString(POOL_SOCKET_NAME_SIZE)],
    ]),
    transports: streamOnly,
  },
};

// ---- lookups

const commandById = new Map<number, CommandSpec<CommandId>>(Object.values(COMMANDS).map((spec: CommandSpec<CommandId>) => [spec.id, spec]));
const eventById = new Map<number, EventSpec<EventId>>(Object.values(EVENTS).map((spec: EventSpec<EventId>) => [spec.id, spec]));

export function commandSpec(id: number): CommandSpec<CommandId> | undefined {
  return commandById.get(id);
}

export function eventSpec(id: number): EventSpec<EventId> | undefined {
  return eventById.get(id);
}

export function isCommandId(id: number): id is CommandId {
  return commandById.has(id);
}

export function isEventId(id: number): id is EventId {
  return eventById.has(id);
}

/** `'VCHAN_CLIENT_INIT'`, `'EVENT_SHUTDOWN'`, or `'0x1234'` for an unknown id (for logs). */
export function messageName(id: number): string {
  const c = commandById.get(id);
  if (c) return c.name;
  const e = eventById.get(id);
  if (e) return `EVENT_${e.name}`;
  return `0x${id.toString(16).padStart(4, '0')}`;
}

// The invariants the spec states about the table (§3.2, §6), checked once at load so an edit that
// breaks them fails every test at once.
for (const spec of commandById.values()) {
  if (spec.requestFds > MAX_FDS || spec.replyFds > MAX_FDS) throw new Error(`${spec.name}: more than MAX_FDS fds`);
  if ((spec.requestFds > 0 || spec.replyFds > 0) && spec.transports.includes('stream')) {
    throw new Error(`${spec.name}: carries fds but is allowed on the stream transport`);
  }
  if (spec.request.hasArray || spec.request.fixedSize > MAX_PAYLOAD) throw new Error(`${spec.name}: request not fixed-size`);
  if (REPLY_HEADER_SIZE + spec.reply.fixedSize > MAX_PAYLOAD) throw new Error(`${spec.name}: reply larger than MAX_PAYLOAD`);
  if ((spec.id & EVENT_BIT) !== 0) throw new Error(`${spec.name}: command id in the event range`);
}
for (const spec of eventById.values()) {
  if ((spec.id & EVENT_BIT) === 0 || spec.body.hasArray) throw new Error(`EVENT_${spec.name}: bad event entry`);
}
