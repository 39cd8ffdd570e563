/**
 * ivshmem-doorbell server for one device (docs/ivshmem.md). QEMU's `ivshmem-doorbell`
 * connects to it through a socket chardev; so do simulated guests (src/ivshmem/socket-device.ts).
 *
 * One IvshmemServer = one shared-memory object + one peer table + one or more listening UNIX
 * stream sockets that belong to this device only, so the socket a connection arrived on
 * identifies the device and, with addSocket(), the peer (architecture.md rule 4; docs/ivshmem.md §2).
 *
 * The protocol is server → client only (docs/ivshmem.md §1): on accept, without waiting,
 *   0 | own id | -1 + shm fd | for each existing peer P, ascending: P × vectors, one eventfd
 *   each | own id × vectors, one eventfd each
 * and to every other client: new id × vectors (join); later, id without fd (leave).
 * Every message goes out with its own sendmsg so each fd is tied to its 8 bytes. Sockets are
 * non-blocking; what the kernel does not take (QEMU reads nothing before device_add, and a
 * stream socket buffer holds only ~200 fd-carrying messages) waits in a per-client queue
 * flushed when the socket becomes writable.
 *
 * Everything that could make QEMU refuse the device or abort (docs/ivshmem.md §3-4) is
 * checked in the constructor, before a socket exists.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import type { Logger } from 'pino';
import { InvalidArgumentError, KvmchanError, fromSystemError } from '../errors.js';
import { native, READABLE, WRITABLE, DISCONNECT, EFD_NONBLOCK, type Poller, type PeerCred } from '../native.js';
import { HostDevice, type HostDeviceServer } from './host-device.js';
import { isEventfd } from './fd-check.js';
import {
  MAX_PEER_ID,
  MAX_VECTORS,
  MESSAGE_SIZE,
  PROTOCOL_VERSION,
  SHM_MESSAGE,
  checkPeerId,
  checkShmSize,
  checkVectors,
  encodeMessage,
} from './protocol.js';

/** The id the host daemon takes on every device it serves. */
export const HOST_PEER_ID = 0;
export const DEFAULT_MAX_CLIENTS = 8;
/** Hard cap: each client holds `vectors` eventfds of ours and a queue. */
export const MAX_CLIENTS = 1024;
const LISTEN_BACKLOG = 16;
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

export interface AuthorizeInfo {
  /** SO_PEERCRED of the connecting process (null if the kernel would not say). */
  cred: PeerCred | null;
  socketPath: string;
  peerId: number;
}

export interface IvshmemServerOptions {
  /** The device's primary listening socket; connections on it get the lowest free id. */
  socketPath: string;
  /** Shared memory (normally a sealed memfd). Duplicated: the caller keeps its own fd. */
  shmFd: number;
  /** When given, must equal the fd's size (a cross-check against the allocator). */
  shmSize?: number;
  /** Interrupt vectors (eventfds) per peer, 1..MAX_VECTORS. QEMU's device `vectors`
   *  property should be the same number (more fds than that are refused by QEMU). */
  vectors: number;
  /** Reserve HOST_PEER_ID for an in-process peer (`device.host`). Default true. */
  hostPeer?: boolean;
  /** Lowest id handed to socket clients on the primary socket. Default 1 with a host peer, else 0. */
  firstPeerId?: number;
  /** Socket clients at once (QEMUs and simulated guests). Default DEFAULT_MAX_CLIENTS. */
  maxClients?: number;
  /** chmod of the socket paths. Default 0o600. */
  socketMode?: number;
  /** Replace a socket file nobody listens on any more (a crashed daemon's). Default true. */
  unlinkStale?: boolean;
  /** Admission check on SO_PEERCRED; return false or a reason string to refuse. */
  authorize?: (info: AuthorizeInfo) => boolean | string;
  /** Queue entries per client before it is considered stuck and dropped. */
  maxQueuedMessages?: number;
  /**
   * The host peer's eventfds (index = vector) instead of fresh ones, taken over by the server:
   * a device rebuilt from a restarted daemon's stored fds (docs/ivshmem.md §10), whose QEMU still
   * holds these as the host's vectors.
   */
  hostEventfds?: readonly number[];
  log?: Logger;
}

/**
 * socket: connected through a listening socket (QEMU, a simulated guest); local: in-process;
 * adopted: a QEMU that connected to an earlier daemon, whose eventfds were handed back to us
 * (adoptPeer) — it has no connection, so only the VMM can tell when it goes.
 */
export type PeerKind = 'socket' | 'local' | 'adopted';

export interface PeerInfo {
  readonly id: number;
  readonly kind: PeerKind;
  readonly cred: PeerCred | null;
  /** The listening socket it came in on (socket peers). */
  readonly socketPath: string | null;
}

export interface IvshmemServerEvents {
  'peer-join': [peer: PeerInfo];
  'peer-leave': [peer: PeerInfo, reason: string];
  /** A connection refused before anything was sent (limits, authorize, fixed id taken). */
  'client-rejected': [info: { cred: PeerCred | null; socketPath: string; reason: string }];
  /** A client sent bytes or fds (QEMU never does); it has been disconnected. */
  'protocol-violation': [peer: PeerInfo, detail: string];
}

interface OutMessage {
  buf: Buffer;
  /** Bytes of buf already sent (a stream socket may take part of a message). */
  sent: number;
  /** Server-owned fd to attach, or -1. Valid until the message is sent or purged. */
  fd: number;
  /** Peer whose join this message is part of (purged if that peer leaves first), or -1. */
  joinOf: number;
}

interface Client {
  fd: number;
  poller: Poller;
  queue: OutMessage[];
  head: number;
  writableArmed: boolean;
  /** Peers of which at least one join message reached the socket (they need a leave). */
  announced: Set<number>;
  dead: boolean;
  peer: Peer | null;
}

interface Peer {
  info: PeerInfo;
  /** Owned by the server; index = vector. */
  eventfds: number[];
  client: Client | null;
  local: HostDevice | null;
}

interface Listener {
  socketPath: string;
  fd: number;
  poller: Poller;
  /** Fixed peer id for every connection on this socket, or null = allocate. */
  fixedId: number | null;
  dev: number;
  ino: number;
}

function errnoCode(err: unknown): string | undefined {
  return (err as { code?: string } | null)?.code;
}

export class IvshmemServer extends EventEmitter<IvshmemServerEvents> {
  readonly socketPath: string;
  readonly shmSize: number;
  readonly vectors: number;
  readonly maxClients: number;
  readonly firstPeerId: number;

  readonly #shmFd: number;
  readonly #socketMode: number;
  readonly #unlinkStale: boolean;
  readonly #authorize: ((info: AuthorizeInfo) => boolean | string) | undefined;
  readonly #maxQueued: number;
  readonly #log: Logger | undefined;
  readonly #peers = new Map<number, Peer>();
  readonly #listeners: Listener[] = [];
  readonly #reserved = new Set<number>();
  #host: HostDevice | null = null;
  #clients = 0;
  #closed = false;
  #refed = true;

  constructor(opts: IvshmemServerOptions) {
    super();
    // Validate everything before any fd is created or anything can reach a client.
    IvshmemServer.#checkSocketPath(opts.socketPath);
    checkVectors(opts.vectors, MAX_VECTORS);
    if (!Number.isInteger(opts.shmFd) || opts.shmFd < 0) {
      throw new InvalidArgumentError(`ivshmem: shmFd must be a valid file descriptor, got ${opts.shmFd}`);
    }
    let st: fs.Stats;
    try {
      st = fs.fstatSync(opts.shmFd);
    } catch (err) {
      throw fromSystemError(err, `ivshmem: shmFd ${opts.shmFd} is not usable`);
    }
    if (!st.isFile()) {
      throw new InvalidArgumentError(`ivshmem: shmFd ${opts.shmFd} is not a memfd or regular file`);
    }
    checkShmSize(st.size);
    if (opts.shmSize !== undefined && opts.shmSize !== st.size) {
      throw new InvalidArgumentError(`ivshmem: shmSize ${opts.shmSize} does not match the fd's size ${st.size}`);
    }
    const hostPeer = opts.hostPeer ?? true;
    const firstPeerId = opts.firstPeerId ?? (hostPeer ? HOST_PEER_ID + 1 : 0);
    checkPeerId(firstPeerId, 'firstPeerId');
    if (hostPeer && firstPeerId === HOST_PEER_ID) {
      throw new InvalidArgumentError('ivshmem: firstPeerId collides with the host peer id 0');
    }
    const maxClients = opts.maxClients ?? DEFAULT_MAX_CLIENTS;
    if (!Number.isInteger(maxClients) || maxClients < 1 || maxClients > MAX_CLIENTS) {
      throw new InvalidArgumentError(`ivshmem: maxClients must be in [1, ${MAX_CLIENTS}], got ${maxClients}`);
    }
    const socketMode = opts.socketMode ?? 0o600;
    if (!Number.isInteger(socketMode) || socketMode < 0 || socketMode > 0o777) {
      throw new InvalidArgumentError(`ivshmem: socketMode ${socketMode} invalid`);
    }
    this.socketPath = opts.socketPath;
    this.shmSize = st.size;
    this.vectors = opts.vectors;
    this.maxClients = maxClients;
    this.firstPeerId = firstPeerId;
    this.#socketMode = socketMode;
    this.#unlinkStale = opts.unlinkStale ?? true;
    this.#authorize = opts.authorize;
    // Initial sequence for a client: 3 + (peers + 1) × vectors; leave room for churn.
    this.#maxQueued = opts.maxQueuedMessages ?? 16 + (maxClients + 2) * opts.vectors * 4;
    this.#log = opts.log?.child({ component: 'ivshmem', socket: opts.socketPath });
    if (opts.hostEventfds !== undefined) {
      if (!hostPeer) throw new InvalidArgumentError('ivshmem: hostEventfds without a host peer');
      IvshmemServer.#checkEventfds(opts.hostEventfds, opts.vectors, 'hostEventfds');
    }
    this.#shmFd = native.dup(opts.shmFd);
    if (hostPeer) {
      try {
        this.#host = this.addLocalPeer(HOST_PEER_ID, opts.hostEventfds);
      } catch (err) {
        native.close(this.#shmFd);
        throw err;
      }
    }
  }

  static #checkEventfds(fds: readonly number[], vectors: number, what: string): void {
    if (fds.length !== vectors)
      throw new InvalidArgumentError(`ivshmem: ${what} has ${fds.length} eventfds, the device ${vectors} vectors`);
    for (const fd of fds) {
      if (!Number.isInteger(fd) || fd < 0 || !isEventfd(fd)) throw new InvalidArgumentError(`ivshmem: ${what}: fd ${fd} is not an eventfd`);
    }
  }

  /** The device's shared memory (owned by the server: do not close; dup it to keep it). */
  get shmFd(): number {
    this.#checkOpen();
    return this.#shmFd;
  }

  /** Peer `id`'s eventfds, index = vector (owned by the server), or undefined. */
  peerEventfds(id: number): readonly number[] | undefined {
    return this.#peers.get(id)?.eventfds;
  }

  /**
   * Enter a peer that connected to an earlier daemon and is still attached (QEMU keeps the fds
   * it was sent): `eventfds` are its vectors, taken over by the server. It may be on a fixed
   * socket's id (that socket then refuses connections while it is there). Announced like a join.
   */
  adoptPeer(id: number, eventfds: readonly number[]): PeerInfo {
    this.#checkOpen();
    checkPeerId(id);
    if (this.#peers.has(id)) throw new InvalidArgumentError(`ivshmem: peer id ${id} is in use`);
    IvshmemServer.#checkEventfds(eventfds, this.vectors, `peer ${id}`);
    const peer: Peer = { info: { id, kind: 'adopted', cred: null, socketPath: null }, eventfds: [...eventfds], client: null, local: null };
    this.#join(peer);
    return peer.info;
  }

  /** The in-process host peer (id 0), when `hostPeer` is on. */
  get host(): HostDevice | null {
    return this.#host;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Socket clients currently connected. */
  get clientCount(): number {
    return this.#clients;
  }

  /** Start accepting on the primary socket. */
  listen(): this {
    this.#openListener(this.socketPath, null);
    return this;
  }

  /**
   * An extra listening socket whose connection always gets `peerId` (one at a time). For
   * a device shared by two VMs, each VM's QEMU gets its own path, so its id — and which VM
   * it is — comes from the path it was configured with, not from connection order.
   */
  addSocket(socketPath: string, peerId: number): this {
    IvshmemServer.#checkSocketPath(socketPath);
    checkPeerId(peerId);
    if (this.#reserved.has(peerId) || this.#peers.has(peerId)) {
      throw new InvalidArgumentError(`ivshmem: peer id ${peerId} is already reserved`);
    }
    this.#openListener(socketPath, peerId);
    this.#reserved.add(peerId);
    return this;
  }

  /** Add an in-process peer (the host peer is one). Announced to every socket client. */
  addLocalPeer(id?: number, adoptedEventfds?: readonly number[]): HostDevice {
    this.#checkOpen();
    const peerId = id ?? this.#allocateId(0);
    if (peerId === null) throw new KvmchanError('ivshmem: no free peer id', 'KVMCHAN_E_IVSHMEM_FULL');
    checkPeerId(peerId);
    if (this.#reserved.has(peerId)) throw new InvalidArgumentError(`ivshmem: peer id ${peerId} is reserved for a socket`);
    if (this.#peers.has(peerId)) throw new InvalidArgumentError(`ivshmem: peer id ${peerId} is in use`);
    const eventfds = adoptedEventfds !== undefined ? [...adoptedEventfds] : this.#createEventfds();
    const local = new HostDevice(this.#localHost, peerId, eventfds, { fd: this.#shmFd, size: this.shmSize });
    const peer: Peer = { info: { id: peerId, kind: 'local', cred: null, socketPath: null }, eventfds, client: null, local };
    this.#join(peer);
    return local;
  }

  /** All peers, ascending by id. */
  peers(): PeerInfo[] {
    return [...this.#peers.values()].map((p) => p.info).sort((a, b) => a.id - b.id);
  }

  /** Disconnect a socket client (e.g. its VM is gone) or remove a local peer. */
  disconnect(id: number, reason = 'disconnected by server'): boolean {
    const peer = this.#peers.get(id);
    if (peer === undefined) return false;
    if (peer.client !== null) this.#drop(peer.client, reason);
    else if (peer.local !== null) peer.local.close();
    else this.#leave(peer, reason);
    return true;
  }

  /** Keep (default) or stop keeping the Node process alive while listening. */
  ref(): this {
    this.#refed = true;
    for (const p of this.#listeners) p.poller.ref();
    for (const peer of this.#peers.values()) peer.client?.poller.ref();
    return this;
  }

  unref(): this {
    this.#refed = false;
    for (const p of this.#listeners) p.poller.unref();
    for (const peer of this.#peers.values()) peer.client?.poller.unref();
    return this;
  }

  /** Stop listening (socket files removed), disconnect everyone, release every fd. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const listener of this.#listeners) this.#closeListener(listener);
    this.#listeners.length = 0;
    for (const peer of [...this.#peers.values()]) {
      if (peer.client !== null) this.#drop(peer.client, 'server closing');
    }
    for (const peer of [...this.#peers.values()]) {
      this.#peers.delete(peer.info.id);
      for (const fd of peer.eventfds) native.close(fd);
      peer.local?.detach(null);
    }
    this.#host = null;
    native.close(this.#shmFd);
    this.#log?.info('ivshmem device closed');
  }

  // --- listening -------------------------------------------------------------------------

  static #checkSocketPath(socketPath: string): void {
    if (typeof socketPath !== 'string' || socketPath.length === 0 || socketPath.includes('\0')) {
      throw new InvalidArgumentError('ivshmem: socketPath must be a non-empty path');
    }
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
      throw new InvalidArgumentError(`ivshmem: socketPath longer than ${MAX_SOCKET_PATH_BYTES} bytes: ${socketPath}`);
    }
  }

  #openListener(socketPath: string, fixedId: number | null): void {
    this.#checkOpen();
    if (this.#listeners.some((p) => p.socketPath === socketPath)) {
      throw new InvalidArgumentError(`ivshmem: already listening on ${socketPath}`);
    }
    const fd = this.#bind(socketPath);
    let listener: Listener;
    try {
      const st = fs.statSync(socketPath);
      const poller = new native.Poller(fd, (err) => {
        this.#onAcceptable(listener, err);
      });
      listener = { socketPath, fd, poller, fixedId, dev: st.dev, ino: st.ino };
      poller.start(READABLE);
      if (!this.#refed) poller.unref();
    } catch (err) {
      native.close(fd);
      fs.rmSync(socketPath, { force: true });
      throw fromSystemError(err, `ivshmem: cannot watch ${socketPath}`);
    }
    this.#listeners.push(listener);
    this.#log?.info({ path: socketPath, fixedId, shmSize: this.shmSize, vectors: this.vectors }, 'ivshmem listening');
  }

  #bind(socketPath: string): number {
    try {
      return native.listenUnix(socketPath, 'stream', LISTEN_BACKLOG, this.#socketMode);
    } catch (err) {
      if (errnoCode(err) !== 'EADDRINUSE' || !this.#unlinkStale) {
        throw fromSystemError(err, `ivshmem: cannot listen on ${socketPath}`);
      }
    }
    // The path exists. Replace it only if it is a socket nobody accepts on (docs/ivshmem.md §5:
    // stale runtime files from a crashed daemon do not block a restart).
    const st = fs.lstatSync(socketPath, { throwIfNoEntry: false });
    if (st !== undefined && !st.isSocket()) {
      throw new KvmchanError(`ivshmem: ${socketPath} exists and is not a socket`, 'KVMCHAN_E_IVSHMEM_PATH');
    }
    let probe: number | null = null;
    try {
      probe = native.connectUnix(socketPath, 'stream');
    } catch (err) {
      if (errnoCode(err) !== 'ECONNREFUSED' && errnoCode(err) !== 'ENOENT') {
        throw fromSystemError(err, `ivshmem: cannot probe ${socketPath}`);
      }
    }
    if (probe !== null) {
      native.close(probe);
      throw new KvmchanError(`ivshmem: ${socketPath} is in use by a live server`, 'KVMCHAN_E_IVSHMEM_PATH');
    }
    this.#log?.warn({ path: socketPath }, 'replacing stale ivshmem socket');
    fs.rmSync(socketPath, { force: true });
    try {
      return native.listenUnix(socketPath, 'stream', LISTEN_BACKLOG, this.#socketMode);
    } catch (err) {
      throw fromSystemError(err, `ivshmem: cannot listen on ${socketPath}`);
    }
  }

  #closeListener(listener: Listener): void {
    listener.poller.close();
    native.close(listener.fd);
    // Remove the path only if it is still ours (someone may have replaced it).
    const st = fs.lstatSync(listener.socketPath, { throwIfNoEntry: false });
    if (st !== undefined && st.dev === listener.dev && st.ino === listener.ino) fs.rmSync(listener.socketPath, { force: true });
  }

  #onAcceptable(listener: Listener, err: Error | null): void {
    if (this.#closed) return;
    if (err !== null) {
      this.#log?.error({ err }, 'ivshmem listening socket poll error');
      return;
    }
    while (!this.#closed) {
      let fd: number | null;
      try {
        fd = native.accept(listener.fd);
      } catch (e) {
        // EMFILE/ENFILE: the connection stays queued and the (level-triggered) poll would
        // fire again at once; back off instead of spinning.
        this.#log?.error({ err: e }, 'ivshmem accept failed; retrying in 100 ms');
        listener.poller.stop();
        setTimeout(() => {
          if (!this.#closed) listener.poller.start(READABLE);
        }, 100).unref();
        return;
      }
      if (fd === null) return;
      this.#admit(listener, fd);
    }
  }

  #reject(listener: Listener, fd: number, cred: PeerCred | null, reason: string): void {
    native.close(fd);
    this.#log?.warn({ cred, reason }, 'ivshmem client rejected');
    this.emit('client-rejected', { cred, socketPath: listener.socketPath, reason });
  }

  #admit(listener: Listener, fd: number): void {
    const t0 = process.hrtime.bigint();
    let cred: PeerCred | null;
    try {
      cred = native.peerCred(fd);
    } catch {
      cred = null;
    }
    if (this.#clients >= this.maxClients) {
      this.#reject(listener, fd, cred, `client limit ${this.maxClients} reached`);
      return;
    }
    let id: number | null;
    if (listener.fixedId !== null) {
      id = listener.fixedId;
      if (this.#peers.has(id)) {
        this.#reject(listener, fd, cred, `peer id ${id} is already connected`);
        return;
      }
    } else {
      id = this.#allocateId(this.firstPeerId);
      if (id === null) {
        this.#reject(listener, fd, cred, 'no free peer id');
        return;
      }
    }
    if (this.#authorize !== undefined) {
      let verdict: boolean | string;
      try {
        verdict = this.#authorize({ cred, socketPath: listener.socketPath, peerId: id });
      } catch (e) {
        verdict = `authorize threw: ${String(e)}`;
      }
      if (verdict !== true) {
        this.#reject(listener, fd, cred, typeof verdict === 'string' ? verdict : 'not authorized');
        return;
      }
    }
    let eventfds: number[];
    let poller: Poller;
    try {
      eventfds = this.#createEventfds();
    } catch (e) {
      this.#reject(listener, fd, cred, `cannot create eventfds: ${String(e)}`);
      return;
    }
    const client: Client = {
      fd,
      poller: undefined as unknown as Poller,
      queue: [],
      head: 0,
      writableArmed: false,
      announced: new Set(),
      dead: false,
      peer: null,
    };
    try {
      poller = new native.Poller(fd, (err, events) => {
        this.#onClientEvent(client, err, events);
      });
    } catch (e) {
      for (const efd of eventfds) native.close(efd);
      this.#reject(listener, fd, cred, `cannot watch connection: ${String(e)}`);
      return;
    }
    client.poller = poller;
    poller.start(READABLE | DISCONNECT);
    if (!this.#refed) poller.unref();
    const peer: Peer = { info: { id, kind: 'socket', cred, socketPath: listener.socketPath }, eventfds, client, local: null };
    client.peer = peer;
    this.#clients++;

    // docs/ivshmem.md §1: the whole sequence, all queued now: QEMU reads them at device_add.
    this.#queue(client, PROTOCOL_VERSION, -1, -1);
    this.#queue(client, id, -1, -1);
    this.#queue(client, SHM_MESSAGE, this.#shmFd, -1);
    for (const other of this.#sortedPeers()) {
      for (const efd of other.eventfds) this.#queue(client, other.info.id, efd, other.info.id);
    }
    for (const efd of eventfds) this.#queue(client, id, efd, id);
    this.#join(peer);
    this.#flush(client);
    const micros = Number(process.hrtime.bigint() - t0) / 1000;
    this.#log?.info(
      { peerId: id, peerPid: cred?.pid, uid: cred?.uid, queued: client.queue.length - client.head, micros },
      'ivshmem peer connected',
    );
  }

  // --- peers -----------------------------------------------------------------------------

  /** Lowest id ≥ from that is neither in use nor reserved for a fixed socket. */
  #allocateId(from: number): number | null {
    for (let id = from; id <= MAX_PEER_ID; id++) {
      if (!this.#peers.has(id) && !this.#reserved.has(id)) return id;
    }
    return null;
  }

  #createEventfds(): number[] {
    const fds: number[] = [];
    try {
      for (let v = 0; v < this.vectors; v++) fds.push(native.eventfd(0, EFD_NONBLOCK));
    } catch (err) {
      for (const fd of fds) native.close(fd);
      throw fromSystemError(err, 'ivshmem: eventfd');
    }
    return fds;
  }

  #sortedPeers(): Peer[] {
    return [...this.#peers.values()].sort((a, b) => a.info.id - b.info.id);
  }

  /** Enter `peer` into the table and announce it to everybody else. */
  #join(peer: Peer): void {
    const id = peer.info.id;
    this.#peers.set(id, peer);
    for (const other of this.#sortedPeers()) {
      if (other === peer) continue;
      if (other.client !== null && !other.client.dead) {
        for (const efd of peer.eventfds) this.#queue(other.client, id, efd, id);
        this.#flush(other.client);
      }
      other.local?.notifyJoin(id);
    }
    this.emit('peer-join', peer.info);
  }

  /** Remove `peer` from the table, tell everybody else, close its eventfds. */
  #leave(peer: Peer, reason: string): void {
    const id = peer.info.id;
    if (this.#peers.get(id) !== peer) return;
    this.#peers.delete(id);
    for (const other of this.#sortedPeers()) {
      const c = other.client;
      if (c !== null && !c.dead) {
        // Join messages still queued would carry fds we are about to close: drop them; a
        // message whose first bytes already went out stays (its fd went with them).
        const pending = c.queue.slice(c.head).filter((m) => m.joinOf !== id || m.sent > 0);
        c.queue = pending;
        c.head = 0;
        if (c.announced.delete(id)) {
          this.#queue(c, id, -1, -1);
          this.#flush(c);
        }
      }
      other.local?.notifyLeave(id);
    }
    for (const fd of peer.eventfds) native.close(fd);
    peer.eventfds = [];
    this.emit('peer-leave', peer.info, reason);
  }

  readonly #localHost: HostDeviceServer = {
    peerEventfds: (id) => this.#peers.get(id)?.eventfds,
    peerIds: (self) => [...this.#peers.keys()].filter((id) => id !== self).sort((a, b) => a - b),
    removeLocalPeer: (id) => {
      const peer = this.#peers.get(id);
      if (peer?.local == null) return;
      this.#leave(peer, 'local peer closed');
      if (peer.local === this.#host) this.#host = null;
      peer.local.detach(null);
    },
  };

  // --- sending ---------------------------------------------------------------------------

  #queue(c: Client, value: number, fd: number, joinOf: number): void {
    c.queue.push({ buf: encodeMessage(value), sent: 0, fd, joinOf });
    if (c.queue.length - c.head > this.#maxQueued) {
      this.#fail(c, `client not reading: more than ${this.#maxQueued} messages queued`);
    }
  }

  #flush(c: Client): void {
    if (c.dead) return;
    while (c.head < c.queue.length) {
      const m = c.queue[c.head]!;
      let n: number;
      try {
        n = m.sent === 0 ? native.sendmsg(c.fd, m.buf, m.fd >= 0 ? [m.fd] : []) : native.sendmsg(c.fd, m.buf.subarray(m.sent), []);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'EINTR') continue;
        if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
          this.#armWritable(c, true);
          return;
        }
        this.#fail(c, `send failed: ${code ?? String(err)}`);
        return;
      }
      if (n > 0 && m.joinOf >= 0) c.announced.add(m.joinOf);
      m.sent += n;
      if (m.sent >= MESSAGE_SIZE) c.head++;
    }
    c.queue = [];
    c.head = 0;
    this.#armWritable(c, false);
  }

  #armWritable(c: Client, on: boolean): void {
    if (c.writableArmed === on || c.dead) return;
    c.writableArmed = on;
    c.poller.start(on ? READABLE | DISCONNECT | WRITABLE : READABLE | DISCONNECT);
  }

  /** Drop a client later: called while iterating the peer table. */
  #fail(c: Client, reason: string): void {
    if (c.dead) return;
    c.queue = [];
    c.head = 0;
    queueMicrotask(() => {
      this.#drop(c, reason);
    });
    // Stop sending immediately; #drop does the rest.
    c.dead = true;
  }

  #onClientEvent(c: Client, err: Error | null, events: number): void {
    if (c.dead) return;
    if (err !== null) {
      this.#drop(c, `poll error: ${err.message}`);
      return;
    }
    if ((events & (READABLE | DISCONNECT)) !== 0) {
      let r;
      try {
        r = native.recvmsg(c.fd, 64, 4);
      } catch (e) {
        this.#drop(c, `connection error: ${errnoCode(e) ?? String(e)}`);
        return;
      }
      if (r !== null) {
        for (const fd of r.fds) native.close(fd);
        if (r.eof || (r.data.length === 0 && r.fds.length === 0)) {
          this.#drop(c, 'peer closed the connection');
          return;
        }
        // docs/ivshmem.md §1: clients never send. Whatever this is, it is not QEMU.
        const detail = `sent ${r.data.length} bytes${r.fds.length > 0 ? ` and ${r.fds.length} fds` : ''}`;
        this.#log?.warn({ peerId: c.peer?.info.id, cred: c.peer?.info.cred, detail }, 'ivshmem client misbehaved; disconnecting');
        if (c.peer !== null) this.emit('protocol-violation', c.peer.info, detail);
        this.#drop(c, `protocol violation: ${detail}`);
        return;
      }
    }
    if ((events & WRITABLE) !== 0) this.#flush(c);
  }

  #drop(c: Client, reason: string): void {
    const wasDead = c.dead;
    c.dead = true;
    if (c.fd < 0) return;
    c.poller.close();
    native.close(c.fd);
    c.fd = -1;
    c.queue = [];
    c.head = 0;
    this.#clients--;
    const peer = c.peer;
    if (peer !== null) {
      this.#log?.info({ peerId: peer.info.id, reason, wasDead }, 'ivshmem peer disconnected');
      this.#leave(peer, reason);
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new KvmchanError('ivshmem device is closed', 'KVMCHAN_E_CLOSED');
  }
}
